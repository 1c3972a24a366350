"""The scheduler cache: the one copy of the cell's machines a scheduler decides on.

Like kube-scheduler's cache, it lives in the scheduler and is fed by a watch; unlike a
plain watch-fed copy, it also holds what this scheduler decided but the store has not
confirmed yet, so the next job of a batch never picks capacity an earlier one took.

Two layers, one owner:

- **confirmed**: NumPy columns (``capacity``, ``used``, revisions, ``schedulable``) and
  the machine and allocation records, exactly as the store holds them. Built from one
  consistent snapshot (a single txn reading every spec and allocation record), then kept
  fresh by a watch from snapshot revision + 1: no gaps, no duplicates, since an event is
  applied only if it is newer than the row it changes. A compacted watch triggers a full
  resync; a broken stream is reopened from the last revision seen. A machine at its task
  limit is unschedulable, so the kernels stop picking it before the validator refuses it.
- **columns**: ``gpu.MachineColumns`` (host and device arrays) = confirmed + assumed.
  The kernels read only these. Only this module writes them.

State of one claim (a task on a machine) in the cache::

                 assume(claims)                confirm(views) or a watch event:
    (decided) ───────────────▶ Assumed ──────────────────────────────────────▶ Added
                                │    │      the fresh allocation holds the task   (part of
                  forget(claims)│    │                                            confirmed)
     not committed: conflict,   │    │ resync: the machine is gone from the
     gang dropped, job parked,  ▼    ▼ snapshot
     lease lost           Forgotten  Expired

"Decided", "Forgotten" and "Expired" claims are not in the cache; an Added claim is just
part of the confirmed allocation record. A task is assumed at most once: assuming it
again (a retry after a step that ended early) replaces its earlier assumption.

The vocabulary is the whole API: ``assume`` when a decision picks machines, ``confirm``
when a commit's results (fresh views) come back, ``forget`` for claims that were not
committed. ``sync`` applies the watch and refreshes the columns; everything else reads.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np

from cellsched import gpu
from cellsched.cellstate import codec
from cellsched.cellstate.errors import CompactedError, StoreUnavailableError, UnknownMachineError
from cellsched.cellstate.keys import CellKeys
from cellsched.cellstate.model import AllocationRecord, Claim, Machine, MachineState
from cellsched.cellstate.resources import NUM_RESOURCES
from cellsched.cellstate.schema import check_schema
from cellsched.cellstate.store import CellStore, EventType, Get, Watch, WatchEvent
from cellsched.cellstate.validation import DEFAULT_MAX_TASKS_PER_MACHINE
from cellsched.cellstate.views import MachineView


class SchedulerCache:
    def __init__(self, store: CellStore, keys: CellKeys, max_tasks: int = DEFAULT_MAX_TASKS_PER_MACHINE,
                 backend: str | None = None):
        self.store = store
        self.keys = keys
        self.max_tasks = max_tasks
        self.backend = backend  # array backend setting for the columns (None: chosen by size)
        self.resyncs = 0
        self.reconnects = 0
        self._watch: Watch | None = None
        self._assumed: dict[str, Claim] = {}  # task id -> its Assumed claim
        self._on_row: dict[int, dict[str, Claim]] = {}  # row -> the Assumed claims on it
        self._delta: dict[int, np.ndarray] = {}  # row -> sum of those claims' requests
        self.resync()
        self._rebuild()

    # -- the confirmed layer: snapshot and watch --------------------------------------

    def resync(self) -> None:
        """Full snapshot: used at start, and after a compaction left a gap."""
        if self._watch is not None:
            self._watch.close()
            self._watch = None
        result = self.store.txn([], [Get(self.keys.spec_prefix, prefix=True),
                                     Get(self.keys.alloc_prefix, prefix=True), Get(self.keys.schema)])
        spec_kvs, alloc_kvs, schema_kvs = result.reads
        check_schema(self.keys, schema_kvs[0] if schema_kvs else None, cell_has_data=bool(spec_kvs))
        self._on_row, self._delta = {}, {}  # rows are renumbered: re-placed below
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
        self.dirty: set[int] = set()  # confirmed rows changed since the columns last refreshed
        for kv in spec_kvs:
            self._apply_spec(kv.key, kv.value, kv.mod_revision)
        for kv in alloc_kvs:
            self._apply_alloc(kv.key, kv.value, kv.mod_revision)
        self.revision = result.revision
        # Assumptions outlive a resync: re-placed on their machines' new rows unless the
        # snapshot holds the task (Added) or lacks the machine (Expired).
        for tid, c in list(self._assumed.items()):
            i = self.index.get(c.machine_id)
            if i is None or tid in self.allocs[i].tasks:
                del self._assumed[tid]
            else:
                self._add_on_row(i, c)
        self._stale = True  # rows may be renumbered: the next refresh rebuilds the columns
        self._open_watch()

    def _open_watch(self) -> None:
        self._watch = self.store.watch(self.keys.node_prefix, self.revision + 1)

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
            self._stale = True  # a new machine: the columns need a new row
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
        self._added(i)  # the watch confirms our own commits too
        self.dirty.add(i)

    def _update_schedulable(self, i: int) -> None:
        m = self.machines[i]
        self.schedulable[i] = m is not None and m.state is MachineState.UP \
            and len(self.allocs[i].tasks) < self.max_tasks

    def poll(self, timeout: float = 0.0) -> int:
        """Apply every change available now (waiting up to `timeout` for one) to the
        confirmed layer. Returns how many."""
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

    # -- the columns: confirmed + assumed ------------------------------------------------

    def sync(self, timeout: float = 0.0) -> bool:
        """Apply the watch, then bring the columns up to date. Returns whether that freed
        capacity (used dropped, a machine came up or appeared): the cue to retry parked jobs."""
        self.poll(timeout)
        return self.refresh()

    def refresh(self) -> bool:
        """Apply the confirmed layer's changed rows to the columns; returns whether capacity was freed."""
        if self._stale:
            self._rebuild()  # new machines, or a resync that may have renumbered rows
            return True
        if not self.dirty:
            return False
        rows = np.fromiter(sorted(self.dirty), dtype=np.int64)
        self.dirty.clear()
        cols = self.columns
        used = self._target_used(rows)
        freed = bool((used < cols.host_used[rows]).any())
        freed |= bool((self.schedulable[rows] & ~cols.host_schedulable[rows]).any())
        freed |= bool((self.capacity[rows] > cols.host_capacity[rows]).any())
        labels = [self.machines[i].labels for i in rows.tolist()]
        if (not np.array_equal(self.capacity[rows], cols.host_capacity[rows])
                or not np.array_equal(self.schedulable[rows], cols.host_schedulable[rows])
                or labels != [cols.labels[i] for i in rows.tolist()]):
            cols.update_machines(rows, self.capacity[rows], labels, self.schedulable[rows])
        cols.update_rows(rows, used)
        return freed

    def _rebuild(self) -> None:
        n = self.size
        xp = gpu.choose_array_module(n, self.backend)
        self.columns = gpu.MachineColumns(
            list(self.ids), self.capacity[:n], self._target_used(np.arange(n)),
            [m.labels for m in self.machines], self.schedulable[:n], xp=xp)
        self.dirty.clear()
        self._stale = False

    def _target_used(self, rows: np.ndarray) -> np.ndarray:
        """What the columns' used rows must hold: confirmed used plus every assumed request."""
        used = self.used[rows]
        if self._delta:
            for k, i in enumerate(rows.tolist()):
                d = self._delta.get(i)
                if d is not None:
                    used[k] += d
        return used

    def _write_used(self, rows: Iterable[int]) -> None:
        """Put confirmed + assumed into these rows of the columns (rows the columns do not
        have yet get it from the next rebuild)."""
        n = len(self.columns)
        idx = np.fromiter(sorted(i for i in set(rows) if i < n), dtype=np.int64)
        if len(idx):
            self.columns.update_rows(idx, self._target_used(idx))

    # -- assume, confirm, forget ----------------------------------------------------------

    def assume(self, claims: Iterable[Claim]) -> None:
        """A decision picked these machines: hold the claims' requests in the columns, so
        every later decision sees them, until the commit confirms or they are forgotten."""
        touched: set[int] = set()
        pending: dict[int, list] = {}
        for c in claims:
            i = self.index.get(c.machine_id)
            if i is None:
                raise UnknownMachineError(f"cannot assume {c.task_id} on {c.machine_id!r}: not in the cache")
            earlier = self._assumed.get(c.task_id)
            if earlier is not None:  # assumed again: the new claim replaces the old one
                touched.add(self._drop(earlier))
            self._assumed[c.task_id] = c
            self._on_row.setdefault(i, {})[c.task_id] = c
            pending.setdefault(i, []).append(c.request)
        for i, reqs in pending.items():
            add = np.asarray(reqs, dtype=np.int64).sum(axis=0)
            d = self._delta.get(i)
            self._delta[i] = add if d is None else d + add
            touched.add(i)
        self._write_used(touched)

    def confirm(self, views: Mapping[str, MachineView]) -> None:
        """A commit's results came back: fold its fresh views into the confirmed layer
        without waiting for the watch (newer revisions only). An assumed claim whose task
        the fresh allocation holds is Added; the others stay Assumed until forgotten."""
        rows = []
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
            self._added(i)
            rows.append(i)
        self._write_used(rows)

    def forget(self, claims: Iterable[Claim]) -> None:
        """These claims will not be committed (conflict, gang dropped, job parked, lease
        lost): give their requests back. Claims no longer Assumed (Added, or assumed
        elsewhere since) are left alone."""
        rows = set()
        for c in claims:
            assumed = self._assumed.get(c.task_id)
            if assumed is not None and assumed.machine_id == c.machine_id:
                rows.add(self._drop(assumed))
        self._write_used(rows)

    def is_assumed(self, task_id: str) -> bool:
        return task_id in self._assumed

    @property
    def assumed_count(self) -> int:
        return len(self._assumed)

    def _added(self, i: int) -> None:
        """Row i's confirmed allocation changed: its assumed claims that it holds are Added."""
        on_row = self._on_row.get(i)
        if on_row:
            tasks = self.allocs[i].tasks
            for tid in [t for t in on_row if t in tasks]:
                self._drop(on_row[tid])

    def _add_on_row(self, i: int, c: Claim) -> None:
        self._on_row.setdefault(i, {})[c.task_id] = c
        req = np.asarray(c.request, dtype=np.int64)
        d = self._delta.get(i)
        self._delta[i] = req if d is None else d + req

    def _drop(self, c: Claim) -> int:
        """Take one claim out of the Assumed state; returns its row."""
        del self._assumed[c.task_id]
        i = self.index[c.machine_id]
        on_row = self._on_row[i]
        del on_row[c.task_id]
        if on_row:
            self._delta[i] = self._delta[i] - np.asarray(c.request, dtype=np.int64)
        else:
            del self._on_row[i], self._delta[i]
        return i

    # -- reading ------------------------------------------------------------------------

    def free_rows(self) -> np.ndarray:
        """Confirmed free capacity of every schedulable machine, int64[rows, R]."""
        n = self.size
        free = self.capacity[:n] - self.used[:n]
        return free[self.schedulable[:n]]

    @property
    def size(self) -> int:
        return len(self.ids)

    def view(self, mid: str) -> MachineView:
        """The confirmed view of one machine: what a commit compares."""
        i = self.index[mid]
        return MachineView(self.machines[i], int(self.spec_rev[i]), self.allocs[i], int(self.alloc_rev[i]))

    def views(self, mids) -> dict[str, MachineView]:
        return {m: self.view(m) for m in mids}

    def lag(self) -> int:
        """Revisions the store is ahead of this cache (an upper bound: it counts writes to
        jobs and queues too, which the cache does not follow)."""
        return self.store.current_revision() - self.revision

    def close(self) -> None:
        if self._watch is not None:
            self._watch.close()
            self._watch = None
