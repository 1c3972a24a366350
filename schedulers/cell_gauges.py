"""What the cell holds, read from the store for the metrics (schedulers/prometheus_text.py):
capacity and used per resource, pending jobs per class; and for the /ui dashboard each
machine's heat. Reads every spec and allocation value and every queue entry: an API process
does this per scrape or refresh, not a scheduler per step."""

from __future__ import annotations

from dataclasses import dataclass

from cellsched.cellstate import codec
from cellsched.cellstate.index_entry import listed_jobs
from cellsched.cellstate.keys import CellKeys
from cellsched.cellstate.model import JobClass, Machine, MachineState
from cellsched.cellstate.resources import RESOURCE_NAMES
from cellsched.cellstate.resources import ZERO as RESOURCE_ZERO
from cellsched.cellstate.store import CellStore, Get


def cell_totals(store: CellStore, keys: CellKeys) -> tuple[dict[str, int], dict[str, int]]:
    """(capacity, used) per resource over every machine of the cell, in base units."""
    capacity = dict.fromkeys(RESOURCE_NAMES, 0)
    used = dict.fromkeys(RESOURCE_NAMES, 0)
    specs, _ = store.get_prefix(keys.spec_prefix)
    for kv in specs:
        for r, n in zip(RESOURCE_NAMES, codec.decode_machine(kv.key, kv.value).capacity, strict=True):
            capacity[r] += n
    allocs, _ = store.get_prefix(keys.alloc_prefix)
    for kv in allocs:
        summary = codec.alloc_summary(kv.value)
        vec = summary[0] if summary is not None else codec.decode_alloc(kv.key, kv.value).used
        for r, n in zip(RESOURCE_NAMES, vec, strict=True):
            used[r] += n
    return capacity, used


def queue_lengths(store: CellStore, keys: CellKeys) -> dict[str, int]:
    """The jobs the pending index lists, per job class (parked jobs are not in the queue; a
    queue segment counts the jobs it lists until it goes: cellstate/queue_segments.py)."""
    return {cls.value: listed_jobs(store.get_prefix(keys.queue_prefix(cls))[0]) for cls in JobClass}


# A machine's cell in the /ui heatmap: its fullest resource in percent (rounded up, so any use
# shows), or one of these when it takes no new tasks.
HEAT_DRAINING = -1
HEAT_DOWN = -2


@dataclass(frozen=True, slots=True)
class Heat:
    revision: int  # the store revision read at: the next `since`
    total: int  # machines in the cell now
    full: bool  # every machine is listed (not only those changed since `since`)
    ids: list[str]
    heat: list[int]


def _heat_of(machine: Machine, used) -> int:
    if machine.state is MachineState.DOWN:
        return HEAT_DOWN
    if machine.state is MachineState.DRAINING:
        return HEAT_DRAINING
    return min(100, max((-(-100 * u // c) for u, c in zip(used, machine.capacity, strict=True) if c > 0), default=0))


def machine_heat(store: CellStore, keys: CellKeys, since: int = 0) -> Heat:
    """Each machine's heat, in one consistent read; with `since` (a revision an earlier answer
    carried) only the machines whose spec or allocation record has a newer mod_revision.
    `since` 0 or ahead of the store (another store, restarted) lists every machine. A machine
    removed since is not named: a reader sees it in `total` and asks again from 0."""
    result = store.txn([], [Get(keys.spec_prefix, prefix=True), Get(keys.alloc_prefix, prefix=True)])
    specs, allocs = result.reads
    revision = result.revision
    alloc_of = {keys.last_segment(kv.key): kv for kv in allocs}
    full = since <= 0 or since > revision
    if full:
        changed = specs
    else:
        changed = [kv for kv in specs if kv.mod_revision > since
                   or ((a := alloc_of.get(keys.last_segment(kv.key))) is not None and a.mod_revision > since)]
    ids, heat = [], []
    for m in codec.decode_machines(changed):
        a = alloc_of.get(m.id)
        used = RESOURCE_ZERO
        if a is not None:
            summary = codec.alloc_summary(a.value)
            used = summary[0] if summary is not None else codec.decode_alloc(a.key, a.value).used
        ids.append(m.id)
        heat.append(_heat_of(m, used))
    return Heat(revision, len(specs), full, ids, heat)
