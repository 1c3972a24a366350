"""The queue and its claims: how a scheduler takes a job, parks it, or lets it go.

A queued job has exactly one index entry: /queue/... while PENDING, /parked/... while
PARKED (docs/architecture.md, "Key schema"). A scheduler claims a job by writing
/claims/<job> bound to its lease, in a txn that compares the claim absent and the
index entry unchanged; the same txn reads the job record. The claim key's
mod_revision is the claim's fence: every commit and every claim delete compares it,
so only the holder can commit for the job or release it.

Reads stay bounded as the queue grows: a claim step reads pages of the index from
its head and stops as soon as its batch is full, so its cost is O(batch + jobs other
schedulers hold), never O(queue).

Each claim also counts itself in the index entry (`claims`); a commit that binds tasks
resets the count. A job whose entry shows `crash_limit` claims without progress has
crashed (or hung) that many schedulers: it is parked for good, with that reason,
instead of being handed to the next one.
"""

from __future__ import annotations

from collections.abc import Container, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass

from . import codec
from .keys import CellKeys
from .model import JobClass, JobStatus
from .resources import ZERO, Vector
from .store import CellStore, Delete, Get, KeyValue, ModRevisionIs, Put
from .views import JobView, complete_views

CLAIM_PAGE = 256  # index entries read per page
MAX_CLAIM_PAGES = 16  # a claim step reads at most this many pages
DEFAULT_CRASH_LIMIT = 3  # claims without progress before a job is parked for good


@dataclass(frozen=True, slots=True)
class IndexEntry:
    """The value of a /queue/ or /parked/ key."""

    job_id: str
    claims: int = 0  # claims since the job last made progress
    need: Vector | None = None  # parked: the smallest request it lacks; None: no automatic retry
    stuck: bool = False  # parked for good (crashed schedulers); only an operator un-parks it

    def encode(self) -> bytes:
        obj: dict = {"job": self.job_id}
        if self.claims:
            obj["claims"] = self.claims
        if self.need is not None:
            obj["need"] = list(self.need)
        if self.stuck:
            obj["stuck"] = True
        return codec.encode_obj(obj)

    @classmethod
    def decode(cls, kv: KeyValue) -> IndexEntry:
        obj = codec.decode_obj(kv.key, kv.value)
        need = obj.get("need")
        return cls(str(obj["job"]), int(obj.get("claims", 0)), tuple(need) if need is not None else None,
                   bool(obj.get("stuck", False)))


def index_entry_for_new_job(job_id: str) -> bytes:
    return IndexEntry(job_id).encode()


def progress_entry(keys: CellKeys, rec) -> Put:
    """The write that resets a job's claim count after it made progress. A parked job's
    entry gets need ZERO: should its holder die, any freed capacity retries it."""
    if rec.status is JobStatus.PARKED:
        return Put(keys.parked_of(rec), IndexEntry(rec.job.id, 0, ZERO).encode())
    return Put(keys.queue_of(rec), IndexEntry(rec.job.id).encode())


def list_queue(store: CellStore, keys: CellKeys, job_class: JobClass) -> list[str]:
    kvs, _ = store.get_prefix(keys.queue_prefix(job_class))
    return [keys.last_segment(kv.key) for kv in kvs]


def list_parked(store: CellStore, keys: CellKeys, job_class: JobClass) -> list[str]:
    kvs, _ = store.get_prefix(keys.parked_prefix(job_class))
    return [keys.last_segment(kv.key) for kv in kvs]


def adopt_orphans(store: CellStore, keys: CellKeys, lease_id: int, held: Container[str]) -> list[JobView]:
    """Claims bound to `lease_id` that the caller does not know it holds.

    A claim txn whose ack was lost (or a call cut short by an outage) leaves such
    orphans, and nobody else may schedule those jobs while our lease lives.
    """
    claims, _ = store.get_prefix(keys.claims_prefix)
    orphans = [kv for kv in claims if kv.lease == lease_id and keys.last_segment(kv.key) not in held]
    out: list[JobView] = []
    per_txn = max(1, store.limits.max_txn_ops)
    for start in range(0, len(orphans), per_txn):
        part = orphans[start:start + per_txn]
        reads = store.txn([], [Get(keys.job(keys.last_segment(kv.key))) for kv in part]).reads
        for ckv, r in zip(part, reads, strict=True):
            for kv in r:
                out.append(JobView(codec.decode_job(kv.key, kv.value), kv.mod_revision, ckv.mod_revision))
    return complete_views(store, keys, out)


def claim_jobs(store: CellStore, keys: CellKeys, job_class: JobClass, lease_id: int, owner: str,
               limit: int, executor: Executor | None = None, in_flight: int = 1,
               held: Container[str] = frozenset(), crash_limit: int = DEFAULT_CRASH_LIMIT,
               adopt: bool = True) -> list[JobView]:
    """Claim up to `limit` pending jobs of a class: highest priority first, then first come.

    With `adopt`, orphans of `lease_id` are adopted first (that reads every claim key: the
    scheduler asks only after a claim call of its own was cut short). With an `executor`,
    up to `in_flight` claim txns (disjoint sets of jobs) are sent at once.
    """
    out = adopt_orphans(store, keys, lease_id, held) if adopt else []
    after = ""
    for _ in range(MAX_CLAIM_PAGES):
        if len(out) >= limit:
            break
        page = store.get_page(keys.queue_prefix(job_class), CLAIM_PAGE, after)
        if not page:
            break
        after = page[-1].key
        candidates = [kv for kv in page if keys.last_segment(kv.key) not in held]
        out += claim_entries(store, keys, candidates, lease_id, owner, limit - len(out), executor, in_flight,
                             crash_limit)
        if len(page) < CLAIM_PAGE:
            break
    return out


