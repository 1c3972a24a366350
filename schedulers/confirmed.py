"""The scheduler cache's confirmed layer (schedulers/cache.py): the cell's machines exactly
as the store holds them, one row each.

NumPy columns (``capacity``, ``used``, revisions, ``schedulable``) and the machine and
allocation records, built from one consistent snapshot (a single txn reading every spec and
allocation record), then kept fresh by a watch from snapshot revision + 1: no gaps, no
duplicates, since an event is applied only if it is newer than the row it changes. A
compacted watch triggers a full resync; a broken stream is reopened from the last revision
seen. A machine at its task limit is unschedulable, so the kernels stop picking it before
the validator refuses it. An allocation record is kept encoded until something asks for
its tasks (``alloc(i)``): its used vector and task count come off the value's head
(``codec.alloc_summary``), so a snapshot of a 100,000-machine cell parses no task map;
the snapshot's machine records are parsed as one JSON document (``codec.decode_machines``)
and its rows written one column at a time (``_load_snapshot``). ``dirty`` names the rows
changed since the columns last took them; ``_stale`` says rows were added or renumbered.

The assumed layer (SchedulerCache) hooks in around a snapshot and after each allocation
record is applied; this module knows nothing of claims.
"""

from __future__ import annotations

import numpy as np

from cellsched.cellstate import codec
from cellsched.cellstate.errors import CompactedError, StoreUnavailableError
from cellsched.cellstate.keys import CellKeys
from cellsched.cellstate.model import AllocationRecord, Machine, MachineState
from cellsched.cellstate.resources import NUM_RESOURCES
from cellsched.cellstate.schema import check_schema
from cellsched.cellstate.store import CellStore, EventType, Get, Watch, WatchEvent


