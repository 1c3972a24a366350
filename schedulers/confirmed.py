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
(``codec.alloc_heads`` for a whole snapshot, ``codec.alloc_summary`` for one record), so a
snapshot of a 100,000-machine cell parses no task map. Likewise a row's ``Machine`` is
built from its columns when something asks for it (``machine(i)``): the snapshot reads
the machine records as columns (``codec.machine_table``: ids, capacities, and one shared
(labels, state, state_by) per kind of machine), writing each column once, not row by row
(docs/architecture.md, "The scheduler cache's snapshot"). ``dirty`` names the rows changed
since the columns last took them; ``_stale`` says rows were added or renumbered.

The assumed layer (SchedulerCache) hooks in around a snapshot and after each allocation
record is applied; this module knows nothing of claims.
"""

from __future__ import annotations

from collections.abc import Container

import numpy as np

from cellsched.cellstate import codec
from cellsched.cellstate.errors import CompactedError, StoreUnavailableError
from cellsched.cellstate.keys import CellKeys
from cellsched.cellstate.model import AllocationRecord, Machine, MachineState
from cellsched.cellstate.resources import NUM_RESOURCES
from cellsched.cellstate.schema import check_schema
from cellsched.cellstate.store import CellStore, EventType, Get, Watch, WatchEvent

Shape = tuple[dict[str, str], MachineState, str]  # a machine's labels, state and who set it


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
        self._alloc_rows: dict[str, int] = {}  # allocation key -> row: the watch's lookup, no key parsing
        self._machines: list[Machine | None] = []  # None: built from the row's columns on first use
        self._shapes: list[Shape | None] = []  # (labels, state, state_by) per row, shared between rows
        self._allocs: list[AllocationRecord | None] = []  # None: still encoded, in _alloc_raw
        self._alloc_raw: list[bytes | None] = []
        n = max(16, len(spec_kvs))
        self.capacity = np.zeros((n, NUM_RESOURCES), dtype=np.int64)
        self.used = np.zeros((n, NUM_RESOURCES), dtype=np.int64)
        self.spec_rev = np.zeros(n, dtype=np.int64)
        self.alloc_rev = np.zeros(n, dtype=np.int64)
        self.schedulable = np.zeros(n, dtype=bool)
        self._up = np.zeros(n, dtype=bool)  # the row's machine record says up (its shape's state)
        self._reshaped: set[int] = set()  # rows whose machine record (labels too) changed since refresh
        self.task_count = np.zeros(n, dtype=np.int64)
        self.dirty: set[int] = set()  # confirmed rows changed since the columns last refreshed
        if not self._load_snapshot(spec_kvs, alloc_kvs):
            # two keys naming one machine id: record by record, as the watch would apply them
            for kv in spec_kvs:
                self._apply_spec(kv.key, kv.value, kv.mod_revision)
            for kv in alloc_kvs:
                self._apply_alloc(kv.key, kv.value, kv.mod_revision)
        self.revision = result.revision
        self._after_snapshot()
        self._stale = True  # rows may be renumbered: the next refresh rebuilds the columns
        self._open_watch()

    def _load_snapshot(self, spec_kvs, alloc_kvs) -> bool:
        """The snapshot's rows in bulk, with the result of applying each record in turn
        (_apply_spec, then _apply_alloc) but per column, not per row: at 100,000 machines
        anything done per record in Python costs about as much as the read itself. The
        machine records become columns (``codec.machine_table``: ids, capacity, one shared
        (labels, state, state_by) per distinct kind), and a row's Machine is built only when
        something asks for it (``machine(i)``); the allocation records' heads are parsed
        in one pass (``codec.alloc_heads``). Records not exactly as the codec writes them
        take the decoders one by one. False (nothing loaded) when two records name one id."""
        table = codec.machine_table(spec_kvs)
        if table is None:
            machines = codec.decode_machines(spec_kvs)
            ids = [m.id for m in machines]
            shapes: list[Shape] = [(m.labels, m.state, m.state_by) for m in machines]
            capacity = np.array([m.capacity for m in machines], dtype=np.int64).reshape(-1, NUM_RESOURCES)
        else:
            ids, shapes, machines = table.ids, table.shapes, None
            capacity = np.fromstring(table.capacity_text, dtype=np.int64, sep=",").reshape(-1, NUM_RESOURCES)
        index = dict(zip(ids, range(len(ids)), strict=True))
        if len(index) != len(ids):
            return False
        k = len(ids)
        self.ids, self.index, self._shapes = ids, index, list(shapes)
        alloc_key = self.keys.alloc
        self._alloc_rows = {alloc_key(m): i for m, i in index.items()}
        self._machines = list(machines) if machines is not None else [None] * k
        self._allocs = [None] * k
        self._alloc_raw = [None] * k
        if k:
            self.capacity[:k] = capacity
            self.spec_rev[:k] = [kv.mod_revision for kv in spec_kvs]
        rows = self._load_allocs(alloc_kvs)
        for i in range(k):
            if self._allocs[i] is None and self._alloc_raw[i] is None:
                self._allocs[i] = AllocationRecord()  # a machine without an allocation record yet
        self._up[:k] = np.fromiter((sh[1] is MachineState.UP for sh in shapes), dtype=bool, count=k)
        self.schedulable[:k] = self._up[:k] & (self.task_count[:k] < self.max_tasks)
        self.dirty.update(range(k))
        self._allocs_applied(rows)
        return True

    def _load_allocs(self, alloc_kvs) -> list[int]:
        """The snapshot's allocation records on their rows, kept encoded; returns the rows."""
        plen = len(self.keys.alloc_prefix)
        mids = [kv.key[plen:] for kv in alloc_kvs]
        if mids == self.ids:  # the common case: every machine has its record, in the same key order
            rows = list(range(len(mids)))
            kvs = alloc_kvs
        else:
            found = [(i, kv) for kv in alloc_kvs if (i := self.index.get(self.keys.last_segment(kv.key))) is not None]
            rows, kvs = [i for i, _ in found], [kv for _, kv in found]
        values = [kv.value for kv in kvs]
        heads = codec.alloc_heads(values)
        nums = None if heads is None else np.fromstring(heads, dtype=np.int64, sep=" ")
        if nums is not None and nums.size == len(values) * (NUM_RESOURCES + 2):
            nums = nums.reshape(-1, NUM_RESOURCES + 2)
            if rows:
                self.used[rows] = nums[:, 1:NUM_RESOURCES + 1]
                self.task_count[rows] = nums[:, NUM_RESOURCES + 1]
            raw = self._alloc_raw
            for i, v in zip(rows, values, strict=True):
                raw[i] = v
        else:  # some value not as encode_alloc writes it: record by record
            used, counts = [], []
            for i, kv in zip(rows, kvs, strict=True):
                summary = codec.alloc_summary(kv.value)
                if summary is None:  # decode it whole now
                    rec = codec.decode_alloc(kv.key, kv.value)
                    self._allocs[i] = rec
                    summary = rec.used, len(rec.tasks)
                else:
                    self._alloc_raw[i] = kv.value
                used.append(summary[0])
                counts.append(summary[1])
            if rows:
                self.used[rows] = used
                self.task_count[rows] = counts
        if rows:
            self.alloc_rev[rows] = [kv.mod_revision for kv in kvs]
        return rows

    def _allocs_applied(self, rows: list[int]) -> None:
        """The snapshot put allocation records on these rows (the hook per row by default)."""
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
            self._alloc_rows[self.keys.alloc(mid)] = i
            self._machines.append(None)
            self._shapes.append(None)
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
                         ("_up", bool), ("task_count", np.int64)):
            old = getattr(self, name)
            col = np.zeros(n, dtype=dt)
            col[: len(old)] = old
            setattr(self, name, col)

    def _apply_spec(self, key: str, value: bytes, rev: int) -> None:
        m = codec.decode_machine(key, value)
        i = self._row(m.id)
        if rev <= self.spec_rev[i]:
            return
        self.set_machine(i, m)
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

    def machine(self, i: int) -> Machine:
        """Row i's machine record, built from its columns on first use."""
        m = self._machines[i]
        if m is None:
            labels, state, by = self._shapes[i]  # type: ignore[misc]  # a row has its spec once it exists
            m = self._machines[i] = Machine(self.ids[i], tuple(self.capacity[i].tolist()), labels, state, by)
        return m

    def set_machine(self, i: int, m: Machine) -> None:
        """Row i's machine record is now `m`; the caller sets its capacity and revision."""
        self._machines[i] = m
        self._shapes[i] = (m.labels, m.state, m.state_by)
        self._up[i] = m.state is MachineState.UP
        self._reshaped.add(i)

    def row_labels(self, i: int) -> dict[str, str]:
        """Row i's labels (shared with rows of the same kind: read them, never change them)."""
        shape = self._shapes[i]
        return shape[0] if shape is not None else {}

    def all_labels(self) -> list[dict[str, str]]:
        """row_labels of every row, in row order."""
        return [sh[0] if sh is not None else {} for sh in self._shapes]

    def alloc(self, i: int) -> AllocationRecord:
        """Row i's allocation record, decoded on first use."""
        rec = self._allocs[i]
        if rec is None:
            rec = codec.decode_alloc(self.keys.alloc(self.ids[i]), self._alloc_raw[i] or b"")
            self._allocs[i], self._alloc_raw[i] = rec, None
        return rec

    def held_tasks(self, i: int, task_ids) -> list[str]:
        """Those of `task_ids` that row i's confirmed allocation holds. A record still
        encoded is searched, not decoded (codec.held_in_encoded_alloc): with schedulers
        sharing one copy, the watch brings records of machines another loop holds claims
        on, and decoding each whole just to look up a few tasks was most of their sync."""
        raw = self._alloc_raw[i]
        if self._allocs[i] is None and raw is not None:
            return codec.held_in_encoded_alloc(raw, task_ids)
        tasks = self.alloc(i).tasks
        return [t for t in task_ids if t in tasks]

    def set_alloc(self, i: int, rec: AllocationRecord) -> None:
        """Row i's allocation record is now `rec` (decoded); the caller sets its revision."""
        self._allocs[i], self._alloc_raw[i] = rec, None
        self.used[i] = rec.used
        self.task_count[i] = len(rec.tasks)

    def _update_schedulable(self, i: int) -> None:
        self.schedulable[i] = self._up[i] and self.task_count[i] < self.max_tasks

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
        if not events:
            return 0
        prefix, put = self.keys.alloc_prefix, EventType.PUT
        # Everything but allocation puts (rare: machine records, deletes) splits the poll into
        # runs; each run is applied per column, the others one by one, in watch order.
        others = [k for k, ev in enumerate(events) if ev.type is not put or not ev.key.startswith(prefix)]
        start = 0
        for k in others:
            if k > start:
                self._apply_allocs(events[start:k])
            self._apply_event(events[k])
            start = k + 1
        if start < len(events):
            self._apply_allocs(events[start:] if start else events)
        return len(events)

    def _each_alloc_rows(self) -> Container[int]:
        """Rows that must see every allocation record the watch brings, in turn (the layer
        above holds claims there); the others get only the newest record of a poll."""
        return ()

    def _apply_allocs(self, events: list[WatchEvent]) -> None:
        """Allocation puts, as _apply_alloc would apply them one by one, but per column: the
        newest record per key (the watch is in revision order: the last one) if newer than
        the row's; the heads of all of them parsed at once (codec.alloc_heads). At N
        schedulers each sees every other's commits, a put per machine per commit txn, so
        nothing here is done per event but one dict comprehension: rows and revisions are
        looked up per distinct key, and our own commits (confirmed before the watch brought
        them) drop out by revision, in NumPy."""
        if events[-1].mod_revision > self.revision:
            self.revision = events[-1].mod_revision
        rows_of, each = self._alloc_rows, self._each_alloc_rows()
        # One pass: a key has one row, so the last event per row is the last per key.
        newest = {i: ev for ev in events if (i := rows_of.get(ev.key)) is not None}
        turn = {i for i in newest if i in each} if each else None
        if turn:  # rows holding claims: every record in turn
            for ev in events:
                if rows_of.get(ev.key) in turn:
                    self._apply_alloc(ev.key, ev.value, ev.mod_revision)
            for i in turn:
                del newest[i]
        if not newest:
            return
        rows = np.fromiter(newest, dtype=np.int64, count=len(newest))
        revs = np.fromiter((ev.mod_revision for ev in newest.values()), dtype=np.int64, count=len(newest))
        newer = revs > self.alloc_rev[rows]
        if not newer.all():  # our own commits, confirmed before the watch brought them
            rows, revs = rows[newer], revs[newer]
            evs = [ev for ev, keep in zip(newest.values(), newer.tolist(), strict=True) if keep]
        else:
            evs = list(newest.values())
        if not evs:
            return
        values = [ev.value for ev in evs]
        heads = codec.alloc_heads(values)
        nums = None if heads is None else np.fromstring(heads, dtype=np.int64, sep=" ")
        if nums is None or nums.size != len(values) * (NUM_RESOURCES + 2):
            for ev in evs:  # some value not as encode_alloc writes it: one by one
                self._apply_alloc(ev.key, ev.value, ev.mod_revision)
            return
        nums = nums.reshape(-1, NUM_RESOURCES + 2)
        row_list = rows.tolist()
        allocs, raw = self._allocs, self._alloc_raw
        for i, v in zip(row_list, values, strict=True):
            allocs[i], raw[i] = None, v
        self.used[rows] = nums[:, 1:NUM_RESOURCES + 1]
        self.task_count[rows] = nums[:, NUM_RESOURCES + 1]
        self.alloc_rev[rows] = revs
        self.schedulable[rows] = self._up[rows] & (self.task_count[rows] < self.max_tasks)
        self._allocs_applied(row_list)
        self.dirty.update(row_list)

    def _apply_event(self, ev: WatchEvent) -> None:
        if ev.key.startswith(self.keys.spec_prefix):
            if ev.type is EventType.PUT:
                self._apply_spec(ev.key, ev.value, ev.mod_revision)
            else:
                i = self.index.get(self.keys.last_segment(ev.key))
                if i is not None:  # a removed machine stays as an unschedulable row
                    self.schedulable[i] = self._up[i] = False
                    self.spec_rev[i] = ev.mod_revision
                    self.dirty.add(i)
        elif ev.key.startswith(self.keys.alloc_prefix):
            if ev.type is EventType.PUT:
                self._apply_alloc(ev.key, ev.value, ev.mod_revision)
        if ev.mod_revision > self.revision:
            self.revision = ev.mod_revision
