"""What one heatmap refresh sends (docs/architecture.md, "Observability", the `/ui` dashboard):
the machines that changed as ids and heats, or, when that would be bigger, every machine's heat
as one byte in id order (base64, `dense`), without ids. A delta in which all 10,000 machines
changed is then about 13 KB instead of 100 KB or more (ids of any length), so no refresh after
the first grows with the ids.

The page holds the id order from its last full frame; `digest` names that order, and a dense
frame whose digest differs (a machine added and another removed since) makes the page ask for a
full frame again, as a `total` it does not hold already does.
"""

from __future__ import annotations

import base64
import hashlib

from cellsched.cellstate.keys import CellKeys
from cellsched.cellstate.store import CellStore
from cellsched.schedulers.cell_gauges import machine_heat

from .models_ui import Heatmap

# JSON per changed machine in a sparse delta: its quoted id, a comma, a heat of up to 3 digits
# and its comma.
SPARSE_BYTES_OVER_ID = 7


def ids_digest(ids: list[str]) -> str:
    return hashlib.blake2b("\n".join(ids).encode(), digest_size=8).hexdigest()


def dense(heat: list[int]) -> str:
    """One byte per machine: 0-100 percent, 101 draining (-1), 102 down (-2)."""
    return base64.b64encode(bytes(h if h >= 0 else 100 - h for h in heat)).decode("ascii")


def heatmap_frame(store: CellStore, keys: CellKeys, since: int) -> Heatmap:
    h = machine_heat(store, keys, since)
    if h.full:
        return Heatmap(revision=h.revision, total=h.total, full=True, ids=h.ids, heat=h.heat, digest=ids_digest(h.ids))
    sparse = sum(len(i) + SPARSE_BYTES_OVER_ID for i in h.ids)
    if sparse <= 4 * (h.total + 2) // 3:
        return Heatmap(revision=h.revision, total=h.total, full=False, ids=h.ids, heat=h.heat)
    # Every machine's heat, from a second consistent read: its revision is the one answered,
    # and its id order the one the digest names.
    every = machine_heat(store, keys, 0)
    return Heatmap(revision=every.revision, total=every.total, full=False, ids=[], heat=[], dense=dense(every.heat),
                   digest=ids_digest(every.ids))
