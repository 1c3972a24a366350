"""Retention and compaction on a schedule, in simulated time."""

from __future__ import annotations

from cellsched.cellstate.clock import SimClock
from cellsched.cellstate.commit import CommitEngine, Plan
from cellsched.cellstate.errors import CompactedError
from cellsched.cellstate.housekeeping import Housekeeper
from cellsched.cellstate.lifecycle import release_tasks
from cellsched.cellstate.memory_store import MemoryStore
from cellsched.cellstate.model import Claim
from cellsched.cellstate.submission import submit_jobs
from cellsched.cellstate.views import read_job_view
from tests.cellfactory import make_cell, make_job, views


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
