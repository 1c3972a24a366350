"""Task and machine lifecycle: failures under a per-job policy, dead and draining machines."""

from __future__ import annotations

import time

from cellsched.cellstate.claims import list_queue
from cellsched.cellstate.clock import RealClock, SimClock
from cellsched.cellstate.commit import CommitEngine, Plan
from cellsched.cellstate.invariants import check_store
from cellsched.cellstate.lifecycle import release_tasks
from cellsched.cellstate.machine_health import MachineMonitor, heartbeat
from cellsched.cellstate.machines import set_machine_state
from cellsched.cellstate.model import (
    Claim,
    Job,
    JobClass,
    JobStatus,
    MachineState,
    TaskGroup,
    TaskOutcome,
    task_id,
)
from cellsched.cellstate.store.memory import MemoryStore
from cellsched.cellstate.submission import submit_jobs
from cellsched.cellstate.views import read_job_view
from cellsched.schedulers.core import Scheduler
from cellsched.schedulers.settings import BATCH
from tests.cellfactory import make_cell, views


def place_all(store, keys, job, machines):
    view = read_job_view(store, keys, job.id)
    claims = [Claim(task_id(job.id, 0, i), m, job.groups[0].request) for i, m in enumerate(machines)]
    return CommitEngine(store, keys).commit(Plan(claims, views(store, keys, 4), {job.id: view}))


def test_lifecycle_failures_retry_within_policy_then_fail_the_job(store):
    keys = make_cell(store, 4)
    job = Job("f", (TaskGroup("g", 1, (1000, 1024, 0)),), max_failures=1)
    submit_jobs(store, keys, [job], now=0.0)
    place_all(store, keys, job, ["m0"])
    release_tasks(store, keys, "f", ["f/0/0"], now=1.0, outcome=TaskOutcome.FAILED)
    rec = read_job_view(store, keys, "f").record
    assert (rec.status, rec.failures) == (JobStatus.PENDING, 1)  # 1 failure <= max_failures=1: retried
    place_all(store, keys, job, ["m1"])
    release_tasks(store, keys, "f", ["f/0/0"], now=2.0, outcome=TaskOutcome.FAILED)
    rec = read_job_view(store, keys, "f").record
    assert rec.status is JobStatus.FAILED and "max_failures=1" in rec.reason
    assert list_queue(store, keys, JobClass.BATCH) == []
    assert check_store(store, keys, ["f"]).ok


def test_lifecycle_draining_machine_tasks_are_rescheduled_elsewhere():
    clock = SimClock(0.0)
    store = MemoryStore(clock=clock)
    keys = make_cell(store, 4)
    job = Job("d", (TaskGroup("g", 2, (1000, 1024, 0)),))
    submit_jobs(store, keys, [job], now=0.0)
    place_all(store, keys, job, ["m2", "m3"])
    set_machine_state(store, keys, "m2", MachineState.DRAINING)
    report = MachineMonitor(store, keys, clock, liveness_required=False).tick()
    assert report.evicted_tasks == 1 and report.marked_down == []
    rec = read_job_view(store, keys, "d").record
    assert rec.status is JobStatus.PENDING and rec.failures == 0 and "d/0/0" not in rec.bound
    sched = Scheduler("b", store, keys, BATCH, clock)
    while sched.step():
        pass
    rec = read_job_view(store, keys, "d").record
    assert rec.status is JobStatus.PLACED and rec.bound["d/0/0"] != "m2"
    assert check_store(store, keys, ["d"]).ok


def test_lifecycle_machine_whose_lease_expires_goes_down_and_loses_its_tasks(store):
    keys = make_cell(store, 4)
    leases = {}
    for i in range(4):
        leases[i] = store.grant_lease(1 if i == 1 else 30)
        heartbeat(store, keys, f"m{i}", leases[i])
    job = Job("l", (TaskGroup("g", 2, (1000, 1024, 0)),))
    submit_jobs(store, keys, [job], now=0.0)
    place_all(store, keys, job, ["m1", "m0"])
    monitor = MachineMonitor(store, keys, RealClock())
    assert monitor.tick().marked_down == []
    deadline = time.monotonic() + 8
    while store.get(keys.live("m1")) is not None and time.monotonic() < deadline:
        time.sleep(0.2)
    report = monitor.tick()
    assert report.marked_down == ["m1"] and report.evicted_tasks == 1
    rec = read_job_view(store, keys, "l").record
    assert rec.status is JobStatus.PENDING and set(rec.bound) == {"l/0/1"}
    assert check_store(store, keys, ["l"]).ok