class ConfirmedMachines:
    def __init__(self, store: CellStore, keys: CellKeys, max_tasks: int):
        self.store = store
        self.keys = keys
        self.max_tasks = max_tasks
        self.resyncs = 0
        self.reconnects = 0
        self._watch: Watch | None = None
        self._stale = True

    # Hooks for the layer above: around a snapshot, and after an allocation record landed on row i.
    def _before_snapshot(self) -> None:
        pass

    def _after_snapshot(self) -> None:
        pass

    def _alloc_applied(self, i: int) -> None:
        pass

    def resync(self) -> None:
        """Full snapshot: used at start, and after a compaction left a gap."""
        if self._watch is not None:
            self._watch.close()
            self._watch = None
        result = self.store.txn([], [Get(self.keys.spec_prefix, prefix=True),
                                     Get(self.keys.alloc_prefix, prefix=True), Get(self.keys.schema)])
        spec_kvs, alloc_kvs, schema_kvs = result.reads
        check_schema(self.keys, schema_kvs[0] if schema_kvs else None, cell_has_data=bool(spec_kvs))
        self._before_snapshot()
        self.ids: list[str] = []
        self.index: dict[str, int] = {}
        self.machines: list[Machine] = []
        self._allocs: list[AllocationRecord | None] = []  # None: still encoded, in _alloc_raw
        self._alloc_raw: list[bytes | None] = []
        n = max(16, len(spec_kvs))
        self.capacity = np.zeros((n, NUM_RESOURCES), dtype=np.int64)
        self.used = np.zeros((n, NUM_RESOURCES), dtype=np.int64)
        self.spec_rev = np.zeros(n, dtype=np.int64)
        self.alloc_rev = np.zeros(n, dtype=np.int64)
        self.schedulable = np.zeros(n, dtype=bool)
        self.task_count = np.zeros(n, dtype=np.int64)
        self.dirty: set[int] = set()  # confirmed rows changed since the columns last refreshed
        machines = codec.decode_machines(spec_kvs)
        if len({m.id for m in machines}) == len(machines):
            self._load_snapshot(machines, spec_kvs, alloc_kvs)
        else:  # two keys naming one machine id: record by record, as the watch would apply them
            for kv in spec_kvs:
                self._apply_spec(kv.key, kv.value, kv.mod_revision)
            for kv in alloc_kvs:
                self._apply_alloc(kv.key, kv.value, kv.mod_revision)
        self.revision = result.revision
        self._after_snapshot()
        self._stale = True  # rows may be renumbered: the next refresh rebuilds the columns
        self._open_watch()

    def _load_snapshot(self, machines: list[Machine], spec_kvs, alloc_kvs) -> None:
        """The snapshot's rows in bulk, with the result of applying each record in turn
        (_apply_spec, then _apply_alloc) but one NumPy write per column, not one per row:
        at 100,000 machines the per-row writes cost about as much as the read itself."""
        k = len(machines)
        self.ids = [m.id for m in machines]
        self.index = {mid: i for i, mid in enumerate(self.ids)}
        self.machines = machines
        self._allocs = [None] * k
        self._alloc_raw = [None] * k
        if k:
            self.capacity[:k] = [m.capacity for m in machines]
            self.spec_rev[:k] = [kv.mod_revision for kv in spec_kvs]
        rows, used, counts, revs = [], [], [], []
        for kv in alloc_kvs:
            i = self.index.get(self.keys.last_segment(kv.key))
            if i is None:
                continue
            summary = codec.alloc_summary(kv.value)
            if summary is None:  # not as encode_alloc writes it: decode it whole now
                rec = codec.decode_alloc(kv.key, kv.value)
                self._allocs[i] = rec
                summary = rec.used, len(rec.tasks)
            else:
                self._alloc_raw[i] = kv.value
            rows.append(i)
            used.append(summary[0])
            counts.append(summary[1])
            revs.append(kv.mod_revision)
        if rows:
            self.used[rows] = used
            self.task_count[rows] = counts
            self.alloc_rev[rows] = revs
        for i in range(k):
            if self._allocs[i] is None and self._alloc_raw[i] is None:
                self._allocs[i] = AllocationRecord()  # a machine without an allocation record yet
        up = np.fromiter((m.state is MachineState.UP for m in machines), dtype=bool, count=k)
        self.schedulable[:k] = up & (self.task_count[:k] < self.max_tasks)
        self.dirty.update(range(k))
        for i in rows:
            self._alloc_applied(i)

    def _open_watch(self) -> Watch:
        self._watch = self.store.watch(self.keys.node_prefix, self.revision + 1)
        return self._watch

    def _row(self, mid: str) -> int:
        i = self.index.get(mid)
        if i is None:
            i = len(self.ids)
            if i >= len(self.capacity):
                self._grow()
            self.ids.append(mid)
            self.index[mid] = i
            self.machines.append(None)  # type: ignore[arg-type]
            self._allocs.append(AllocationRecord())
            self._alloc_raw.append(None)
            self._stale = True  # a new machine: the columns need a new row
        return i

    def _grow(self) -> None:
        n = 2 * len(self.capacity)
        for name in ("capacity", "used"):
            old = getattr(self, name)
            new = np.zeros((n, NUM_RESOURCES), dtype=np.int64)
            new[: len(old)] = old
            setattr(self, name, new)
        for name, dt in (("spec_rev", np.int64), ("alloc_rev", np.int64), ("schedulable", bool),
                         ("task_count", np.int64)):
            old = getattr(self, name)
            col = np.zeros(n, dtype=dt)
            col[: len(old)] = old
            setattr(self, name, col)

    def _apply_spec(self, key: str, value: bytes, rev: int) -> None:
        m = codec.decode_machine(key, value)
        i = self._row(m.id)
        if rev <= self.spec_rev[i]:
            return
        self.machines[i] = m
        self.capacity[i] = m.capacity
        self.spec_rev[i] = rev
        self._update_schedulable(i)
        self.dirty.add(i)

    def _apply_alloc(self, key: str, value: bytes, rev: int) -> None:
        mid = self.keys.last_segment(key)
        i = self.index.get(mid)
        if i is None or rev <= self.alloc_rev[i]:
            return
        summary = codec.alloc_summary(value)
        if summary is None:  # not as encode_alloc writes it: decode it whole now
            self.set_alloc(i, codec.decode_alloc(key, value))
        else:
            self._allocs[i], self._alloc_raw[i] = None, value
            self.used[i], self.task_count[i] = summary
        self.alloc_rev[i] = rev
        self._update_schedulable(i)
        self._alloc_applied(i)
        self.dirty.add(i)

    def alloc(self, i: int) -> AllocationRecord:
        """Row i's allocation record, decoded on first use."""
        rec = self._allocs[i]
        if rec is None:
            rec = codec.decode_alloc(self.keys.alloc(self.ids[i]), self._alloc_raw[i] or b"")
            self._allocs[i], self._alloc_raw[i] = rec, None
        return rec

    def set_alloc(self, i: int, rec: AllocationRecord) -> None:
        """Row i's allocation record is now `rec` (decoded); the caller sets its revision."""
        self._allocs[i], self._alloc_raw[i] = rec, None
        self.used[i] = rec.used
        self.task_count[i] = len(rec.tasks)

    def _update_schedulable(self, i: int) -> None:
        m = self.machines[i]
        self.schedulable[i] = m is not None and m.state is MachineState.UP \
            and self.task_count[i] < self.max_tasks

    def poll(self, timeout: float = 0.0) -> int:
        """Apply every change available now (waiting up to `timeout` for one) to the
        confirmed layer. Returns how many."""
        try:
            watch = self._watch if self._watch is not None else self._open_watch()
            events = watch.get(timeout)
        except CompactedError:
            self.resyncs += 1
            self.resync()
            return 0
        except StoreUnavailableError:
            self.reconnects += 1
            self._watch = None
            return 0
        for ev in events:
            self._apply_event(ev)
        return len(events)

    def _apply_event(self, ev: WatchEvent) -> None:
        if ev.key.startswith(self.keys.spec_prefix):
            if ev.type is EventType.PUT:
                self._apply_spec(ev.key, ev.value, ev.mod_revision)
            else:
                i = self.index.get(self.keys.last_segment(ev.key))
                if i is not None:  # a removed machine stays as an unschedulable row
                    self.schedulable[i] = False
                    self.spec_rev[i] = ev.mod_revision
                    self.dirty.add(i)
        elif ev.key.startswith(self.keys.alloc_prefix):
            if ev.type is EventType.PUT:
                self._apply_alloc(ev.key, ev.value, ev.mod_revision)
        if ev.mod_revision > self.revision:
            self.revision = ev.mod_revision
