"""Durable submission, claiming and parking of jobs (retention: retention.py).

- A job and its queue entry are written in one txn (the bulk form packs many jobs per
  txn); a job id that already exists is refused, never overwritten.
- A scheduler claims a job by writing /claims/<job> bound to its lease; when the
  lease expires the claim key vanishes and the job is claimable again. The job itself
  never leaves the store until it is finished and its retention has passed.
"""

from __future__ import annotations

from collections.abc import Container, Iterable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field

from . import codec
from . import resources as res
from .errors import InvalidJobError, UnplaceableRequestError
from .keys import CellKeys
from .model import Job, JobClass, JobRecord, JobStatus, Machine
from .store import CellStore, Delete, Get, ModRevisionIs, Put
from .views import JobView


@dataclass
class SubmitResult:
    accepted: list[str] = field(default_factory=list)
    rejected: dict[str, str] = field(default_factory=dict)  # job id -> why
    revision: int = 0


def check_placeable(job: Job, machines: Iterable[Machine]) -> None:
    """Refuse a job with a task group that no machine in the cell could ever hold."""
    caps = [m.capacity for m in machines]
    for g in job.groups:
        if not any(res.dominates(c, g.request) for c in caps):
            raise UnplaceableRequestError(
                f"job {job.id}: task group {g.name!r} requests {res.as_dict(g.request)}, "
                f"more than any machine in the cell offers")


def submit_jobs(store: CellStore, keys: CellKeys, jobs: Sequence[Job], now: float) -> SubmitResult:
    """Write each job with its queue entry. Atomic per job; packed many jobs per txn."""
    ids = [j.id for j in jobs]
    if len(set(ids)) != len(ids):
        dup = sorted({i for i in ids if ids.count(i) > 1})
        raise InvalidJobError(f"duplicate job ids in one submission: {dup[:5]}")
    out = SubmitResult()
    per_txn = max(1, store.limits.max_txn_ops // 2)
    for start in range(0, len(jobs), per_txn):
        batch = list(jobs[start:start + per_txn])
        while batch:
            compares = [ModRevisionIs(keys.job(j.id), 0) for j in batch]
            success = []
            for j in batch:
                rec = JobRecord(j, submitted_at=now)
                success += [Put(keys.job(j.id), codec.encode_job(rec)),
                            Put(keys.queue(j.job_class, j.priority, j.id), codec.encode_obj({"job": j.id}))]
            result = store.txn(compares, success, [Get(keys.job(j.id)) for j in batch])
            if result.succeeded:
                out.accepted += [j.id for j in batch]
                out.revision = result.revision
                break
            existing = {keys.last_segment(kv.key) for r in result.reads for kv in r}
            for jid in existing:
                out.rejected[jid] = "a job with this id already exists"
            batch = [j for j in batch if j.id not in existing]
    return out


def list_queue(store: CellStore, keys: CellKeys, job_class: JobClass) -> list[str]:
    kvs, _ = store.get_prefix(keys.queue_prefix(job_class))
    return [keys.last_segment(kv.key) for kv in kvs]


def claim_jobs(store: CellStore, keys: CellKeys, job_class: JobClass, lease_id: int, owner: str,
               limit: int, include_parked: bool = True, executor: Executor | None = None,
               in_flight: int = 1, held: Container[str] = frozenset()) -> list[JobView]:
    """Claim up to `limit` queued jobs of a class, highest priority first.

    One txn per batch: each claim key must be absent and the queue entry present; the
    success branch reads the job records, so the claimer gets them in the same round trip.
    With an `executor`, up to `in_flight` batches (disjoint sets of jobs) are sent at once.

    Claims already bound to `lease_id` but not in `held` are adopted first: a claim txn
    whose ack was lost (or a call cut short by an outage) leaves such orphans, and
    nobody else may schedule those jobs while our lease lives.
    """
    queued, _ = store.get_prefix(keys.queue_prefix(job_class))
    claims, _ = store.get_prefix(keys.claims_prefix)
    taken = {keys.last_segment(kv.key) for kv in claims}
    orphans = [keys.last_segment(kv.key) for kv in claims
               if kv.lease == lease_id and keys.last_segment(kv.key) not in held]
    candidates = [(kv, keys.last_segment(kv.key)) for kv in queued]
    candidates = [(kv, jid) for kv, jid in candidates if jid not in taken]
    claim_value = codec.encode_obj({"owner": owner})

    def send(batch):
        compares, success, reads = [], [], []
        for qkv, jid in batch:
            compares += [ModRevisionIs(keys.claim(jid), 0), ModRevisionIs(qkv.key, qkv.mod_revision)]
            success += [Put(keys.claim(jid), claim_value, lease_id), Get(keys.job(jid))]
            reads.append(Get(keys.claim(jid)))
        return store.txn(compares, success, reads)

    out: list[JobView] = []
    per_txn = max(1, store.limits.max_txn_ops // 2)
    for start in range(0, len(orphans), per_txn):
        reads = store.txn([], [Get(keys.job(j)) for j in orphans[start:start + per_txn]]).reads
        out += [JobView(codec.decode_job(kv.key, kv.value), kv.mod_revision) for r in reads for kv in r]
    wave_size = in_flight if executor is not None else 1
    while candidates and len(out) < limit:
        wave, room = [], limit - len(out)
        while candidates and room > 0 and len(wave) < wave_size:
            batch = candidates[:min(per_txn, room)]
            candidates = candidates[len(batch):]
            room -= len(batch)
            wave.append(batch)
        results = list(executor.map(send, wave)) if len(wave) > 1 else [send(wave[0])]
        retry: list = []
        stop = False
        for batch, result in zip(wave, results, strict=True):
            if result.succeeded:
                for r in result.reads:
                    for kv in r:
                        view = JobView(codec.decode_job(kv.key, kv.value), kv.mod_revision)
                        if include_parked or view.record.status is not JobStatus.PARKED:
                            out.append(view)
                        else:
                            store.delete(keys.claim(view.record.job.id))
                continue
            # Somebody claimed part of the batch first: retry only the rest.
            lost = {keys.last_segment(kv.key) for r in result.reads for kv in r}
            retry += [(kv, jid) for kv, jid in batch if jid not in lost]
            if not lost:  # a queue entry changed (job placed or cancelled); re-read next call
                stop = True
        if stop:
            break
        candidates = retry + candidates
    return out


def release_claim(store: CellStore, keys: CellKeys, job_id: str) -> None:
    store.delete(keys.claim(job_id))


def park_job(store: CellStore, keys: CellKeys, view: JobView, reason: str) -> JobView | None:
    """Mark a claimed job as not placeable now, keep it queued, and drop the claim.

    Returns the new view, or None when the job changed meanwhile (the caller re-reads).
    """
    rec = view.record.copy()
    rec.status, rec.reason = JobStatus.PARKED, reason
    jid = rec.job.id
    result = store.txn([ModRevisionIs(keys.job(jid), view.revision)],
                       [Put(keys.job(jid), codec.encode_job(rec)), Delete(keys.claim(jid))])
    return JobView(rec, result.revision) if result.succeeded else None
