"""A pipelined scheduler that holds nothing claims a slice of a big batch first, and the
prefetch claims the next whole batch while that slice is decided and committed
(schedulers/claiming.py, COLD_START_SLICE)."""

from __future__ import annotations

from cellsched.cellstate.clock import SimClock
from cellsched.cellstate.store.memory import MemoryStore
from cellsched.cellstate.submission import submit_jobs
from cellsched.schedulers import claiming
from cellsched.schedulers.core import Scheduler
from cellsched.schedulers.settings import BATCH

from .cellfactory import fills_room, make_cell, make_job


def _scheduler(claim_batch: int, in_flight: int):
    clock = SimClock()
    store = MemoryStore(clock=clock)
    keys = make_cell(store, 50, cpu=1_000_000, mem=1 << 30)
    submit_jobs(store, keys, [make_job(f"j{i:05d}", 1, cpu=10, mem=10) for i in range(3000)], now=0.0)
    return Scheduler("s", store, keys, BATCH.with_(claim_batch=claim_batch, txns_in_flight=in_flight), clock)


def test_a_cold_pipelined_scheduler_claims_a_slice_then_whole_batches():
    s = _scheduler(1024, 4)
    try:
        attempt = s.prepare()
        assert attempt is not None and fills_room(len(attempt.decisions), 1024 // claiming.COLD_START_SLICE,
                                                  s.store.limits)
        s.complete(attempt)
        attempt = s.prepare()  # the prefetch claimed a whole batch meanwhile
        assert attempt is not None and fills_room(len(attempt.decisions), 1024, s.store.limits)
        s.complete(attempt)
    finally:
        s.close()


def test_small_batches_and_unpipelined_schedulers_claim_whole():
    for batch, in_flight in ((claiming.COLD_START_MIN_BATCH - 1, 4), (1024, 1)):
        s = _scheduler(batch, in_flight)
        try:
            attempt = s.prepare()
            assert attempt is not None and fills_room(len(attempt.decisions), batch, s.store.limits)
            s.complete(attempt)
        finally:
            s.close()
