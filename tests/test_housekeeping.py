"""Retention and compaction on a schedule, in simulated time: bounded, paged, and\nresilient to one step failing."""

from __future__ import annotations

import pytest

from cellsched.cellstate.clock import SimClock
from cellsched.cellstate.commit import CommitEngine, Plan
from cellsched.cellstate.errors import CompactedError, InvalidInputError, StoreUnavailableError
from cellsched.cellstate.housekeeping import Housekeeper
from cellsched.cellstate.invariants import check_store
from cellsched.cellstate.lifecycle import release_tasks
from cellsched.cellstate.model import Claim, Job, JobStatus, TaskGroup, TaskOutcome
from cellsched.cellstate.retention import RetentionSweep, purge_finished
from cellsched.cellstate.store import Get
from cellsched.cellstate.store.memory import MemoryStore
from cellsched.cellstate.submission import submit_jobs
from cellsched.cellstate.views import read_job_view
from tests.cellfactory import make_cell, make_job, views
from tests.storespy import SpyStore


def test_housekeeping_purges_after_retention_and_compacts_on_schedule():
    clock = SimClock(1000.0)
    store = MemoryStore(clock=clock)
    keys = make_cell(store, 1)
    keeper = Housekeeper(store, keys, clock, retention_s=300, every_s=60, keep_revisions=1)
    submit_jobs(store, keys, [make_job("h", 1)], now=clock.now())
    CommitEngine(store, keys).commit(Plan([Claim("h/0/0", "m0", (1000, 1024, 0))], views(store, keys, 1),
                                          {"h": read_job_view(store, keys, "h")}))
    release_tasks(store, keys, "h", ["h/0/0"], now=clock.now())
    first_rev = 2
    assert keeper.tick() and keeper.compactions == 1
    assert not keeper.tick()  # not due again until every_s has passed
    try:
        store.watch(keys.root, first_rev)
        raise AssertionError("history before the compaction should be gone")
    except CompactedError:
        pass
    clock.advance(200)
    assert keeper.tick() and keeper.purged == 0  # finished 200 s ago: still retained
    clock.advance(150)
    assert keeper.tick() and keeper.purged == 1 and list(keeper.recently_purged) == ["h"]
    assert read_job_view(store, keys, "h") is None


def finish(store, keys, jid: str, now: float, outcome: TaskOutcome = TaskOutcome.FINISHED) -> None:
    """Submit a one-task job, place it on m0 and end it with `outcome` at `now`."""
    submit_jobs(store, keys, [Job(jid, (TaskGroup("g", 1, (1000, 1024, 0)),), max_failures=0)], now=now)
    CommitEngine(store, keys).commit(Plan([Claim(f"{jid}/0/0", "m0", (1000, 1024, 0))], views(store, keys, 1),
                                          {jid: read_job_view(store, keys, jid)}))
    release_tasks(store, keys, jid, [f"{jid}/0/0"], now=now, outcome=outcome)


def test_housekeeping_purges_failed_jobs_past_retention_too(store):
    clock = SimClock(1000.0)
    keys = make_cell(store, 1)
    finish(store, keys, "bad", clock.now(), TaskOutcome.FAILED)
    finish(store, keys, "good", clock.now())
    assert read_job_view(store, keys, "bad").record.status is JobStatus.FAILED
    keeper = Housekeeper(store, keys, clock, retention_s=300, every_s=60)
    clock.advance(301)
    assert keeper.tick() and sorted(keeper.recently_purged) == ["bad", "good"]
    assert read_job_view(store, keys, "bad") is None and check_store(store, keys).ok


def test_housekeeping_purges_in_bounded_pages_resuming_from_its_cursor():
    clock = SimClock(1000.0)
    inner = MemoryStore(clock=clock)
    keys = make_cell(inner, 1)
    for i in range(5):
        finish(inner, keys, f"j{i}", clock.now())
    submit_jobs(inner, keys, [make_job("live", 1)], now=clock.now())  # pending: never purged
    spy = SpyStore(inner)
    keeper = Housekeeper(spy, keys, clock, retention_s=10, every_s=1, keep_revisions=10**9,
                         sweep=RetentionSweep(page_size=2, pages_per_step=1))
    clock.advance(10)
    per_tick = []
    for _ in range(4):
        before = keeper.purged
        clock.advance(1)
        assert keeper.tick()
        per_tick.append(keeper.purged - before)
    assert per_tick == [2, 2, 1, 0]  # 6 records, 2 a tick; the empty fourth page ends the pass
    assert keeper.sweep.sweeps == 1 and keeper.sweep.cursor == ""
    job_reads = [g for txn in spy.gets() for g in txn if g.key == keys.jobs_prefix]
    assert len(job_reads) == 4 and all(g.prefix and g.limit == 2 for g in job_reads)
    finish(inner, keys, "late", clock.now())  # the next pass starts over and finds it
    clock.advance(11)
    keeper.tick()
    clock.advance(1)
    keeper.tick()
    assert "late" in keeper.recently_purged and read_job_view(inner, keys, "live") is not None


