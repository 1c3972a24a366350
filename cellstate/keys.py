"""The key schema: the only module that knows how keys are spelled.

    /<cell>/node/spec/<machine>     Machine: capacity, labels, state
    /<cell>/node/alloc/<machine>    AllocationRecord; its mod_revision is the machine's sequence number
    /<cell>/schema                  the key layout's version; a cell in another layout is refused
    /<cell>/jobs/<job>              JobRecord: spec, status, traceparent; bindings inline for small jobs,
                                    counts for large ones
    /<cell>/bind/<job>/<shard>      a large job's bindings, one shard per commit txn (cellstate.shards)
    /<cell>/queue/<class>/<pp>/<seq>/<job>   pending index: pp = 11 - priority, so a range reads
                                    highest priority first, then seq (submission order): first come,
                                    first served within a priority
    /<cell>/parked/<class>/<pp>/<seq>/<job>  parked index: tried, could not be placed; its value holds
                                    the smallest request it lacks, so a scheduler can tell from the
                                    index alone whether freed capacity could help it
    /<cell>/claims/<claim>          one claim txn's claim on the jobs whose index entries name it as
                                    their holder (value: owner and those jobs), bound to the
                                    scheduler's lease; every commit and park for those jobs compares
                                    its mod_revision (the fence)
    /<cell>/live/<machine>          liveness heartbeat, bound to the machine agent's lease
    /<cell>/metrics/<scheduler>     a scheduler's published metrics, bound to its lease: gone with it
    /<cell>/activity/<scheduler>    its recent decisions and busyness over time (the /ui dashboard),
                                    written with its metrics, bound to the same lease
    /<cell>/idem/<digest>           an API submission's Idempotency-Key (hashed with its caller):
                                    the job it made and its body's digest, written in the job's txn
    /<cell>/audit/registry          every audit chain's id (cellstate.audit)
    /<cell>/audit/head/<chain>      a chain's newest sequence number and hash
    /<cell>/audit/rec/<chain>/<seq> one audit record, written in the txn of the mutation it records

spec and alloc share the `/node/` prefix so one consistent range read and one watch
cover everything a scheduler's local copy needs. Liveness keys stay outside `/node/`:
every heartbeat is a write, and under `/node/` each one would wake every scheduler's watch.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .errors import InvalidInputError
from .model import PRIORITY_MAX, JobClass

# A cell name is the first segment of every key: a '/' in it would put one cell's keys
# inside another's root prefix ("/a/" holds "/a/b/jobs/..."), so it is refused.
CELL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}")


@dataclass(frozen=True, slots=True)
class CellKeys:
    cell: str = "cell"

    def __post_init__(self) -> None:
        if not isinstance(self.cell, str) or not CELL_NAME.fullmatch(self.cell):
            raise InvalidInputError(f"cell name {self.cell!r}: expected 1-63 letters, digits, '.', '_' or '-', "
                                    "starting with a letter or digit")

    @property
    def root(self) -> str:
        return f"/{self.cell}/"

    @property
    def node_prefix(self) -> str:
        return f"/{self.cell}/node/"

    @property
    def spec_prefix(self) -> str:
        return f"/{self.cell}/node/spec/"

    @property
    def alloc_prefix(self) -> str:
        return f"/{self.cell}/node/alloc/"

    @property
    def live_prefix(self) -> str:
        return f"/{self.cell}/live/"

    @property
    def jobs_prefix(self) -> str:
        return f"/{self.cell}/jobs/"

    @property
    def claims_prefix(self) -> str:
        return f"/{self.cell}/claims/"

    def queue_prefix(self, job_class: JobClass | None = None) -> str:
        if job_class is None:
            return f"/{self.cell}/queue/"
        return f"/{self.cell}/queue/{job_class.value}/"

    @property
    def metrics_prefix(self) -> str:
        return f"/{self.cell}/metrics/"

    def metrics(self, scheduler: str) -> str:
        if not scheduler or "/" in scheduler:
            raise InvalidInputError(f"scheduler name {scheduler!r}: expected a non-empty name without '/'")
        return self.metrics_prefix + scheduler

    @property
    def activity_prefix(self) -> str:
        return f"/{self.cell}/activity/"

    def activity(self, scheduler: str) -> str:
        return self.activity_prefix + self.last_segment(self.metrics(scheduler))

    def spec(self, machine_id: str) -> str:
        return self.spec_prefix + machine_id

    def alloc(self, machine_id: str) -> str:
        return self.alloc_prefix + machine_id

    def live(self, machine_id: str) -> str:
        return self.live_prefix + machine_id

    def job(self, job_id: str) -> str:
        return self.jobs_prefix + job_id

    @property
    def bind_root(self) -> str:
        return f"/{self.cell}/bind/"

    def bind_prefix(self, job_id: str) -> str:
        return f"/{self.cell}/bind/{job_id}/"

    def bind(self, job_id: str, shard: int) -> str:
        return f"/{self.cell}/bind/{job_id}/{shard:06d}"

    @property
    def schema(self) -> str:
        return f"/{self.cell}/schema"

    @property
    def idempotency_prefix(self) -> str:
        return f"/{self.cell}/idem/"

    def idempotency(self, digest: str) -> str:
        return self.idempotency_prefix + digest

    @property
    def audit_registry(self) -> str:
        return f"/{self.cell}/audit/registry"

    @property
    def audit_head_prefix(self) -> str:
        return f"/{self.cell}/audit/head/"

    @property
    def audit_record_root(self) -> str:
        return f"/{self.cell}/audit/rec/"

    def audit_head(self, chain: str) -> str:
        return self.audit_head_prefix + chain

    def audit_records(self, chain: str) -> str:
        return f"{self.audit_record_root}{chain}/"

    def audit_record(self, chain: str, seq: int) -> str:
        return f"{self.audit_record_root}{chain}/{seq:012d}"

    def claim(self, claim_id: str) -> str:
        """One claim txn's key: it holds every job whose index entry names `claim_id`."""
        return self.claims_prefix + claim_id

    def parked_prefix(self, job_class: JobClass | None = None) -> str:
        if job_class is None:
            return f"/{self.cell}/parked/"
        return f"/{self.cell}/parked/{job_class.value}/"

    def queue(self, job_class: JobClass, priority: int, seq: str, job_id: str) -> str:
        return f"{self.queue_prefix(job_class)}{PRIORITY_MAX - priority:02d}/{seq}/{job_id}"

    def parked(self, job_class: JobClass, priority: int, seq: str, job_id: str) -> str:
        return f"{self.parked_prefix(job_class)}{PRIORITY_MAX - priority:02d}/{seq}/{job_id}"

    def queue_of(self, rec) -> str:
        """The pending-queue key that holds a JobRecord: its queue segment's (JobRecord.segment),
        else its own."""
        return self.queue(rec.job.job_class, rec.job.priority, rec.queue_seq, rec.segment or rec.job.id)

    def own_queue_of(self, rec) -> str:
        """A JobRecord's own pending-queue key (a job out of its segment goes back to the queue there)."""
        return self.queue(rec.job.job_class, rec.job.priority, rec.queue_seq, rec.job.id)

    def parked_of(self, rec) -> str:
        """The parked-index key of a JobRecord."""
        return self.parked(rec.job.job_class, rec.job.priority, rec.queue_seq, rec.job.id)

    @staticmethod
    def last_segment(key: str) -> str:
        return key.rsplit("/", 1)[1]
