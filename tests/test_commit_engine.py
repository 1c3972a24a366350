"""The commit engine on both backends: modes, chunking, gangs, unknown outcomes, bad input."""

from __future__ import annotations

import pytest

from cellsched.cellstate.commit import CommitEngine, Plan
from cellsched.cellstate.errors import (
    GangTooLargeError,
    InvalidInputError,
    InvalidResourceError,
    UnknownMachineError,
)
from cellsched.cellstate.faults import ScriptedFaultStore
from cellsched.cellstate.invariants import check_store
from cellsched.cellstate.model import Claim, ConflictMode, JobStatus, task_id
from cellsched.cellstate.store import StoreLimits
from cellsched.cellstate.validation import RefusalKind
from cellsched.cellstate.views import read_job_view
from tests.cellfactory import make_cell, make_job, submit, submit_each, views


def claims_for(job, machines):
    return [Claim(task_id(job.id, 0, i), m, job.groups[0].request) for i, m in enumerate(machines)]


def test_commit_places_and_marks_job_placed(store):
    keys = make_cell(store, 2)
    job = make_job("j1", 3)
    jobs = submit(store, keys, job)
    engine = CommitEngine(store, keys)
    out = engine.commit(Plan(claims_for(job, ["m0", "m0", "m1"]), views(store, keys, 2), jobs))
    assert len(out.committed) == 3 and not out.conflicted
    # used on m0 = 2 tasks x (1000 mCPU, 1024 MiB)
    assert out.machines["m0"].alloc.used == (2000, 2048, 0)
    assert out.jobs["j1"].record.status is JobStatus.PLACED
    rep = check_store(store, keys, ["j1"])
    assert rep.ok, rep.violations
    assert rep.bound_tasks == 3


def _stale_setup(store, mode):
    """Two planners read the same snapshot; the first fills m0 to 3000 of 4000 mCPU."""
    keys = make_cell(store, 2)
    a, b = make_job("a", 3), make_job("b", 2)
    jobs = submit(store, keys, a, b)
    snap = views(store, keys, 2)
    first = CommitEngine(store, keys, mode).commit(Plan(claims_for(a, ["m0"] * 3), snap, {"a": jobs["a"]}))
    assert len(first.committed) == 3
    return keys, b, snap, jobs


def test_commit_sequence_mode_conflicts_on_any_change(store):
    keys, b, snap, jobs = _stale_setup(store, ConflictMode.SEQUENCE)
    out = CommitEngine(store, keys, ConflictMode.SEQUENCE).commit(
        Plan(claims_for(b, ["m0", "m1"]), snap, {"b": jobs["b"]}))
    # m0 changed -> its claim conflicts; m1 is untouched -> incremental commit keeps it.
    assert [c.machine_id for c in out.committed] == ["m1"]
    assert [(c.machine_id, why.kind) for c, why in out.conflicted] == [("m0", RefusalKind.MACHINE_CHANGED)]
    assert out.stats.conflicted_txns == 1 and out.stats.recommitted == 0
    assert check_store(store, keys).ok


def test_commit_resource_fit_recommits_what_still_fits(store):
    keys, b, snap, jobs = _stale_setup(store, ConflictMode.RESOURCE_FIT)
    # m0 has 3000/4000 used; one more 1000 mCPU task fits exactly, a second would not.
    out = CommitEngine(store, keys, ConflictMode.RESOURCE_FIT).commit(
        Plan(claims_for(b, ["m0", "m0"]), snap, {"b": jobs["b"]}))
    assert len(out.committed) == 1 and out.stats.recommitted == 1
    assert [(why.kind, why.resource) for _, why in out.conflicted] == [(RefusalKind.INSUFFICIENT_RESOURCE, "cpu")]
    assert out.machines["m0"].alloc.used == (4000, 4096, 0)
    assert check_store(store, keys).ok


def test_commit_all_or_nothing_gang_commits_nothing_on_conflict(store):
    keys = make_cell(store, 2)
    a, g = make_job("a", 3), make_job("g", 2, gang=True)
    jobs = submit(store, keys, a, g)
    snap = views(store, keys, 2)
    CommitEngine(store, keys).commit(Plan(claims_for(a, ["m0"] * 4)[:3], snap, {"a": jobs["a"]}))
    out = CommitEngine(store, keys).commit(Plan(claims_for(g, ["m0", "m0"]), snap, {"g": jobs["g"]}))
    assert out.committed == []
    assert len(out.conflicted) == 2
    assert out.machines["m0"].alloc.used == (3000, 3072, 0)
    assert check_store(store, keys).ok


