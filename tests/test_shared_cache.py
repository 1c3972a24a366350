"""Scheduler loops of one process under one CPU baton on an in-process store share one copy
of the cell (schedulers/shared_cache.py): every job placed, the copy exact, nothing assumed
left over, the capacity-freed cue reaching every loop, and sharing refused where steps may
interleave."""

from __future__ import annotations

import random

import numpy as np
import pytest

from cellsched.cellstate.clock import RealClock
from cellsched.cellstate.faults import DelegatingStore
from cellsched.cellstate.invariants import check_store
from cellsched.cellstate.keys import CellKeys
from cellsched.cellstate.machines import add_machines
from cellsched.cellstate.model import Machine
from cellsched.cellstate.store.memory import MemoryStore
from cellsched.cellstate.submission import submit_jobs
from cellsched.schedulers import BATCH, CpuBaton, Scheduler
from cellsched.schedulers.cache import SchedulerCache
from cellsched.schedulers.cpu_baton import BatonStore
from cellsched.schedulers.settings import ThinkTime
from cellsched.schedulers.shared_cache import cache_for_loops

from .cellfactory import make_job, run_loops_until


class WatchCountingStore(DelegatingStore):
    def __init__(self, inner):
        super().__init__(inner)
        self.watches = 0

    def watch(self, prefix, start_revision):
        self.watches += 1
        return super().watch(prefix, start_revision)


def _cell(name: str, machines: int):
    raw, keys = MemoryStore(), CellKeys(name)
    add_machines(raw, keys, [Machine(f"m{i:02d}", (8000, 32768, 0)) for i in range(machines)])
    return raw, keys


@pytest.mark.parametrize("seed", [1, 2, 3, 4, 5, 6])
def test_loops_sharing_one_copy_place_everything_and_keep_it_exact_seeded(seed: int):
    """Seeded: 2-5 loops, random batch sizes and think times, every loop on the whole cell; on
    even seeds the loops' store calls hand the baton on, as on etcd, so another loop steps inside
    a loop's claim and commit, and with think time between its halves, while its assumptions sit
    in the shared copy. Every fitting task is placed, the store is clean, one watch feeds every
    loop, and at the end the copy's columns are the store's used vectors with nothing assumed left."""
    rng = random.Random(seed)
    remote = seed % 2 == 0
    raw, keys = _cell(f"sc{seed}", rng.randrange(6, 14))
    jobs = [make_job(f"j{i:03d}", rng.randrange(1, 5)) for i in range(rng.randrange(30, 70))]
    submit_jobs(raw, keys, jobs, now=0.0)
    store = WatchCountingStore(raw)
    baton = CpuBaton()
    think = rng.choice([0.0, 0.002])
    settings = [BATCH.with_(idle_poll_s=0.001, claim_batch=rng.choice([4, 8, 16]), seed=seed * 10 + k,
                            think_time=ThinkTime(think, 0.0)) for k in range(rng.randrange(2, 6))]
    cache = cache_for_loops(store, keys, settings, baton)
    assert cache is not None
    loop_store = BatonStore(store, baton) if remote else store  # the copy itself reads through `store`
    scheds = [Scheduler(f"s{k}", loop_store, keys, s, RealClock(), baton=baton, cache=cache)
              for k, s in enumerate(settings)]
    assert all(s._whole_steps is not remote for s in scheds)
    total = sum(j.task_count for j in jobs)
    fits = 8 * len(raw.get_prefix(keys.spec_prefix)[0])
    run_loops_until(scheds, min(total, fits))
    assert sum(s.raw_metrics.tasks_placed for s in scheds) == min(total, fits)
    assert check_store(raw, keys, [j.id for j in jobs]).ok
    assert store.watches == 1  # one copy, one watch (each loop's own copy opens its own)
    assert all(s.cache is cache for s in scheds)
    cache.sync()
    assert cache.assumed_count == 0
    for mid, i in cache.index.items():
        alloc = raw.get(keys.alloc(mid))
        used = np.asarray(cache.columns.host_used[i])
        expected = np.zeros_like(used) if alloc is None else np.asarray(cache.alloc(i).used)
        assert (used == expected).all(), mid
    if remote:
        assert baton.handoffs > 0
    elif think == 0.0:  # whole steps under one hold: no loop commits between another's decision and commit
        assert sum(s.raw_metrics.commits.conflicted_txns for s in scheds) == 0
    for s in scheds:
        s.close()
    cache.close()


def test_capacity_freed_on_a_shared_copy_reaches_every_loop():
    """The loop whose sync applies the change and the one that syncs after it both get the cue
    to look at their parked jobs (the second's own sync finds nothing new to apply)."""
    raw, keys = _cell("cf", 2)
    baton = CpuBaton()
    settings = [BATCH, BATCH]
    cache = cache_for_loops(raw, keys, settings, baton)
    a, b = (Scheduler(n, raw, keys, s, RealClock(), baton=baton, cache=cache) for n, s in zip("ab", settings, strict=True))
    a._sync()
    b._sync()
    a.claimer._freed = b.claimer._freed = False
    add_machines(raw, keys, [Machine("m99", (8000, 32768, 0))])  # capacity appears
    a._sync()
    assert a.claimer._freed
    assert not cache.refresh()  # nothing left for b's sync to apply ...
    b._sync()
    assert b.claimer._freed  # ... and b is told all the same
    b.claimer._freed = False
    b._sync()
    assert not b.claimer._freed  # once
    a.close()
    assert cache._watch is not None  # a loop does not close the copy it shares
    b.close()
    cache.close()


def test_a_shared_copy_is_refused_where_steps_may_interleave():
    raw, keys = _cell("rf", 1)
    baton = CpuBaton()
    cache = cache_for_loops(raw, keys, [BATCH, BATCH], baton)
    assert cache is not None
    with pytest.raises(ValueError, match="shared cache"):
        Scheduler("nobaton", raw, keys, BATCH, RealClock(), cache=cache)
    remote = BatonStore(raw, baton)  # as baton_store wraps a client whose calls wait on another process
    handing_on = SchedulerCache(remote, keys)  # its sync could give the baton up half way
    with pytest.raises(ValueError, match="shared cache"):
        Scheduler("remote", remote, keys, BATCH, RealClock(), baton=baton, cache=handing_on)
    handing_on.close()
    loop = Scheduler("remote", remote, keys, BATCH, RealClock(), baton=baton, cache=cache)  # a copy that keeps it
    loop.close()
    assert cache_for_loops(remote, keys, [BATCH, BATCH], baton) is None  # its calls hand the baton on
    assert cache_for_loops(raw, keys, [BATCH, BATCH], None) is None  # no baton: loops interleave anywhere
    assert cache_for_loops(raw, keys, [BATCH], baton) is None  # nobody to share with
    assert cache_for_loops(raw, keys, [BATCH, BATCH.with_(max_tasks_per_machine=7)], baton) is None
    cache.close()
