"""What a contention replay leaves behind (loadtests/replay_contention.py), and its checks:
the final state read in one txn, accepted jobs that got lost, unplaced tasks the scalar
reference can fit, and check_store's violations grouped by kind."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

from cellsched import gpu
from cellsched.cellstate import codec, queue_segments
from cellsched.cellstate.errors import CorruptValueError
from cellsched.cellstate.index_entry import IndexEntry
from cellsched.cellstate.keys import CellKeys
from cellsched.cellstate.model import JobRecord, JobStatus, TransactionMode, group_of_task
from cellsched.cellstate.shards import attach_shards, group_by_job
from cellsched.cellstate.store import CellStore, Get
from cellsched.gpu import reference

# The replay never fails or cancels a job, so these are the only states a job may end in.
VALID_STATUSES = frozenset({JobStatus.PENDING, JobStatus.PARKED, JobStatus.PLACED, JobStatus.FINISHED})
WAITING_STATUSES = frozenset({JobStatus.PENDING, JobStatus.PARKED})
EXAMPLES = 10  # how many violations, errors and fittable tasks the report quotes


@dataclass
class FinalState:
    machines: dict
    allocs: dict
    jobs: list[JobRecord]  # with their binding shards attached
    queued: set[str]  # job ids with a queue entry (pending jobs)
    parked: set[str]  # job ids in the parked index (parked jobs)
    undecodable: list[str]  # job keys whose value cannot be decoded


def read_final_state(store: CellStore, keys: CellKeys) -> FinalState:
    """Machines, allocations, jobs (with shards), queue and parked index, read in one txn."""
    prefixes = (keys.spec_prefix, keys.alloc_prefix, keys.jobs_prefix, keys.bind_root, keys.queue_prefix(),
                keys.parked_prefix())
    spec_kvs, alloc_kvs, job_kvs, shard_kvs, queue_kvs, parked_kvs = store.txn(
        [], [Get(p, prefix=True) for p in prefixes]).reads
    machines = {keys.last_segment(kv.key): codec.decode_machine(kv.key, kv.value) for kv in spec_kvs}
    allocs = {keys.last_segment(kv.key): codec.decode_alloc(kv.key, kv.value) for kv in alloc_kvs}
    shards = group_by_job(shard_kvs)
    jobs, undecodable = [], []
    for kv in job_kvs:
        try:
            rec = codec.decode_job(kv.key, kv.value)
            jobs.append(attach_shards(rec, shards.get(rec.job.id, ())))
        except CorruptValueError:
            undecodable.append(kv.key)
    # A job waits in a queue segment only while its record names it (cellstate/queue_segments.py).
    waiting = {rec.job.id for rec in jobs if rec.segment and queue_segments.waits_in(rec, rec.segment)}
    queued: set[str] = set()
    for kv in queue_kvs:
        entry = IndexEntry.decode(kv)
        queued.update(j for j in entry.members if not entry.jobs or j in waiting)
    return FinalState(machines, allocs, jobs, queued, {keys.last_segment(kv.key) for kv in parked_kvs}, undecodable)


def lost_jobs(accepted: list[str], state: FinalState) -> list[str]:
    """Accepted jobs that are missing, in no valid state, or waiting without the index
    entry a scheduler finds them by (pending: the queue; parked: the parked index)."""
    by_id = {r.job.id: r for r in state.jobs}
    lost = []
    for jid in accepted:
        rec = by_id.get(jid)
        if rec is None:
            lost.append(f"{jid}: missing from the store")
        elif rec.status not in VALID_STATUSES:
            lost.append(f"{jid}: {rec.status.value}")
        elif rec.status is JobStatus.PENDING and jid not in state.queued:
            lost.append(f"{jid}: pending but not in the queue")
        elif rec.status is JobStatus.PARKED and jid not in state.parked:
            lost.append(f"{jid}: parked but not in the parked index")
    return lost


def unplaced_that_fit(state: FinalState) -> list[str]:
    """Tasks left unplaced although the scalar reference finds a machine for them.

    Incremental jobs: each unplaced group on its own. Gangs: the reference's greedy first
    fit of the whole gang (a gang that cannot be placed whole is correctly waiting).
    """
    ids = sorted(state.machines)
    index = {m: i for i, m in enumerate(ids)}
    ref = [reference.RefMachine(state.machines[m].capacity,
                                state.allocs[m].used if m in state.allocs else (0, 0, 0),
                                state.machines[m].labels, state.machines[m].schedulable) for m in ids]
    bad = []
    for rec in state.jobs:
        if rec.status not in WAITING_STATUSES | {JobStatus.PLACED}:
            continue
        by_group = defaultdict(list)
        for tid, gi, group in rec.unbound_tasks():
            by_group[gi].append((tid, group))
        if not by_group:
            continue
        if rec.job.mode is TransactionMode.ALL_OR_NOTHING:
            if _gang_fits(ref, by_group):
                bad.append(f"gang {rec.job.id} ({rec.status.value}) fits whole{_why(rec)}")
            continue
        for gi, tasks in by_group.items():
            group = tasks[0][1]
            spec = gpu.GroupSpec.from_task_group(group)
            excluded = [False] * len(ids)
            if group.different_machines:
                for tid, mid in rec.bound.items():
                    if group_of_task(tid) == gi and mid in index:
                        excluded[index[mid]] = True
            if reference.fits_somewhere(ref, spec, excluded):
                bad.append(f"{tasks[0][0]} ({rec.status.value}; {len(tasks)} unplaced in group {gi}) "
                           f"fits somewhere{_why(rec)}")
    return bad


def _why(rec) -> str:
    """The job's own reason, shortened: a stuck job (crash limit) reads differently from a slow one."""
    return f"; its reason: {rec.reason[:120]}" if rec.reason else ""