def test_commit_chunks_plans_larger_than_one_txn(store):
    store.limits = StoreLimits(max_txn_ops=16, max_request_bytes=store.limits.max_request_bytes)
    keys = make_cell(store, 40)
    job = make_job("big", 40, cpu=100, mem=10)
    jobs = submit(store, keys, job)
    out = CommitEngine(store, keys).commit(Plan(claims_for(job, [f"m{i}" for i in range(40)]),
                                                views(store, keys, 40), jobs))
    # M machines + 1 job cost M + 2 <= 16 ops (compares: the allocation record per machine, the
    # job record and its claim; writes: the records and the job's queue entry) -> at most 14
    # machines a txn -> 3 txns.
    assert len(out.committed) == 40 and out.stats.txns == 3
    assert out.jobs["big"].record.status is JobStatus.PLACED
    assert check_store(store, keys).ok


def test_commit_gang_larger_than_one_txn_is_refused(store):
    store.limits = StoreLimits(max_txn_ops=16, max_request_bytes=store.limits.max_request_bytes)
    keys = make_cell(store, 10)
    job = make_job("gang", 10, gang=True)
    jobs = submit(store, keys, job)
    before = store.current_revision()
    with pytest.raises(GangTooLargeError, match="at most 7 machines"):
        CommitEngine(store, keys).commit(Plan(claims_for(job, [f"m{i}" for i in range(10)]),
                                              views(store, keys, 10), jobs))
    assert store.current_revision() == before


def test_commit_unknown_outcome_settles_without_double_binding(store):
    keys = make_cell(store, 2)
    job = make_job("u", 2)
    jobs = submit(store, keys, job)
    flaky = ScriptedFaultStore(store, lost_ack_at={1})  # applied, then the ack is lost
    out = CommitEngine(flaky, keys).commit(Plan(claims_for(job, ["m0", "m1"]), views(store, keys, 2), jobs))
    assert out.stats.unknown_outcomes == 1
    assert len(out.committed) == 2 and not out.conflicted
    rep = check_store(store, keys)
    assert rep.ok, rep.violations
    assert rep.bound_tasks == 2  # bound once, not retried into a second binding


@pytest.mark.parametrize("bad, error", [
    ("unknown_machine", UnknownMachineError),
    ("negative", InvalidResourceError),
    ("twice", InvalidInputError),
])
def test_commit_bad_plan_refused_whole(store, bad, error):
    keys = make_cell(store, 2)
    job = make_job("x", 2)
    jobs = submit(store, keys, job)
    claims = claims_for(job, ["m0", "m1"])
    if bad == "unknown_machine":
        claims[1] = Claim(claims[1].task_id, "nope", claims[1].request)
    elif bad == "negative":
        claims[1] = Claim(claims[1].task_id, "m1", (-1, 0, 0))
    else:
        claims[1] = claims[0]
    before = store.current_revision()
    with pytest.raises(error):
        CommitEngine(store, keys).commit(Plan(claims, views(store, keys, 2), jobs))
    assert store.current_revision() == before


def test_commit_many_small_jobs_in_one_plan_respect_success_op_limit(store):
    # 60 single-task jobs with queue entries of their own, each completing in the txn: 1 alloc
    # put + 1 job put + 1 entry delete per job, so a txn holds at most 128 // 3 = 42 of them;
    # the engine must chunk. (From one queue segment they write no entry: 60 fit one txn.)
    keys = make_cell(store, 60)
    jobs = [make_job(f"s{i}", 1) for i in range(60)]
    submit_each(store, keys, jobs)
    views_ = {j.id: read_job_view(store, keys, j.id) for j in jobs}
    claims = [Claim(task_id(j.id, 0, 0), f"m{i}", j.groups[0].request) for i, j in enumerate(jobs)]
    out = CommitEngine(store, keys).commit(Plan(claims, views(store, keys, 60), views_))
    assert len(out.committed) == 60 and out.stats.txns == 2
    assert check_store(store, keys, [j.id for j in jobs]).ok


def test_commit_in_flight_waves_match_sequential_outcome(store):
    # 150 single-task jobs need 3 txns (a compare per machine and per job: 64 a txn); with 4
    # in flight they go as one wave of disjoint chunks, and the merged result must be what
    # committing them one by one gives.
    keys = make_cell(store, 150)
    jobs = [make_job(f"w{i}", 1) for i in range(150)]
    views_ = submit(store, keys, *jobs)
    claims = [Claim(task_id(j.id, 0, 0), f"m{i}", j.groups[0].request) for i, j in enumerate(jobs)]
    engine = CommitEngine(store, keys, max_in_flight=4)
    try:
        out = engine.commit(Plan(claims, views(store, keys, 150), views_))
    finally:
        engine.close()
    assert len(out.committed) == 150 and out.stats.txns == 3 and not out.conflicted
    assert {c.task_id for c in out.committed} == {c.task_id for c in claims}
    assert all(v.record.status is JobStatus.PLACED for v in out.jobs.values())
    assert check_store(store, keys, [j.id for j in jobs]).ok
