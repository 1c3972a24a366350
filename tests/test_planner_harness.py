"""The scheduler through its planner seam: a recording harness sees every plan it submits.

A rejected plan writes nothing and the scheduler plans again on the cell as it is then; a
plan whose ack was dropped landed all the same, and the scheduler finds that out from the
store instead of binding its tasks a second time.
"""

from __future__ import annotations

from cellsched.cellstate.clock import SimClock
from cellsched.cellstate.commit import CommitEngine, CommitResult
from cellsched.cellstate.invariants import check_store
from cellsched.cellstate.machines import set_machine_state
from cellsched.cellstate.model import JobStatus, MachineState
from cellsched.cellstate.planner import Planner
from cellsched.cellstate.store.memory import MemoryStore
from cellsched.cellstate.submission import submit_jobs
from cellsched.cellstate.validation import RefusalKind
from cellsched.cellstate.views import read_job_view, read_machine_views
from cellsched.schedulers.core import Scheduler
from cellsched.schedulers.settings import BATCH

from .cellfactory import make_cell, make_job
from .harness import COMMIT, DROP_ACK, REJECT, RecordingPlanner


def harnessed(n: int, *jobs):
    clock = SimClock()
    store = MemoryStore(clock=clock)
    keys = make_cell(store, n)
    submit_jobs(store, keys, list(jobs), now=0.0)
    planner = RecordingPlanner.like_scheduler(store, keys, BATCH, clock)
    return clock, store, keys, planner, Scheduler("b0", store, keys, BATCH, clock, planner=planner)


def record(store, keys, jid):
    return read_job_view(store, keys, jid).record


def by_task(claims):
    return sorted(claims, key=lambda c: c.task_id)


class ClosingPlanner:
    def __init__(self):
        self.closed = 0

    def commit(self, plan):
        return CommitResult()

    def close(self):
        self.closed += 1


def test_the_engine_and_the_harness_are_planners_and_a_scheduler_uses_the_one_it_is_given():
    clock = SimClock()
    store = MemoryStore(clock=clock)
    keys = make_cell(store, 1)
    default = Scheduler("b0", store, keys, BATCH, clock)
    assert isinstance(default.engine, CommitEngine) and isinstance(default.engine, Planner)
    default.close()
    given = ClosingPlanner()
    assert isinstance(given, Planner) and isinstance(RecordingPlanner.like_scheduler(store, keys, BATCH, clock),
                                                     Planner)
    assert not isinstance(object(), Planner)
    s = Scheduler("b1", store, keys, BATCH, clock, planner=given)
    assert s.engine is given
    s.close()
    assert given.closed == 1  # the scheduler owns the planner it was given


def test_a_rejected_plan_writes_nothing_and_the_next_is_decided_on_fresh_state():
    clock, store, keys, h, s = harnessed(3, make_job("first", 2))
    assert s.step()
    [first] = h.submissions
    assert first.action == COMMIT and sorted(first.task_ids) == ["first/0/0", "first/0/1"]
    assert by_task(first.result.committed) == by_task(first.plan.claims) and not first.result.conflicted
    assert record(store, keys, "first").bound == {c.task_id: c.machine_id for c in first.plan.claims}

    submit_jobs(store, keys, [make_job("second", 1, cpu=3000)], now=clock.now())
    h.reject_next()
    assert s.step()
    rejected = h.submissions[1]
    assert rejected.action == REJECT and rejected.task_ids == ["second/0/0"]
    assert rejected.result.committed == [] and rejected.applied is None
    assert [why.kind for _, why in rejected.result.conflicted] == [RefusalKind.MACHINE_CHANGED]
    assert not rejected.wrote
    second = record(store, keys, "second")
    assert second.status is JobStatus.PENDING and not second.bound
    assert "second" in s.held  # a conflict: kept, and decided again next step

    # Meanwhile the machine it picked is drained: the next plan must see the cell as it is now.
    [chosen] = {c.machine_id for c in rejected.plan.claims}
    set_machine_state(store, keys, chosen, MachineState.DRAINING)
    now = read_machine_views(store, keys, [f"m{i}" for i in range(3)])
    assert s.step()
    assert len(h.submissions) == 3
    retry = h.submissions[2]
    assert retry.action == COMMIT and retry.task_ids == ["second/0/0"]
    [claim] = retry.plan.claims
    assert claim.machine_id != chosen
    for mid, view in retry.plan.machines.items():  # decided on the store's current revisions
        assert (view.spec_revision, view.alloc_revision) == (now[mid].spec_revision, now[mid].alloc_revision)
    assert retry.result.committed == [claim] and not retry.result.conflicted

    assert record(store, keys, "second").status is JobStatus.PLACED
    assert record(store, keys, "second").bound == {"second/0/0": claim.machine_id}
    committed = h.committed_tasks()
    assert sorted(committed) == ["first/0/0", "first/0/1", "second/0/0"]  # each task bound once
    rep = check_store(store, keys, ["first", "second"])
    assert rep.ok, rep.violations
    assert rep.bound_tasks == 3
    assert not s.step() and len(h.submissions) == 3  # nothing left to plan
    s.close()


def test_a_dropped_ack_leaves_the_job_placed_exactly_once():
    clock, store, keys, h, s = harnessed(4, make_job("j", 2))
    h.drop_ack_next()
    assert s.step()
    [dropped] = h.submissions
    assert dropped.action == DROP_ACK and dropped.wrote
    assert by_task(dropped.applied.committed) == by_task(dropped.plan.claims)  # it landed...
    assert dropped.result.committed == [] and len(dropped.result.conflicted) == 2  # ...but the scheduler was told not
    assert record(store, keys, "j").status is JobStatus.PLACED
    assert "j" in s.held

    # The scheduler decides the same tasks again on its stale view of the job; the engine
    # finds the job placed and its claim gone, and refuses all of it without writing.
    assert s.step()
    retry = h.submissions[1]
    assert retry.action == COMMIT and sorted(retry.task_ids) == ["j/0/0", "j/0/1"]
    assert retry.result.committed == [] and not retry.wrote
    assert {why.kind for _, why in retry.result.conflicted} <= {
        RefusalKind.CLAIM_LOST, RefusalKind.JOB_NOT_SCHEDULABLE, RefusalKind.TASK_ALREADY_BOUND}
    assert "j" not in s.held

    assert sorted(h.committed_tasks()) == ["j/0/0", "j/0/1"]
    assert record(store, keys, "j").bound == {c.task_id: c.machine_id for c in dropped.plan.claims}
    rep = check_store(store, keys, ["j"])
    assert rep.ok, rep.violations
    assert rep.bound_tasks == 2
    assert not s.step() and len(h.submissions) == 2
    s.close()
