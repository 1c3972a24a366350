"""The cell's invariants (docs/architecture.md, "The commit protocol"), checked on a store at any moment.

- no machine's used vector exceeds its capacity (no overcommit);
- a task is bound to at most one machine;
- used equals the exact integer sum of the bound tasks' requests;
- allocation records and job records agree on every binding;
- every accepted job is pending/parked (queued), placed or finished: nothing is lost.
Everything is read in one txn, so the check sees one consistent revision.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from . import codec
from . import resources as res
from .errors import CorruptValueError
from .index_entry import IndexEntry
from .keys import CellKeys
from .model import JobStatus
from .shards import attach_shards, group_by_job
from .store import CellStore, Get


@dataclass
class CheckReport:
    revision: int = 0
    machines: int = 0
    jobs: int = 0
    bound_tasks: int = 0
    used: res.Vector = res.ZERO  # the allocation records' used vectors, summed over the cell
    violations: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.violations


def check_store(store: CellStore, keys: CellKeys, expected_jobs: Iterable[str] | None = None) -> CheckReport:
    prefixes = [keys.spec_prefix, keys.alloc_prefix, keys.jobs_prefix, keys.queue_prefix(), keys.claims_prefix,
                keys.parked_prefix(), keys.bind_root]
    result = store.txn([], [Get(p, prefix=True) for p in prefixes])
    spec_kvs, alloc_kvs, job_kvs, queue_kvs, claim_kvs, parked_kvs, shard_kvs = result.reads
    shards = group_by_job(shard_kvs)
    rep = CheckReport(revision=result.revision)
    v = rep.violations

    machines = {}
    for kv in spec_kvs:
        try:
            machines[keys.last_segment(kv.key)] = codec.decode_machine(kv.key, kv.value)
        except CorruptValueError as exc:
            v.append(str(exc))
    rep.machines = len(machines)

    where: dict[str, str] = {}  # task -> machine, from allocation records
    for kv in alloc_kvs:
        mid = keys.last_segment(kv.key)
        try:
            alloc = codec.decode_alloc(kv.key, kv.value)
        except CorruptValueError as exc:
            v.append(str(exc))
            continue
        m = machines.get(mid)
        if m is None:
            v.append(f"allocation record for unknown machine {mid}")
            continue
        rep.used = res.add(rep.used, alloc.used)
        total = res.ZERO
        for tid, req in alloc.tasks.items():
            total = res.add(total, req)
            if tid in where:
                v.append(f"task {tid} bound twice: on {where[tid]} and {mid}")
            where[tid] = mid
        if total != alloc.used:
            v.append(f"machine {mid}: used {alloc.used} != sum of bound requests {total}")
        if not res.fits(res.ZERO, alloc.used, m.capacity):
            v.append(f"machine {mid}: overcommitted, used {alloc.used} > capacity {m.capacity}")
    rep.bound_tasks = len(where)

    # A job's own queue entry, or the queue segments that list it (cellstate/queue_segments.py):
    # a segment holds a listed job only while the job's record is PENDING and names it.
    queued, segments = _queue_entries(queue_kvs, v)
    parked = {keys.last_segment(kv.key) for kv in parked_kvs}
    jobs_seen = set()
    job_bound: dict[str, str] = {}
    for kv in job_kvs:
        try:
            rec = codec.decode_job(kv.key, kv.value)
            attach_shards(rec, shards.pop(rec.job.id, ()))
        except CorruptValueError as exc:
            v.append(str(exc))
            continue
        jid = rec.job.id
        jobs_seen.add(jid)
        for tid, mid in rec.bound.items():
            job_bound[tid] = mid
            if where.get(tid) != mid:
                v.append(f"job {jid}: task {tid} recorded on {mid} but the allocation records say {where.get(tid)}")
        if rec.bound.keys() & rec.done:
            v.append(f"job {jid}: tasks both bound and done")
        in_segment = rec.segment and jid in segments.get(keys.queue_of(rec), ())
        if rec.segment and rec.status is not JobStatus.PENDING:
            v.append(f"job {jid} is {rec.status.value} but its record names queue segment {rec.segment}")
        if rec.status is JobStatus.PENDING and jid not in queued and not in_segment:
            v.append(f"job {jid} is pending but not in the queue: it would be lost")
        if in_segment and jid in queued:
            v.append(f"job {jid} waits in queue segment {rec.segment} and in an entry of its own")
        if (jid in queued or in_segment) and jid in parked:
            v.append(f"job {jid} is both in the queue and in the parked index")
        if rec.status is JobStatus.PARKED and jid not in parked:
            v.append(f"job {jid} is parked but not in the parked index: it would be lost")
        if rec.status is not JobStatus.PARKED and jid in parked:
            v.append(f"job {jid} is {rec.status.value} but still in the parked index")
        if rec.status is JobStatus.PLACED and not rec.fully_bound:
            v.append(f"job {jid} is placed but has unbound tasks")
        if rec.status is not JobStatus.PENDING and jid in queued:
            v.append(f"job {jid} is {rec.status.value} but still queued")
        if rec.status is JobStatus.FINISHED and rec.bound:
            v.append(f"job {jid} is finished but still holds {len(rec.bound)} tasks")
    rep.jobs = len(jobs_seen)
    for tid, mid in where.items():
        if job_bound.get(tid) != mid:
            v.append(f"task {tid} sits on {mid} but its job does not record that binding")
    for jid in shards:
        v.append(f"binding shards of missing job {jid}")
    for jid in (queued | parked) - jobs_seen:
        v.append(f"queue entry for missing job {jid}")
    v += _claim_violations(keys, claim_kvs, [*queue_kvs, *parked_kvs])
    if expected_jobs is not None:
        missing = sorted(set(expected_jobs) - jobs_seen)
        if missing:
            v.append(f"{len(missing)} accepted jobs are missing from the store, e.g. {missing[:5]}")
    return rep


def _queue_entries(queue_kvs, v: list[str]) -> tuple[set[str], dict[str, tuple[str, ...]]]:
    """(the jobs with an entry of their own, segment key -> the jobs it lists)."""
    own: set[str] = set()
    segments: dict[str, tuple[str, ...]] = {}
    for kv in queue_kvs:
        try:
            entry = IndexEntry.decode(kv)
        except (CorruptValueError, KeyError, TypeError, ValueError):
            v.append(f"queue entry {kv.key} is unreadable")
            continue
        if entry.jobs:
            segments[kv.key] = entry.jobs
        else:
            own.add(entry.job_id)
    return own, segments


def _claim_violations(keys: CellKeys, claim_kvs, entry_kvs) -> list[str]:
    """A claim key names its owner and the jobs it took; an index entry that names a live
    claim as its holder is one of that claim's jobs (cellstate/claims.py)."""
    out: list[str] = []
    listed: dict[str, set[str]] = {}
    for kv in claim_kvs:
        cid = keys.last_segment(kv.key)
        try:
            obj = codec.decode_obj(kv.key, kv.value)
        except CorruptValueError:
            obj = None
        jobs = obj.get("jobs") if isinstance(obj, dict) else None
        if not isinstance(obj, dict) or not isinstance(obj.get("owner"), str) or not isinstance(jobs, list) or not jobs:
            out.append(f"claim {cid} is unreadable (owner and a list of jobs expected)")
            continue
        listed[cid] = {str(j) for j in jobs}
    for kv in entry_kvs:
        try:
            entry = IndexEntry.decode(kv)
        except (CorruptValueError, KeyError, TypeError, ValueError):
            continue  # reported by the entry checks
        if entry.holder in listed and not set(entry.members) <= listed[entry.holder]:
            out.append(f"index entry of job {entry.job_id} names claim {entry.holder}, which did not take it")
    return out
