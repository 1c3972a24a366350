"""Durable submission, lease-bound claims, parking, retention and compaction."""

from __future__ import annotations

import time

from cellsched.cellstate.claims import claim_entries, claim_jobs, list_parked, list_queue, park_job
from cellsched.cellstate.commit import CommitEngine, Plan
from cellsched.cellstate.invariants import check_store
from cellsched.cellstate.lifecycle import release_tasks
from cellsched.cellstate.model import Claim, JobClass, JobStatus, TaskOutcome, task_id
from cellsched.cellstate.retention import compact_history, purge_finished
from cellsched.cellstate.submission import submit_jobs
from cellsched.cellstate.validation import RefusalKind
from cellsched.cellstate.views import read_job_view
from tests.cellfactory import make_cell, make_job, submit_each, views


def test_submission_bulk_writes_job_and_queue_entry_together(store):
    keys = make_cell(store, 1)
    jobs = [make_job(f"j{i}", 1) for i in range(150)]  # more than one txn's worth
    result = submit_jobs(store, keys, jobs, now=5.0)
    assert len(result.accepted) == 150
    assert len(list_queue(store, keys, JobClass.BATCH)) == 150
    assert check_store(store, keys, [j.id for j in jobs]).ok


def test_submission_claims_are_exclusive_and_expire_with_the_lease(store):
    keys = make_cell(store, 1)
    submit_each(store, keys, [make_job(f"j{i}", 1) for i in range(5)])  # own entries: claims job by job
    lease_a = store.grant_lease(1)
    got_a = claim_jobs(store, keys, JobClass.BATCH, lease_a, "a", limit=3)
    lease_b = store.grant_lease(30)
    got_b = claim_jobs(store, keys, JobClass.BATCH, lease_b, "b", limit=10)
    assert len(got_a) == 3 and len(got_b) == 2
    assert not {v.record.job.id for v in got_a} & {v.record.job.id for v in got_b}
    # Scheduler a dies: its lease expires and its jobs return to the queue for b.
    deadline = time.monotonic() + 8
    taken = []
    while len(taken) < 3 and time.monotonic() < deadline:
        held_by_b = {v.record.job.id for v in got_b + taken}
        taken += claim_jobs(store, keys, JobClass.BATCH, lease_b, "b", limit=10, held=held_by_b)
        time.sleep(0.2)
    assert {v.record.job.id for v in taken} == {v.record.job.id for v in got_a}
    assert check_store(store, keys).ok


def test_submission_placed_job_leaves_queue_and_is_never_placed_twice(store):
    keys = make_cell(store, 2)
    submit_jobs(store, keys, [make_job("j", 2)], now=0.0)
    lease = store.grant_lease(30)
    [view] = claim_jobs(store, keys, JobClass.BATCH, lease, "a", limit=1)
    claims = [Claim(task_id("j", 0, i), f"m{i}", (1000, 1024, 0)) for i in range(2)]
    out = CommitEngine(store, keys).commit(Plan(claims, views(store, keys, 2), {"j": view}))
    assert len(out.committed) == 2
    assert list_queue(store, keys, JobClass.BATCH) == []
    # A second scheduler with the same stale view cannot bind the tasks again.
    again = CommitEngine(store, keys).commit(Plan(claims, views(store, keys, 2), {"j": view}))
    assert again.committed == [] and {why.kind for _, why in again.conflicted} == {RefusalKind.TASK_ALREADY_BOUND}
    report = check_store(store, keys, ["j"])
    assert report.ok and report.bound_tasks == 2


def test_submission_park_keeps_job_queued_with_reason(store):
    keys = make_cell(store, 1)
    submit_jobs(store, keys, [make_job("p", 1, cpu=4000)], now=0.0)
    lease = store.grant_lease(30)
    [view] = claim_jobs(store, keys, JobClass.BATCH, lease, "a", limit=1)
    parked = park_job(store, keys, view, "cpu: no machine has 4000 mCPU free", need=(4000, 0, 0))
    assert parked.record.status is JobStatus.PARKED
    # Parked jobs leave the pending queue for the parked index: pending claims never see them.
    assert list_queue(store, keys, JobClass.BATCH) == []
    assert list_parked(store, keys, JobClass.BATCH) == ["p"]
    assert claim_jobs(store, keys, JobClass.BATCH, lease, "a", limit=1) == []
    [again] = claim_entries(store, keys, store.get_prefix(keys.parked_prefix(JobClass.BATCH))[0], lease, "a", 1)
    assert again.record.reason.startswith("cpu")
    assert check_store(store, keys, ["p"]).ok


