"""The cell's key layout version, so a cell written in another layout is refused, not misread.

Layout 2 (this one, docs/architecture.md "Key schema") moved parked jobs to their own
index, put the submission sequence into queue keys and large jobs' bindings into
shards. A layout-1 reader would miss parked jobs and shards; a layout-2 reader would
misread layout-1 queue keys and job records. `/<cell>/schema` names the layout; the
first writer of a cell (adding machines) sets it, and every scheduler's snapshot checks it.
"""

from __future__ import annotations

from . import codec
from .errors import CorruptValueError, SchemaMismatchError
from .keys import CellKeys
from .store import CellStore, Get, KeyValue, ModRevisionIs, Put

LAYOUT = 2


def ensure_schema(store: CellStore, keys: CellKeys) -> None:
    """Mark the cell as ours if nobody has; refuse it if it is in another layout."""
    result = store.txn([ModRevisionIs(keys.schema, 0)], [Put(keys.schema, codec.encode_obj({"layout": LAYOUT}))],
                       [Get(keys.schema)])
    if not result.succeeded:
        check_schema(keys, result.reads[0][0] if result.reads[0] else None, cell_has_data=True)


def check_schema(keys: CellKeys, kv: KeyValue | None, cell_has_data: bool) -> None:
    """Raise SchemaMismatchError unless the cell is in this layout (or still empty)."""
    if kv is None:
        if cell_has_data:
            raise SchemaMismatchError(
                f"cell {keys.cell!r} has data but no {keys.schema} key: it was written by a cellsched "
                f"before key layout {LAYOUT}; migrate it or start a new cell")
        return
    try:
        layout = codec.decode_obj(kv.key, kv.value).get("layout")
    except CorruptValueError as exc:
        raise SchemaMismatchError(f"cell {keys.cell!r}: unreadable schema key: {exc}") from None
    if layout != LAYOUT:
        raise SchemaMismatchError(
            f"cell {keys.cell!r} is in key layout {layout!r}; this cellsched reads layout {LAYOUT} only")
