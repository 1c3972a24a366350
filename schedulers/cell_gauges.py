"""What the cell holds, read from the store for the metrics (schedulers/prometheus_text.py):
capacity and used per resource, pending jobs per class. Reads every spec and allocation value
and every queue entry: an API process does this per scrape, not a scheduler per step."""

from __future__ import annotations

from cellsched.cellstate import codec
from cellsched.cellstate.keys import CellKeys
from cellsched.cellstate.model import JobClass
from cellsched.cellstate.resources import RESOURCE_NAMES
from cellsched.cellstate.store import CellStore


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
    """Pending index entries per job class (parked jobs are not in the queue)."""
    return {cls.value: len(store.get_prefix(keys.queue_prefix(cls))[0]) for cls in JobClass}
