"""One copy of the cell for the scheduler loops of one process (docs/architecture.md,
"Parallel schedulers: the CPU baton").

Loops that step under one CPU baton on a store in this process never interleave inside a
step: the baton is held from a step's sync to its commit's confirm, and no store call gives
it up. Each keeping its own copy of the cell would then only make the process apply every
commit once per loop (8 loops: 8 watch applications of every allocation write, on the same
cores), while the copies, read between steps, are all the same. Such loops share one
SchedulerCache instead. Its assumptions are keyed by task, and a task is held by one loop
only (its job's claim), so one loop's assume, confirm and forget never touch another's; each
loop sees the others' assumed claims, which a private copy would learn only from their commits.

Loops whose store calls wait on another process (etcd) give the baton up inside a step, so
another loop could run in the middle of a sync: they keep their own copies.
"""

from __future__ import annotations

from collections.abc import Sequence

from cellsched.cellstate.keys import CellKeys
from cellsched.cellstate.store import CellStore

from .cache import SchedulerCache
from .cpu_baton import BatonStore, CpuBaton, blocks_on_io
from .settings import SchedulerSettings


def can_share_cache(store: CellStore, baton: CpuBaton | None) -> bool:
    """Whether loops stepping under `baton` on `store` may share one copy of the cell."""
    return baton is not None and not isinstance(store, BatonStore) and not blocks_on_io(store)


def cache_for_loops(store: CellStore, keys: CellKeys, settings: Sequence[SchedulerSettings],
                    baton: CpuBaton | None) -> SchedulerCache | None:
    """A copy of the cell for every loop of `settings` to share, or None where each must keep its
    own: fewer than two loops, steps that may interleave, or loops that count a machine's task
    limit or choose the array backend differently (a copy is built for one of each)."""
    if len(settings) < 2 or not can_share_cache(store, baton):
        return None
    if len({(s.max_tasks_per_machine, s.array_backend) for s in settings}) != 1:
        return None
    return SchedulerCache(store, keys, settings[0].max_tasks_per_machine, settings[0].array_backend)
