"""What a scheduler read: machines and jobs as of some revision.

The commit engine compares exactly these revisions, so a view is both the planner's
input and the commit's precondition.
"""

from __future__ import annotations

from dataclasses import dataclass

from . import codec
from .keys import CellKeys
from .model import AllocationRecord, JobRecord, Machine
from .shards import attach_shards, group_by_job
from .store import Get, KeyValue


@dataclass(slots=True)
class MachineView:
    machine: Machine
    spec_revision: int
    alloc: AllocationRecord
    alloc_revision: int  # 0 while the machine has no allocation record yet


@dataclass(slots=True)
class JobView:
    record: JobRecord
    revision: int
    claim_revision: int = 0  # mod_revision of the reader's claim on the job (its fence); 0 when unclaimed
    claim: str = ""  # the id of that claim (keys.claim(claim) is its key); "" when unclaimed


def machine_views_from_kvs(keys: CellKeys, spec_kvs: list[KeyValue],
                           alloc_kvs: list[KeyValue]) -> dict[str, MachineView]:
    views: dict[str, MachineView] = {}
    for kv in spec_kvs:
        m = codec.decode_machine(kv.key, kv.value)
        views[m.id] = MachineView(m, kv.mod_revision, AllocationRecord(), 0)
    for kv in alloc_kvs:
        mid = keys.last_segment(kv.key)
        view = views.get(mid)
        if view is not None:  # an alloc without a spec is reported by the invariant checker
            view.alloc = codec.decode_alloc(kv.key, kv.value)
            view.alloc_revision = kv.mod_revision
    return views


def read_machine_views(store, keys: CellKeys, machine_ids: list[str]) -> dict[str, MachineView]:
    specs: list[KeyValue] = []
    allocs: list[KeyValue] = []
    per_txn = max(1, store.limits.max_txn_ops // 2)
    for start in range(0, len(machine_ids), per_txn):
        ops = []
        for mid in machine_ids[start:start + per_txn]:
            ops += [Get(keys.spec(mid)), Get(keys.alloc(mid))]
        reads = store.txn([], ops).reads
        specs += [kv for i in range(0, len(reads), 2) for kv in reads[i]]
        allocs += [kv for i in range(1, len(reads), 2) for kv in reads[i]]
    return machine_views_from_kvs(keys, specs, allocs)


def read_job_view(store, keys: CellKeys, job_id: str) -> JobView | None:
    """A job record with its shards, read in one txn (one revision)."""
    job_kvs, shard_kvs = store.txn([], job_read_ops(keys, job_id)).reads
    if not job_kvs:
        return None
    kv = job_kvs[0]
    return JobView(attach_shards(codec.decode_job(kv.key, kv.value), shard_kvs), kv.mod_revision)


def job_records(job_kvs: list[KeyValue], shard_kvs: list[KeyValue]) -> list[JobRecord]:
    """Every job record of a whole-cell read, with its shards (read in the same txn)."""
    shards = group_by_job(shard_kvs)
    out = []
    for kv in job_kvs:
        rec = codec.decode_job(kv.key, kv.value)
        out.append(attach_shards(rec, shards.get(rec.job.id, ())))
    return out


def job_read_ops(keys: CellKeys, job_id: str) -> list[Get]:
    """What reading one whole job takes: its record and its shards (none for a small job)."""
    return [Get(keys.job(job_id)), Get(keys.bind_prefix(job_id), prefix=True)]


def complete_views(store, keys: CellKeys, views: list[JobView]) -> list[JobView]:
    """Views whose sharded records were read without their shards, re-read whole."""
    out = []
    for view in views:
        if view.record.loaded:
            out.append(view)
            continue
        fresh = read_job_view(store, keys, view.record.job.id)
        if fresh is not None:
            out.append(JobView(fresh.record, fresh.revision, view.claim_revision, view.claim))
    return out
