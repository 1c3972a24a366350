"""An idle scheduler loop: it claims every idle_poll_s but follows the watch only every
idle_sync_s (schedulers/settings.py), and a job that arrives meanwhile is decided after a sync."""

from __future__ import annotations

import pytest

from cellsched.cellstate.clock import SimClock
from cellsched.cellstate.errors import InvalidInputError
from cellsched.cellstate.model import JobStatus
from cellsched.cellstate.store.memory import MemoryStore
from cellsched.cellstate.views import read_job_view
from cellsched.schedulers.core import Scheduler
from cellsched.schedulers.settings import BATCH
from tests.cellfactory import make_cell, make_job, submit


def counted(scheduler: Scheduler) -> dict[str, int]:
    calls = {"sync": 0, "claim": 0}
    sync, claim = scheduler.cache.sync, scheduler._claim

    def counting_sync(*a, **kw):
        calls["sync"] += 1
        return sync(*a, **kw)

    def counting_claim(*a, **kw):
        calls["claim"] += 1
        return claim(*a, **kw)

    scheduler.cache.sync, scheduler._claim = counting_sync, counting_claim
    return calls


@pytest.mark.parametrize("idle_sync_s", [0.5, 0.0])
def test_an_idle_loop_claims_every_poll_and_syncs_every_idle_sync_s(idle_sync_s):
    clock = SimClock()
    store = MemoryStore(clock=clock)
    keys = make_cell(store, 4)
    s = Scheduler("b0", store, keys, BATCH.with_(idle_poll_s=0.05, idle_sync_s=idle_sync_s), clock)
    calls = counted(s)
    s.run(clock.now() + 5.0)  # 100 idle steps of simulated time
    assert calls["claim"] >= 95
    if idle_sync_s:
        assert calls["sync"] <= 5.0 / idle_sync_s + 2  # the first step's, then one per idle_sync_s
    else:
        assert calls["sync"] >= calls["claim"]  # 0: every step follows the watch, as before

    # A job submitted while the loop is idle: claimed at the next step and decided after a sync.
    submit(store, keys, make_job("late", 1, cpu=1000))
    before = calls["sync"]
    assert s.step()
    assert calls["sync"] > before
    assert read_job_view(store, keys, "late").record.status is JobStatus.PLACED


def test_a_negative_idle_sync_is_refused_by_name():
    with pytest.raises(InvalidInputError, match="idle_sync_s"):
        BATCH.with_(idle_sync_s=-1)
