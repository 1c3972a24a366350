"""A backlog never slows a claim: a scheduler step reads the same from the store whether
1,000 or 20,000 jobs wait in its queue (the claim path pages the queue from its head)."""

from __future__ import annotations

from cellsched.cellstate.clock import SimClock
from cellsched.cellstate.faults import CountingStore
from cellsched.cellstate.invariants import check_store
from cellsched.cellstate.store import StoreLimits
from cellsched.cellstate.store.memory import MemoryStore
from cellsched.cellstate.submission import submit_jobs
from cellsched.schedulers.core import Scheduler
from cellsched.schedulers.settings import BATCH

from .cellfactory import fills_room, make_cell, make_job


def _one_step_reads(queued: int) -> tuple[int, int, int]:
    clock = SimClock()
    store = CountingStore(MemoryStore(clock=clock))
    keys = make_cell(store, 64, cpu=256_000, mem=10**7)
    jobs = [make_job(f"j{i:06d}", 1, cpu=100, mem=100) for i in range(queued)]
    for k in range(0, queued, 2_000):
        submit_jobs(store, keys, jobs[k:k + 2_000], now=0.0)
    s = Scheduler("b0", store, keys, BATCH, clock)  # its cache's snapshot is read here, not in the step
    store.reset()
    assert s.step()
    reads = store.keys_read[""], store.gets[""], s.metrics()["jobs_placed"]
    assert check_store(store, keys).ok  # (its reads come after the counts are taken)
    return reads


def test_a_step_reads_the_same_at_1000_and_20000_queued_jobs():
    small, large = _one_step_reads(1_000), _one_step_reads(20_000)
    assert small[2] == large[2]  # each step placed a whole batch (of whole queue segments)
    assert fills_room(small[2], BATCH.claim_batch, StoreLimits())
    keys_small, keys_large = small[0], large[0]
    gets_small, gets_large = small[1], large[1]
    assert keys_large <= 1.1 * keys_small, (small, large)
    assert gets_large <= 1.1 * gets_small, (small, large)
