"""The value of a job's index entry, /queue/... or /parked/... (docs/architecture.md, "Key schema").

Its own module because two others write it: the claims module (each claim bumps the
entry's count and names itself as the holder) and the job state machine (cellstate/job_states.py, which decides which
entry a job has in each status). A queue entry may be a segment: one entry for several jobs of
one submission txn (`jobs`; cellstate/queue_segments.py), keyed by its first job.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from . import codec
from .resources import Vector
from .store import KeyValue

# An entry as encode writes it with no need and not stuck (a job id needs no JSON escape: model.check_id).
# Its holder (a claim id: lease in hex, a dot, a count; or a tool's plain name) is the same alphabet.
_PLAIN = re.compile(rb'\{"v":%d,"job":"([A-Za-z0-9][A-Za-z0-9._:-]{0,127})"(?:,"claims":([1-9][0-9]{0,8}))?'
                    rb'(?:,"holder":"([A-Za-z0-9][A-Za-z0-9._:-]{0,127})")?\}' % codec.FORMAT_VERSION)


@dataclass(frozen=True, slots=True)
class IndexEntry:
    """The value of a /queue/ or /parked/ key."""

    job_id: str
    claims: int = 0  # claims since the job last made progress
    need: Vector | None = None  # parked: the smallest request it lacks; None: no automatic retry
    stuck: bool = False  # parked for good (crashed schedulers); only an operator un-parks it
    # The claim (cellstate/claims.py) that took the job, by its id: it holds the job while
    # /claims/<holder> exists. Empty, or a claim key that is gone: anyone may claim it.
    holder: str = ""
    # A queue segment's jobs, the first of them job_id (the key's job); () for a job's own entry.
    # A listed job waits in the segment only while its record is PENDING and names it
    # (JobRecord.segment): placed, parked or failed jobs stay listed until the segment goes.
    jobs: tuple[str, ...] = ()

    @property
    def members(self) -> tuple[str, ...]:
        """The jobs this entry lists: a segment's, or its own job."""
        return self.jobs or (self.job_id,)

    def encode(self) -> bytes:
        obj: dict = {"job": self.job_id}
        if self.jobs:
            obj["jobs"] = list(self.jobs)
        if self.claims:
            obj["claims"] = self.claims
        if self.need is not None:
            obj["need"] = list(self.need)
        if self.stuck:
            obj["stuck"] = True
        if self.holder:
            obj["holder"] = self.holder
        return codec.encode_obj(obj)

    @classmethod
    def decode(cls, kv: KeyValue) -> IndexEntry:
        plain = _PLAIN.fullmatch(kv.value)  # a claim step decodes hundreds: the common form without a parse
        if plain is not None:
            return cls(plain[1].decode(), int(plain[2] or 0), holder=(plain[3] or b"").decode())
        obj = codec.decode_obj(kv.key, kv.value)
        need = obj.get("need")
        return cls(str(obj["job"]), int(obj.get("claims", 0)), tuple(need) if need is not None else None,
                   bool(obj.get("stuck", False)), str(obj.get("holder", "")), tuple(map(str, obj.get("jobs", ()))))

    def with_claim(self, holder: str, claims: int) -> IndexEntry:
        """The same entry, held by `holder` with `claims` claims since progress."""
        return IndexEntry(self.job_id, claims, self.need, self.stuck, holder, self.jobs)


def listed_count(kv: KeyValue) -> int:
    """How many jobs one index entry lists (a queue segment's, else 1), decoding only a segment."""
    return len(IndexEntry.decode(kv).members) if b'"jobs":' in kv.value else 1


def listed_jobs(kvs) -> int:
    """How many jobs these index entries list (a queue segment lists several: its placed and
    parked jobs too, until it goes; cellstate/queue_segments.py)."""
    return sum(map(listed_count, kvs))


_NEW_ENTRY = b'{"v":%d,"job":"' % codec.FORMAT_VERSION


def index_entry_for_new_job(job_id: str, holder: str = "") -> bytes:
    """IndexEntry(job_id, holder=holder).encode(), the same bytes; without a holder from a
    template (a job id needs no JSON escape: model.check_id), as a bulk writes hundreds."""
    if holder:
        return IndexEntry(job_id, holder=holder).encode()
    return _NEW_ENTRY + job_id.encode() + b'"}'
