"""Records that scale (reproduction c1): a 20,000-task job with 128-character ids places
with etcd's default limits, writes at most 3x its final records, and no value passes 1 MiB."""

from __future__ import annotations

from cellsched.cellstate.clock import SimClock
from cellsched.cellstate.invariants import check_store
from cellsched.cellstate.keys import CellKeys
from cellsched.cellstate.machines import add_machines
from cellsched.cellstate.model import Job, JobClass, JobStatus, Machine, TaskGroup
from cellsched.cellstate.store import DEFAULT_MAX_REQUEST_BYTES, DEFAULT_MAX_TXN_OPS, Get, Put
from cellsched.cellstate.submission import submit_jobs
from cellsched.cellstate.views import read_job_view
from cellsched.schedulers.core import Scheduler
from cellsched.schedulers.settings import BATCH

from .storespy import SpyStore

TASKS = 20_000
MACHINES = 100
MIB = 1024 * 1024


def long_id(prefix: str, i: int) -> str:
    return f"{prefix}-{i:06d}-".ljust(128, "x")


def test_large_job_with_long_ids_places_within_limits_and_bytes(store, capsys):
    assert (store.limits.max_txn_ops, store.limits.max_request_bytes) == (DEFAULT_MAX_TXN_OPS,
                                                                          DEFAULT_MAX_REQUEST_BYTES)
    written = {"bytes": 0, "largest": 0}

    def count(_compares, success, result):
        if result.succeeded:
            for op in success:
                if type(op) is Put:
                    written["bytes"] += len(op.key) + len(op.value)
                    written["largest"] = max(written["largest"], len(op.value))

    clock = SimClock()
    keys = CellKeys("big")
    mids = [long_id("m", i) for i in range(MACHINES)]
    add_machines(store, keys, [Machine(m, (64_000, 262_144, 0)) for m in mids])
    jid = long_id("job", 1)
    job = Job(jid, (TaskGroup("g", TASKS, (100, 256, 0)),), JobClass.BATCH)
    submit_jobs(store, keys, [job], now=0.0)
    spy = SpyStore(store, after=count)
    s = Scheduler("b0", spy, keys, BATCH, clock)
    steps = 0
    while s.step():  # the loop must not raise; every step makes progress
        steps += 1
        assert steps < 50
    s.close()
    view = read_job_view(store, keys, jid)
    assert view.record.status is JobStatus.PLACED and len(view.record.bound) == TASKS
    rep = check_store(store, keys, [jid])
    assert rep.ok, rep.violations[:3]

    final = store.txn([], [Get(keys.jobs_prefix, prefix=True), Get(keys.bind_root, prefix=True),
                           Get(keys.alloc_prefix, prefix=True)]).reads
    final_bytes = sum(len(kv.key) + len(kv.value) for r in final for kv in r)
    largest_final = max(len(kv.value) for r in final for kv in r)
    per_machine = max(len(codec_tasks) for codec_tasks in (kv.value for kv in final[2]))
    with capsys.disabled():
        print(f"\n[{type(store).__name__}] {TASKS} tasks, 128-char ids: wrote {written['bytes']:,} bytes for "
              f"{final_bytes:,} bytes of final records ({written['bytes'] / final_bytes:.2f}x); largest value "
              f"written {written['largest']:,} bytes, largest allocation record {per_machine:,}; {steps} steps")
    assert written["bytes"] <= 3 * final_bytes
    assert written["largest"] <= MIB and largest_final <= MIB