@pytest.mark.parametrize("error", [StoreUnavailableError("etcd unreachable"), CompactedError(5, 9)])
def test_housekeeping_a_failing_purge_does_not_stop_compaction_and_is_counted(error):
    clock = SimClock(1000.0)
    inner = MemoryStore(clock=clock)
    keys = make_cell(inner, 1)
    finish(inner, keys, "f", clock.now())
    broken = [True]

    def fail(success):
        reads_jobs = any(type(op) is Get and op.key == keys.jobs_prefix for op in success)
        return error if broken[0] and reads_jobs else None

    keeper = Housekeeper(SpyStore(inner, fail=fail), keys, clock, retention_s=0, every_s=1, keep_revisions=1)
    assert keeper.tick()
    assert keeper.compactions == 1 and keeper.failures == {"purge": 1} and keeper.purged == 0
    assert type(error).__name__ in keeper.last_error
    broken[0] = False
    clock.advance(1)
    assert keeper.tick() and keeper.purged == 1 and keeper.failures == {"purge": 1}


def test_retention_skips_corrupt_records_and_jobs_changed_since_the_read():
    clock = SimClock(1000.0)
    inner = MemoryStore(clock=clock)
    keys = make_cell(inner, 1)
    for jid in ("a", "b", "c"):
        finish(inner, keys, jid, clock.now())
    inner.put(keys.job("a0"), b"not json")  # sorts between a and b
    touched = []

    def after(compares, success, result):  # somebody rewrites job b right after the page read
        if not touched and any(type(op) is Get and op.key == keys.jobs_prefix for op in success):
            touched.append(True)
            kv = inner.get(keys.job("b"))
            inner.put(kv.key, kv.value)

    sweep = RetentionSweep(page_size=10)
    purged: list[str] = []
    assert sweep.step(SpyStore(inner, after), keys, clock.now() + 1, 0.0, purged.append)
    assert purged == ["a", "c"] and sweep.corrupt == 1
    assert read_job_view(inner, keys, "b") is not None  # its delete compared the old revision
    assert purge_finished(inner, keys, clock.now() + 1, 0.0) == ["b"]
    with pytest.raises(InvalidInputError):
        RetentionSweep(page_size=0)


def test_a_failed_job_whose_tasks_still_run_is_kept_until_they_leave(store):
    """Found by the stress run: a FAILED job past retention was purged while its other task
    still sat on a machine, leaving that task bound to a job that no longer existed."""
    clock = SimClock(1000.0)
    keys = make_cell(store, 2)
    submit_jobs(store, keys, [Job("f", (TaskGroup("g", 2, (1000, 1024, 0)),), max_failures=0)], now=clock.now())
    CommitEngine(store, keys).commit(Plan([Claim("f/0/0", "m0", (1000, 1024, 0)), Claim("f/0/1", "m1", (1000, 1024, 0))],
                                          views(store, keys, 2), {"f": read_job_view(store, keys, "f")}))
    release_tasks(store, keys, "f", ["f/0/0"], now=clock.now(), outcome=TaskOutcome.FAILED)
    rec = read_job_view(store, keys, "f").record
    assert rec.status is JobStatus.FAILED and list(rec.bound) == ["f/0/1"]  # its other task runs on
    keeper = Housekeeper(store, keys, clock, retention_s=300, every_s=60)
    clock.advance(301)
    assert keeper.tick() and keeper.purged == 0
    assert read_job_view(store, keys, "f") is not None and check_store(store, keys).ok
    release_tasks(store, keys, "f", ["f/0/1"], now=clock.now())  # its last task leaves
    clock.advance(61)
    assert keeper.tick() and list(keeper.recently_purged) == ["f"]
    assert read_job_view(store, keys, "f") is None and check_store(store, keys).ok