def _gang_fits(ref: list[reference.RefMachine], by_group: dict) -> bool:
    free = [list(m.free) for m in ref]
    for tasks in by_group.values():
        spec = gpu.GroupSpec.from_task_group(tasks[0][1])
        for _ in tasks:
            k = next((i for i, m in enumerate(ref) if reference.eligible(m, i, spec)
                      and reference.fits(free[i], spec.request)), None)
            if k is None:
                return False
            free[k] = [f - r for f, r in zip(free[k], spec.request, strict=True)]
    return True


# check_store's messages, by the phrase that names the broken invariant.
_VIOLATION_KINDS = (("overcommitted", "overcommitted"), ("bound twice", "task bound twice"),
                    ("!= sum of bound requests", "used != sum of bound tasks"),
                    ("but the allocation records say", "job and allocation records disagree"),
                    ("its job does not record", "job and allocation records disagree"),
                    ("both bound and done", "task both bound and done"),
                    ("both in the queue and in the parked index", "both queued and parked"),
                    ("but not in the queue", "pending but not queued"),
                    ("but not in the parked index", "parked but not in the parked index"),
                    ("but still in the parked index", "not parked but in the parked index"),
                    ("placed but has unbound", "placed with unbound tasks"), ("but still queued", "not pending but queued"),
                    ("finished but still holds", "finished but holds tasks"),
                    ("accepted jobs are missing", "accepted jobs missing"),
                    ("binding shards of missing job", "shards of a missing job"), ("missing job", "entry for a missing job"),
                    ("unknown machine", "allocation for an unknown machine"), ("cannot decode", "corrupt value"))


def violation_kind(violation: str) -> str:
    return next((kind for phrase, kind in _VIOLATION_KINDS if phrase in violation), "other")


def violation_examples(violations: list[str], per_kind: int = 3) -> list[str]:
    """Up to `per_kind` of every kind first (check_store lists overcommits first, and a rarer
    kind such as a double binding would not be quoted), then the rest up to EXAMPLES."""
    chosen: dict[str, list[str]] = defaultdict(list)
    for v in violations:
        if len(chosen[violation_kind(v)]) < per_kind:
            chosen[violation_kind(v)].append(v)
    first = [v for vs in chosen.values() for v in vs]
    taken = set(first)
    return (first + [v for v in violations if v not in taken])[:max(EXAMPLES, len(first))]
