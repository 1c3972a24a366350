"""A scheduler's private, watch-fed copy of the cell's machines.

Built from one consistent snapshot (a single txn reading every spec and allocation
record), then kept fresh by a watch from snapshot revision + 1: no gaps, no duplicates,
since an event is applied only if it is newer than the row it changes. A compacted
watch triggers a full resync; a broken stream is reopened from the last revision seen.

Machines are NumPy columns (capacity, used, revisions, schedulable) for the scoring
kernels, plus the allocation records the commit engine extends.
"""

from __future__ import annotations

import numpy as np

from . import codec
from .errors import CompactedError, StoreUnavailableError
from .keys import CellKeys
from .model import AllocationRecord, Machine, MachineState
from .resources import NUM_RESOURCES
from .schema import check_schema
from .store import CellStore, EventType, Get, Watch, WatchEvent
from .validation import DEFAULT_MAX_TASKS_PER_MACHINE
from .views import MachineView


class LocalCellCopy:
    def __init__(self, store: CellStore, keys: CellKeys, max_tasks: int = DEFAULT_MAX_TASKS_PER_MACHINE):
        self.store = store
        self.keys = keys
        # A machine at its task limit is unschedulable in the columns, so the kernels stop
        # picking it before the commit validator has to refuse the claim.
        self.max_tasks = max_tasks
        self.resyncs = 0
        self.reconnects = 0
        self._watch: Watch | None = None
        self.resync()

    # -- building -------------------------------------------------------------

    def resync(self) -> None:
        """Full snapshot: used at start, and after a compaction left a gap."""
        if self._watch is not None:
            self._watch.close()
            self._watch = None
        result = self.store.txn([], [Get(self.keys.spec_prefix, prefix=True),
                                     Get(self.keys.alloc_prefix, prefix=True), Get(self.keys.schema)])
        spec_kvs, alloc_kvs, schema_kvs = result.reads
        check_schema(self.keys, schema_kvs[0] if schema_kvs else None, cell_has_data=bool(spec_kvs))
        self.ids: list[str] = []
        self.index: dict[str, int] = {}
        self.machines: list[Machine] = []
        self.allocs: list[AllocationRecord] = []
        n = max(16, len(spec_kvs))
        self.capacity = np.zeros((n, NUM_RESOURCES), dtype=np.int64)
        self.used = np.zeros((n, NUM_RESOURCES), dtype=np.int64)
        self.spec_rev = np.zeros(n, dtype=np.int64)
        self.alloc_rev = np.zeros(n, dtype=np.int64)
        self.schedulable = np.zeros(n, dtype=bool)
        self.dirty: set[int] = set()  # rows changed since the kernels last refreshed
        for kv in spec_kvs:
            self._apply_spec(kv.key, kv.value, kv.mod_revision)
        for kv in alloc_kvs:
            self._apply_alloc(kv.key, kv.value, kv.mod_revision)
        self.revision = result.revision
        self._open_watch()

    def _open_watch(self) -> None:
        self._watch = self.store.watch(self.keys.node_prefix, self.revision + 1)

    def free_rows(self) -> np.ndarray:
        """Free capacity of every schedulable machine, int64[rows, R]."""
        n = self.size
        free = self.capacity[:n] - self.used[:n]
        return free[self.schedulable[:n]]

    def _row(self, mid: str) -> int:
        i = self.index.get(mid)
        if i is None:
            i = len(self.ids)
            if i >= len(self.capacity):
                self._grow()
            self.ids.append(mid)
            self.index[mid] = i
            self.machines.append(None)  # type: ignore[arg-type]
            self.allocs.append(AllocationRecord())
        return i

    def _grow(self) -> None:
        n = 2 * len(self.capacity)
        for name in ("capacity", "used"):
            old = getattr(self, name)
            new = np.zeros((n, NUM_RESOURCES), dtype=np.int64)
            new[: len(old)] = old
            setattr(self, name, new)
        for name, dt in (("spec_rev", np.int64), ("alloc_rev", np.int64), ("schedulable", bool)):
            old = getattr(self, name)
            new = np.zeros(n, dtype=dt)
            new[: len(old)] = old
            setattr(self, name, new)

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
        rec = codec.decode_alloc(key, value)
        self.allocs[i] = rec
        self.used[i] = rec.used
        self.alloc_rev[i] = rev
        self._update_schedulable(i)
        self.dirty.add(i)

    def _update_schedulable(self, i: int) -> None:
        m = self.machines[i]
        self.schedulable[i] = m is not None and m.state is MachineState.UP \
            and len(self.allocs[i].tasks) < self.max_tasks

    # -- keeping fresh --------------------------------------------------------

    def poll(self, timeout: float = 0.0) -> int:
        """Apply every change available now (waiting up to `timeout` for one). Returns how many."""
        try:
            if self._watch is None:
                self._open_watch()
            events = self._watch.get(timeout)
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

    def assume(self, views: dict[str, MachineView]) -> None:
        """Fold fresher views (a commit's results) into the copy without waiting for the watch."""
        for mid, view in views.items():
            i = self.index.get(mid)
            if i is None:
                continue
            if view.spec_revision > self.spec_rev[i]:
                self.machines[i] = view.machine
                self.capacity[i] = view.machine.capacity
                self.spec_rev[i] = view.spec_revision
                self.dirty.add(i)
            if view.alloc_revision > self.alloc_rev[i]:
                self.allocs[i] = view.alloc
                self.used[i] = view.alloc.used
                self.alloc_rev[i] = view.alloc_revision
                self.dirty.add(i)
            self._update_schedulable(i)

    # -- reading --------------------------------------------------------------

    @property
    def size(self) -> int:
        return len(self.ids)

    def view(self, mid: str) -> MachineView:
        i = self.index[mid]
        return MachineView(self.machines[i], int(self.spec_rev[i]), self.allocs[i], int(self.alloc_rev[i]))

    def views(self, mids) -> dict[str, MachineView]:
        return {m: self.view(m) for m in mids}

    def lag(self) -> int:
        """Revisions the store is ahead of this copy (an upper bound: it counts writes to
        jobs and queues too, which the copy does not follow)."""
        return self.store.current_revision() - self.revision

    def close(self) -> None:
        if self._watch is not None:
            self._watch.close()
            self._watch = None
