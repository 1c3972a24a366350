"""Batched decisions (issue 9, item 4): many one-task jobs of one shape decided in one pass
(gpu/alike.py, schedulers/decide.py's decide_alike and decide_batches)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cellsched import gpu
from cellsched.cellstate.clock import SimClock
from cellsched.cellstate.errors import InvalidInputError
from cellsched.cellstate.invariants import check_store
from cellsched.cellstate.keys import CellKeys
from cellsched.cellstate.machines import add_machines
from cellsched.cellstate.model import (
    AllocationRecord,
    Job,
    JobRecord,
    JobStatus,
    Machine,
    MachineState,
    TaskGroup,
)
from cellsched.cellstate.store.memory import MemoryStore
from cellsched.cellstate.submission import submit_jobs
from cellsched.cellstate.validation import validate_claims
from cellsched.cellstate.views import JobView, MachineView, read_job_view
from cellsched.schedulers.core import Scheduler
from cellsched.schedulers.decide import alike_batches, decide_alike, decide_job
from cellsched.schedulers.settings import BATCH

POLICIES = [gpu.RANDOM_FIRST_FIT, gpu.SPREAD, gpu.RANDOM_FIRST_FIT.at_home(1, 3), gpu.PACK.at_home(0, 2)]


def pod(jid: str, req=(100, 500, 0), labels=None) -> Job:
    return Job(jid, (TaskGroup("pod", 1, req, labels or {}),))


@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_batched_claims_are_all_accepted_by_the_validator(data):
    n = data.draw(st.integers(1, 12))
    machines, used = [], []
    for i in range(n):
        cap = (data.draw(st.integers(0, 4000)), data.draw(st.integers(0, 8000)), 0)
        used.append(tuple(data.draw(st.integers(0, c)) for c in cap))
        labels = {"zone": data.draw(st.sampled_from(["a", "b"]))}
        machines.append(Machine(f"m{i}", cap, labels, data.draw(st.sampled_from(list(MachineState)))))
    req = (data.draw(st.integers(0, 1500)), data.draw(st.integers(0, 3000)), 0)
    if not any(req):
        req = (1, 0, 0)  # a task must request something (cellstate.model)
    glabels = {"zone": "a"} if data.draw(st.booleans()) else {}
    jobs = [pod(f"j{k:03d}", req, glabels) for k in range(data.draw(st.integers(2, 40)))]
    policy = data.draw(st.sampled_from(POLICIES))
    cols = gpu.MachineColumns([m.id for m in machines], np.array([m.capacity for m in machines]), np.array(used),
                              [m.labels for m in machines], np.array([m.schedulable for m in machines]), xp=np)
    records = [JobRecord(j) for j in jobs]
    decisions = decide_alike(cols, records, policy, data.draw(st.integers(0, 2**32)))
    assert len(decisions) == len(jobs)
    claims = [c for d in decisions for c in d.claims]
    views = {m.id: MachineView(m, 1, AllocationRecord(u, {}), 1) for m, u in zip(machines, used, strict=True)}
    accepted, refused = validate_claims(claims, views, {r.job.id: JobView(r, 1) for r in records})
    assert not refused and len(accepted) == len(claims)  # together, per machine, they fit
    # Exactly as many as the cell holds: the batch stops only when no machine has room left.
    free = cols.host_free
    room = gpu.alike.slots(free, np.array(req), cols.host_eligibility(gpu.GroupSpec.from_task_group(jobs[0].groups[0])),
                           len(jobs)).sum()
    assert len(claims) == min(len(jobs), int(room))
    for d in decisions:  # an unplaced job says why
        assert d.claims or (d.unplaced == 1 and d.reason and d.unplaceable)


def test_batched_decision_is_seeded():
    cols = gpu.MachineColumns([f"m{i}" for i in range(50)], np.tile([[4000, 32768, 0]], (50, 1)), xp=np)
    records = [JobRecord(pod(f"j{k}")) for k in range(30)]
    first = [c.machine_id for d in decide_alike(cols, records, gpu.RANDOM_FIRST_FIT, 5) for c in d.claims]
    again = [c.machine_id for d in decide_alike(cols, records, gpu.RANDOM_FIRST_FIT, 5) for c in d.claims]
    other = [c.machine_id for d in decide_alike(cols, records, gpu.RANDOM_FIRST_FIT, 6) for c in d.claims]
    assert first == again and first != other


def cpus(seed: int = 11) -> np.ndarray:
    return np.random.default_rng(seed).choice([1000, 1500, 2000], 30)


ROOM = int((cpus() // 1000).sum())  # pods of 1 CPU the cell holds


def run_cell(batch_alike: bool, jobs: int, policy: str) -> tuple[int, int, dict]:
    """A seeded cell of 30 machines of 1, 1.5 or 2 CPUs, `jobs` pods of 1 CPU submitted; one
    scheduler steps until idle. (jobs placed, jobs parked, metrics)."""
    clock = SimClock()
    store = MemoryStore(clock=clock)
    keys = CellKeys("b")
    add_machines(store, keys, [Machine(f"m{i:02d}", (int(c), 16384, 0)) for i, c in enumerate(cpus())])
    submit_jobs(store, keys, [pod(f"j{k:03d}", (1000, 100, 0)) for k in range(jobs)], now=0.0)
    s = Scheduler("s", store, keys, BATCH.with_(batch_alike=batch_alike, policy_name=policy, claim_batch=64), clock)
    while s.step():
        pass
    ids = [f"j{k:03d}" for k in range(jobs)]
    assert check_store(store, keys, ids).ok
    placed = sum(read_job_view(store, keys, j).record.status is JobStatus.PLACED for j in ids)
    m = s.metrics()
    s.close()
    return placed, m["jobs_parked"], m


@pytest.mark.parametrize("policy", ["random_first_fit", "spread"])
@pytest.mark.parametrize("jobs", [20, 50])
def test_batched_and_unbatched_paths_place_the_same_number_of_jobs(policy, jobs, monkeypatch):
    calls = []
    real = gpu.assign_alike
    monkeypatch.setattr(gpu, "assign_alike", lambda *a, **k: calls.append(a[2]) or real(*a, **k))
    batched = run_cell(True, jobs, policy)
    assert calls and calls[0] == jobs  # the first step decided every claimed job in one call
    made = len(calls)
    unbatched = run_cell(False, jobs, policy)
    assert len(calls) == made  # batch_alike=False decides job by job
    assert 20 < ROOM < 50  # one case fits, the other does not
    assert batched[0] == unbatched[0] == min(jobs, ROOM)
    assert batched[1] == unbatched[1] == jobs - min(jobs, ROOM)  # the rest parked, with the reason
    assert batched[2]["conflict_fraction"] == 0.0


def test_only_one_task_jobs_of_one_shape_are_batched():
    records = {
        "a": JobRecord(pod("a")), "b": JobRecord(pod("b")), "c": JobRecord(pod("c", (200, 500, 0))),
        "d": JobRecord(Job("d", (TaskGroup("g", 2, (100, 500, 0)),))),
        "e": JobRecord(pod("e", labels={"zone": "a"})), "f": JobRecord(pod("f")),
    }
    assert alike_batches(records) == [["a", "b", "f"]]


def test_batched_input_is_checked():
    cols = gpu.MachineColumns(["m0"], np.array([[1000, 1000, 0]]), xp=np)
    with pytest.raises(InvalidInputError, match="one-task groups"):
        gpu.assign_alike(cols, gpu.GroupSpec((1, 1, 0), 2), 3, gpu.RANDOM_FIRST_FIT, 1)
    with pytest.raises(InvalidInputError, match="non-negative"):
        gpu.assign_alike(cols, gpu.GroupSpec((1, 1, 0), 1), -1, gpu.RANDOM_FIRST_FIT, 1)


def test_a_custom_decide_function_is_never_bypassed_by_batching():
    clock = SimClock()
    store = MemoryStore(clock=clock)
    keys = CellKeys("c")
    add_machines(store, keys, [Machine("m0", (8000, 16384, 0))])
    submit_jobs(store, keys, [pod(f"j{k}") for k in range(5)], now=0.0)
    seen = []

    def counting(columns, index, record, policy, seed):
        seen.append(record.job.id)
        return decide_job(columns, index, record, policy, seed)

    s = Scheduler("s", store, keys, BATCH, clock, decide_fn=counting)
    s.step()
    assert sorted(seen) == [f"j{k}" for k in range(5)]
    s.close()