def test_submission_finished_jobs_are_retained_then_purged_and_history_compacted(store):
    keys = make_cell(store, 1)
    submit_jobs(store, keys, [make_job("f", 1)], now=0.0)
    view = read_job_view(store, keys, "f")
    CommitEngine(store, keys).commit(Plan([Claim("f/0/0", "m0", (1000, 1024, 0))], views(store, keys, 1),
                                          {"f": view}))
    release_tasks(store, keys, "f", ["f/0/0"], now=100.0)
    assert read_job_view(store, keys, "f").record.status is JobStatus.FINISHED
    assert purge_finished(store, keys, now=150.0, retention_s=60) == []
    assert purge_finished(store, keys, now=161.0, retention_s=60) == ["f"]
    assert read_job_view(store, keys, "f") is None
    assert check_store(store, keys).ok
    compacted = compact_history(store, keep_revisions=2)
    assert compacted == store.current_revision() - 2


def test_submission_failed_task_returns_to_queue(store):
    keys = make_cell(store, 1)
    submit_jobs(store, keys, [make_job("r", 1)], now=0.0)
    view = read_job_view(store, keys, "r")
    CommitEngine(store, keys).commit(Plan([Claim("r/0/0", "m0", (1000, 1024, 0))], views(store, keys, 1),
                                          {"r": view}))
    release_tasks(store, keys, "r", ["r/0/0"], now=1.0, outcome=TaskOutcome.FAILED)
    rec = read_job_view(store, keys, "r").record
    assert rec.status is JobStatus.PENDING and rec.unbound_tasks()
    assert list_queue(store, keys, JobClass.BATCH) == ["r"]
    assert check_store(store, keys, ["r"]).ok


def test_submission_release_spanning_more_machines_than_one_txn(store):
    from cellsched.cellstate.store import StoreLimits

    store.limits = StoreLimits(max_txn_ops=16, max_request_bytes=store.limits.max_request_bytes)
    keys = make_cell(store, 40)
    submit_jobs(store, keys, [make_job("wide", 40, cpu=100, mem=10)], now=0.0)
    view = read_job_view(store, keys, "wide")
    claims = [Claim(task_id("wide", 0, i), f"m{i}", (100, 10, 0)) for i in range(40)]
    assert len(CommitEngine(store, keys).commit(Plan(claims, views(store, keys, 40), {"wide": view})).committed) == 40
    release_tasks(store, keys, "wide", [c.task_id for c in claims], now=1.0)
    rec = read_job_view(store, keys, "wide").record
    assert rec.status is JobStatus.FINISHED and len(rec.done) == 40 and not rec.bound
    report = check_store(store, keys, ["wide"])
    assert report.ok and report.bound_tasks == 0


def test_submission_claims_orphaned_by_a_lost_ack_are_adopted(store):
    from cellsched.cellstate.errors import CommitOutcomeUnknown
    from cellsched.cellstate.faults import ScriptedFaultStore

    keys = make_cell(store, 1)
    submit_jobs(store, keys, [make_job(f"o{i}", 1) for i in range(3)], now=0.0)
    lease = store.grant_lease(30)
    flaky = ScriptedFaultStore(store, lost_ack_at={1})  # the first claim txn lands, its ack is lost
    try:
        claim_jobs(flaky, keys, JobClass.BATCH, lease, "a", limit=3)
        raise AssertionError("the injected lost ack should surface")
    except CommitOutcomeUnknown:
        pass
    # The claims landed under our lease; the next call hands them over instead of
    # leaving them stuck until the lease dies.
    adopted = claim_jobs(store, keys, JobClass.BATCH, lease, "a", limit=3, held=set())
    assert sorted(v.record.job.id for v in adopted) == ["o0", "o1", "o2"]
    assert claim_jobs(store, keys, JobClass.BATCH, lease, "a", limit=3, held={"o0", "o1", "o2"}) == []
