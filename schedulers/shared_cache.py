"""One copy of the cell for the scheduler loops of one process (docs/architecture.md,
"Parallel schedulers: the CPU baton").

Loops under one CPU baton step one at a time, and a loop gives the baton up only inside its
own store calls (on a store that waits on another process: schedulers/cpu_baton.py), never
inside an operation on its copy of the cell: sync, assume, confirm and forget make no store
call, except the copy's own snapshot and watch, which keep the baton as long as the copy reads
through a client that is not a BatonStore. Each keeping its own copy would only make the
process apply every commit once per loop on the same cores, and let a loop decide without
seeing what another has assumed while its commit is on the wire. Such loops share one
SchedulerCache instead. Its assumptions are keyed by task, and a task is held by one loop only
(its job's claim), so one loop's assume, confirm and forget never touch another's.
"""

from __future__ import annotations

from collections.abc import Sequence

from cellsched.cellstate.keys import CellKeys
from cellsched.cellstate.store import CellStore

from .cache import SchedulerCache
from .cpu_baton import BatonStore, CpuBaton
from .settings import SchedulerSettings


def can_share_cache(store: CellStore, baton: CpuBaton | None) -> bool:
    """Whether loops stepping under `baton` may share a copy of the cell that reads through
    `store`: only if they have a baton, and the copy's own calls keep it (not a BatonStore)."""
    return baton is not None and not isinstance(store, BatonStore)


def cache_for_loops(store: CellStore, keys: CellKeys, settings: Sequence[SchedulerSettings],
                    baton: CpuBaton | None) -> SchedulerCache | None:
    """A copy of the cell, read through `store` (a client whose calls keep the baton), for every
    loop of `settings` to share; None where each must keep its own: fewer than two loops, no
    baton (steps may interleave anywhere), or loops that count a machine's task limit or choose
    the array backend differently (a copy is built for one of each)."""
    if len(settings) < 2 or not can_share_cache(store, baton):
        return None
    if len({(s.max_tasks_per_machine, s.array_backend) for s in settings}) != 1:
        return None
    return SchedulerCache(store, keys, settings[0].max_tasks_per_machine, settings[0].array_backend)