def claim_entries(store: CellStore, keys: CellKeys, entries: Sequence[KeyValue], lease_id: int, owner: str,
                  limit: int, executor: Executor | None = None, in_flight: int = 1,
                  crash_limit: int = DEFAULT_CRASH_LIMIT) -> list[JobView]:
    """Claim the jobs of these index entries (queue or parked), up to `limit`.

    An entry claimed by someone else, or changed meanwhile, is skipped. A job that has
    used up its crash limit is parked for good here instead of being returned.
    """
    claim_value = codec.encode_obj({"owner": owner})
    per_txn = max(1, store.limits.max_txn_ops // 3)  # success: claim put, entry put, job read

    def send(batch: list[KeyValue]):
        compares, success, failure = [], [], []
        for qkv in batch:
            jid = keys.last_segment(qkv.key)
            entry = IndexEntry.decode(qkv)
            bumped = IndexEntry(entry.job_id, entry.claims + 1, entry.need, entry.stuck)
            compares += [ModRevisionIs(keys.claim(jid), 0), ModRevisionIs(qkv.key, qkv.mod_revision)]
            success += [Put(keys.claim(jid), claim_value, lease_id), Put(qkv.key, bumped.encode()),
                        Get(keys.job(jid))]
            failure += [Get(keys.claim(jid)), Get(qkv.key)]
        return store.txn(compares, success, failure)

    out: list[JobView] = []
    todo = [kv for kv in entries if not IndexEntry.decode(kv).stuck]
    wave_size = in_flight if executor is not None else 1
    while todo and len(out) < limit:
        wave, room = [], limit - len(out)
        while todo and room > 0 and len(wave) < wave_size:
            batch = todo[:min(per_txn, room)]
            todo = todo[len(batch):]
            room -= len(batch)
            wave.append(batch)
        if len(wave) > 1 and executor is not None:
            results = list(executor.map(send, wave))
        else:
            results = [send(wave[0])]
        for batch, result in zip(wave, results, strict=True):
            if result.succeeded:
                for qkv, r in zip(batch, result.reads, strict=True):
                    for kv in r:
                        view = JobView(codec.decode_job(kv.key, kv.value), kv.mod_revision, result.revision)
                        if IndexEntry.decode(qkv).claims + 1 > crash_limit:
                            park_for_good(store, keys, view, qkv.key, crash_limit)
                        else:
                            out.append(view)
                continue
            # Somebody claimed or changed part of the batch first: retry only entries still as read.
            reads = iter(result.reads)
            for qkv in batch:
                claim_now, entry_now = next(reads), next(reads)
                if not claim_now and entry_now and entry_now[0].mod_revision == qkv.mod_revision:
                    todo.append(qkv)
    return complete_views(store, keys, out)  # a large job's shards: one more read for each


def release_claim(store: CellStore, keys: CellKeys, job_id: str, claim_revision: int) -> bool:
    """Drop our claim on a job, only if it is still ours. Returns whether it was."""
    key = keys.claim(job_id)
    return store.txn([ModRevisionIs(key, claim_revision)], [Delete(key)]).succeeded


def park_job(store: CellStore, keys: CellKeys, view: JobView, reason: str, need: Vector | None,
             refusal: dict | None = None) -> JobView | None:
    """Mark a claimed job as not placeable now, move it to the parked index, drop the claim.

    `need` is the smallest request it lacks: the scheduler retries it only once its copy
    shows that much free somewhere. Fenced: compares the job record and our claim.
    Returns the new view, or None when the job or the claim changed meanwhile.
    """
    rec = view.record.copy()
    was = rec.status
    rec.status, rec.reason, rec.refusal = JobStatus.PARKED, reason, refusal
    jid = rec.job.id
    ops = [Put(keys.job(jid), codec.encode_job(rec)), Delete(keys.claim(jid)),
           Put(keys.parked_of(rec), IndexEntry(jid, 0, need).encode())]
    if was is JobStatus.PENDING:
        ops.append(Delete(keys.queue_of(rec)))
    compares = [ModRevisionIs(keys.job(jid), view.revision), ModRevisionIs(keys.claim(jid), view.claim_revision)]
    result = store.txn(compares, ops)
    return JobView(rec, result.revision) if result.succeeded else None


def park_for_good(store: CellStore, keys: CellKeys, view: JobView, entry_key: str, crash_limit: int) -> bool:
    """Park a job that crashed or hung `crash_limit` schedulers in a row: no automatic retry."""
    rec = view.record.copy()
    was = rec.status
    rec.status = JobStatus.PARKED
    rec.reason = (f"claimed {crash_limit} times without progress: it crashed or hung the schedulers that "
                  f"held it; parked until an operator retries it")
    rec.refusal = {"kind": "crash_limit", "claims": crash_limit}
    jid = rec.job.id
    ops = [Put(keys.job(jid), codec.encode_job(rec)), Delete(keys.claim(jid)),
           Put(keys.parked_of(rec), IndexEntry(jid, crash_limit, None, stuck=True).encode())]
    if was is JobStatus.PENDING:
        ops.append(Delete(entry_key))
    compares = [ModRevisionIs(keys.job(jid), view.revision), ModRevisionIs(keys.claim(jid), view.claim_revision)]
    return store.txn(compares, ops).succeeded
