"""The scheduler cache: the one copy of the cell's machines a scheduler decides on.

Like kube-scheduler's cache, it lives in the scheduler and is fed by a watch; unlike a
plain watch-fed copy, it also holds what this scheduler decided but the store has not
confirmed yet, so the next job of a batch never picks capacity an earlier one took.

Two layers, one owner:

- **confirmed** (``schedulers/confirmed.py``, the base class): NumPy columns
  (``capacity``, ``used``, revisions, ``schedulable``) and the machine and allocation
  records, exactly as the store holds them: one consistent snapshot, then a watch.
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

from collections.abc import Container, Iterable, Mapping

import numpy as np

from cellsched import gpu
from cellsched.cellstate.errors import UnknownMachineError
from cellsched.cellstate.keys import CellKeys
from cellsched.cellstate.model import Claim
from cellsched.cellstate.store import CellStore
from cellsched.cellstate.validation import DEFAULT_MAX_TASKS_PER_MACHINE
from cellsched.cellstate.views import MachineView

from .confirmed import ConfirmedMachines


class SchedulerCache(ConfirmedMachines):
    def __init__(self, store: CellStore, keys: CellKeys, max_tasks: int = DEFAULT_MAX_TASKS_PER_MACHINE,
                 backend: str | None = None):
        super().__init__(store, keys, max_tasks)
        self.backend = backend  # array backend setting for the columns (None: chosen by size)
        # Refreshes that freed capacity: each loop sharing this copy compares it with the count it
        # last saw, so the one whose sync did not apply the change learns of it too (schedulers/core.py).
        self.freed_count = 0
        self._assumed: dict[str, Claim] = {}  # task id -> its Assumed claim
        self._on_row: dict[int, dict[str, Claim]] = {}  # row -> the Assumed claims on it
        self.resync()
        self._rebuild()

    # -- the confirmed layer's hooks (schedulers/confirmed.py) --------------------------

    def _before_snapshot(self) -> None:
        self._on_row = {}  # rows are renumbered: re-placed by _after_snapshot

    def _after_snapshot(self) -> None:
        # Assumptions outlive a resync: re-placed on their machines' new rows unless the
        # snapshot holds the task (Added) or lacks the machine (Expired).
        kept = []
        for tid, c in list(self._assumed.items()):
            i = self.index.get(c.machine_id)
            if i is None or self.held_tasks(i, (tid,)):
                del self._assumed[tid]
            else:
                kept.append(c)
        self._hold(kept)

    def _each_alloc_rows(self) -> Container[int]:
        return self._on_row  # their assumed claims are Added by the record that holds them

    def _allocs_applied(self, rows: list[int]) -> None:
        if self._on_row:  # empty right after a snapshot (re-placed by _after_snapshot)
            super()._allocs_applied(rows)

    def _alloc_applied(self, i: int) -> None:
        if i in self._on_row:  # the watch confirms our own commits too: Added
            added = self._held_by_alloc(i)
            if added:
                self._drop(added)
    # -- the columns: confirmed + assumed ------------------------------------------------

    def sync(self, timeout: float = 0.0) -> bool:
        """Apply the watch, then bring the columns up to date. Returns whether that freed
        capacity (used dropped, a machine came up or appeared): the cue to retry parked jobs."""
        self.poll(timeout)
        return self.refresh()

    def refresh(self) -> bool:
        """Apply the confirmed layer's changed rows to the columns; returns whether capacity was
        freed (and counts it in freed_count)."""
        freed = self._refresh()
        if freed:
            self.freed_count += 1
        return freed

    def _refresh(self) -> bool:
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
        if (self._reshaped  # labels change only with the machine record (set_machine)
                or not np.array_equal(self.capacity[rows], cols.host_capacity[rows])
                or not np.array_equal(self.schedulable[rows], cols.host_schedulable[rows])):
            cols.update_machines(rows, self.capacity[rows], [self.row_labels(i) for i in rows.tolist()],
                                 self.schedulable[rows])
            self._reshaped.clear()
        cols.update_rows(rows, used)
        return freed

    def _rebuild(self) -> None:
        n = self.size
        xp = gpu.choose_array_module(n, self.backend)
        used = self.used[:n].copy()
        for i, held in self._on_row.items():
            used[i] += _requests(held)
        self.columns = gpu.MachineColumns(
            list(self.ids), self.capacity[:n], used,
            self.all_labels(), self.schedulable[:n], xp=xp)
        self.dirty.clear()
        self._reshaped.clear()
        self._stale = False

    def _target_used(self, rows) -> np.ndarray:
        """What the columns' used rows must hold: confirmed used plus every assumed request."""
        used = self.used[rows]
        on_row = self._on_row
        if on_row:
            for k, i in enumerate(rows.tolist() if isinstance(rows, np.ndarray) else rows):
                held = on_row.get(i)
                if held:
                    used[k] += _requests(held)
        return used

    def _write_used(self, rows: list[int]) -> None:
        """Put confirmed + assumed into these rows of the columns (rows the columns do not
        have yet get it from the next rebuild)."""
        if self._stale:  # rows renumbered or added: the next refresh rebuilds every row
            return
        n = len(self.columns)
        idx = list(set(rows))  # update_rows takes rows in any order
        if idx and max(idx) >= n:
            idx = [i for i in idx if i < n]
        if idx:
            self.columns.update_rows(idx, self._target_used(idx))

    # -- assume, confirm, forget ----------------------------------------------------------

    def assume(self, claims: Iterable[Claim]) -> None:
        """A decision picked these machines: hold the claims' requests in the columns, so
        every later decision sees them, until the commit confirms or they are forgotten.
        A task assumed again (a retry after a step that ended early) moves: its new claim
        replaces the old one."""
        by_task = {c.task_id: c for c in claims}  # the same task twice in one call: the last claim counts
        if not by_task:
            return
        claims = list(by_task.values())
        index, assumed = self.index, self._assumed
        try:
            rows = [index[c.machine_id] for c in claims]
        except KeyError:
            c = next(c for c in claims if c.machine_id not in index)
            raise UnknownMachineError(f"cannot assume {c.task_id} on {c.machine_id!r}: not in the cache") from None
        if not by_task.keys().isdisjoint(assumed.keys()):  # a task moves: the slow, exact path
            touched = self._release([assumed[t] for t in by_task if t in assumed])
            assumed.update(by_task)
            self._hold(claims, rows)
            self._write_used(touched + rows)
            return
        assumed.update(by_task)
        self._hold(claims, rows)
        if self._stale:  # the next refresh rebuilds every row, these claims included
            return
        # The columns already hold confirmed + assumed: add just these requests (a row the
        # watch changed meanwhile is rewritten from scratch by the next refresh anyway).
        cols = self.columns
        n = len(cols)
        if len(claims) == 1:
            i = rows[0]
            if i < n:
                cols.update_rows([i], cols.host_used[i] + claims[0].request)
            return
        req = np.array([c.request for c in claims], dtype=np.int64)
        if max(rows) >= n:
            keep = [k for k, i in enumerate(rows) if i < n]
            rows, req = [rows[k] for k in keep], req[keep]
        unique = list(set(rows))
        if len(unique) == len(rows):
            cols.update_rows(rows, cols.host_used[rows] + req)
        elif unique:  # several tasks on one machine: sum them per row
            pos = {i: k for k, i in enumerate(unique)}
            used = cols.host_used[unique]
            np.add.at(used, [pos[i] for i in rows], req)
            cols.update_rows(unique, used)

    def confirm(self, views: Mapping[str, MachineView]) -> None:
        """A commit's results came back: fold its fresh views into the confirmed layer
        without waiting for the watch (newer revisions only). An assumed claim whose task
        the fresh allocation holds is Added; the others stay Assumed until forgotten."""
        index = self.index
        found = [(i, v) for mid, v in views.items() if (i := index.get(mid)) is not None]
        if not found:
            return
        rows = [i for i, _ in found]
        fresh = [v for _, v in found]
        n = len(rows)
        spec_revs = np.fromiter((v.spec_revision for v in fresh), dtype=np.int64, count=n)
        for k in np.flatnonzero(spec_revs > self.spec_rev[rows]).tolist():  # rare: a machine record changed
            i, view = rows[k], fresh[k]
            self.set_machine(i, view.machine)
            self.capacity[i] = view.machine.capacity
            self.spec_rev[i] = view.spec_revision
            self.dirty.add(i)
        alloc_revs = np.fromiter((v.alloc_revision for v in fresh), dtype=np.int64, count=n)
        known = self.alloc_rev[rows]  # before the newer rows are written: they are not "same"
        newer = np.flatnonzero(alloc_revs > known).tolist()
        allocs, raw = self._allocs, self._alloc_raw
        if newer:  # set_alloc per row, each column written once
            at = [rows[k] for k in newer]
            recs = [fresh[k].alloc for k in newer]
            for i, rec in zip(at, recs, strict=True):
                allocs[i], raw[i] = rec, None
            self.used[at] = [rec.used for rec in recs]
            self.task_count[at] = [len(rec.tasks) for rec in recs]
            self.alloc_rev[at] = alloc_revs[newer]
            self.dirty.update(at)
        # The watch applied some of these records first (another loop of a shared copy synced
        # while this commit's ack was on its way): keep them encoded no longer, the view holds
        # them decoded, and the next commit on the machine would decode them again.
        for k in np.flatnonzero(alloc_revs == known).tolist():
            i = rows[k]
            if allocs[i] is None:
                allocs[i], raw[i] = fresh[k].alloc, None
        self.schedulable[rows] = self._up[rows] & (self.task_count[rows] < self.max_tasks)  # _update_schedulable
        on_row = self._on_row
        added = [c for i in rows if i in on_row for c in self._held_by_alloc(i)]
        if added:
            self._drop(added)
        self._write_used(rows)

    def forget(self, claims: Iterable[Claim]) -> None:
        """These claims will not be committed (conflict, gang dropped, job parked, lease
        lost): give their requests back. Claims no longer Assumed (Added, or assumed
        elsewhere since) are left alone."""
        assumed = self._assumed
        gone = [a for c in claims if (a := assumed.get(c.task_id)) is not None and a.machine_id == c.machine_id]
        if gone:
            self._write_used(self._drop(gone))

    def is_assumed(self, task_id: str) -> bool:
        return task_id in self._assumed

    @property
    def assumed_count(self) -> int:
        return len(self._assumed)

    def _held_by_alloc(self, i: int) -> list[Claim]:
        """Row i's assumed claims whose tasks its confirmed allocation holds: to be Added."""
        held = self._on_row[i]
        return [held[t] for t in self.held_tasks(i, held)]

    def _drop(self, claims: list[Claim]) -> list[int]:
        """Claims leave the Assumed state (Added or Forgotten); returns their rows."""
        for c in claims:
            del self._assumed[c.task_id]
        return self._release(claims)

    def _hold(self, claims: list[Claim], rows: list[int] | None = None) -> list[int]:
        """File claims under their rows (not in _assumed); returns the rows."""
        if rows is None:
            rows = [self.index[c.machine_id] for c in claims]
        on_row = self._on_row
        for i, c in zip(rows, claims, strict=True):
            held = on_row.get(i)
            if held is None:
                on_row[i] = {c.task_id: c}
            else:
                held[c.task_id] = c
        return rows

    def _release(self, claims: list[Claim]) -> list[int]:
        """Take claims off their rows (not out of _assumed); returns the rows."""
        rows = [self.index[c.machine_id] for c in claims]
        for i, c in zip(rows, claims, strict=True):
            on_row = self._on_row[i]
            del on_row[c.task_id]
            if not on_row:
                del self._on_row[i]
        return rows

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
        return MachineView(self.machine(i), int(self.spec_rev[i]), self.alloc(i), int(self.alloc_rev[i]))

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


def _requests(held: Mapping[str, Claim]) -> list[int]:
    """The sum of some claims' requests."""
    return [sum(r) for r in zip(*(c.request for c in held.values()), strict=True)]
