"""The embedded store: etcd's semantics in one process, deterministic.

A product backend, not a mock: it runs the same contract tests as etcd and enforces
the same limits (ops per txn, request size, no key twice). Simulations and unit tests
use it in-process; `make demo` hosts it in one owner process for the others.
Leases are expired lazily against the injected Clock on every call, so simulated time
works without a background thread.
"""

from __future__ import annotations

import bisect
import itertools
import queue
import threading
from collections.abc import Iterable, Sequence

from ..clock import Clock, RealClock
from ..errors import CompactedError, FutureRevisionError, InvalidInputError, LeaseNotFoundError
from . import wire
from .contract import (
    AFTER_PREVIOUS,
    CellStore,
    EventType,
    Get,
    KeyValue,
    ModRevisionIs,
    Op,
    Put,
    StoreLimits,
    TxnResult,
    Watch,
    WatchEvent,
    check_lease_ttl,
    check_revision_arg,
    check_txn_limits,
)
from .sorted_keys import SortedKeys


class _MemoryWatch(Watch):
    """A watch opened at a past revision starts unsynced, like etcd's: its backlog is read
    from history on the first get, and fails if compaction removed it meanwhile. Once
    synced it gets every new event pushed at commit time, so compaction cannot touch it.
    Events travel in lists, one per txn (what etcd's watch response is): a txn's events are
    filtered once per prefix and handed to every watch on it, so N watches cost the
    committer N queue puts, not N per event, and a poll takes a list per txn."""

    def __init__(self, owner: MemoryStore, prefix: str, start_revision: int, synced: bool):
        self.prefix = prefix
        self.start_revision = start_revision
        self.synced = synced
        self._owner = owner
        self._q: queue.SimpleQueue[list[WatchEvent]] = queue.SimpleQueue()  # lists shared: never changed
        self._error: CompactedError | None = None
        self._closed = False

    def _push(self, events: list[WatchEvent]) -> None:
        self._q.put(events)

    def get(self, timeout: float = 0.0) -> list[WatchEvent]:
        if self._error is not None:
            raise self._error  # a failed watch stays failed, as a cancelled etcd watch does
        self._owner._expire_leases()
        if not self.synced:
            self._owner._sync_watch(self)
        out: list[WatchEvent] = []
        try:
            out.extend(self._q.get(timeout=timeout) if timeout > 0 else self._q.get_nowait())
        except queue.Empty:
            return out
        while True:
            try:
                out.extend(self._q.get_nowait())
            except queue.Empty:
                return out

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._owner._remove_watch(self)


class _Lease:
    __slots__ = ("ttl", "expires_at", "keys")

    def __init__(self, ttl: float, expires_at: float):
        self.ttl = ttl
        self.expires_at = expires_at
        self.keys: set[str] = set()


class MemoryStore(CellStore):
    def __init__(self, limits: StoreLimits | None = None, clock: Clock | None = None):
        self.limits = limits or StoreLimits()
        self.clock = clock or RealClock()
        self._lock = threading.RLock()
        self._data: dict[str, KeyValue] = {}
        self._sorted_keys = SortedKeys()  # for prefix reads
        self._revision = 1  # etcd starts a fresh cluster at revision 1
        self._compacted = 0
        self._history: list[WatchEvent] = []  # every event after the compact revision
        self._watches: list[_MemoryWatch] = []
        self._pending: list[WatchEvent] = []  # this txn's events, published to the watches at its end
        self._leases: dict[int, _Lease] = {}
        self._lease_ids = itertools.count(0x1000)

    # -- txn ----------------------------------------------------------------

    def txn(self, compares: Sequence[ModRevisionIs], success: Sequence[Op],
            failure: Sequence[Op] = ()) -> TxnResult:
        check_txn_limits(self.limits, compares, success, failure)
        with self._lock:
            self._expire_leases()
            ok = self._compares_hold([(c.key, c.revision) for c in compares])
            ops = success if ok else failure
            self._require_leases([op.lease for op in ops if type(op) is Put])
            # etcd: reads in a txn see the txn's own earlier writes; keep that order.
            reads: list[list[KeyValue]] = []
            new_rev = self._revision + 1
            changed = False
            for op in ops:
                if type(op) is Put:
                    self._apply_put(op, new_rev)
                    changed = True
                elif type(op) is Get:
                    reads.append(self._read(op))
                elif self._apply_delete(op.key, new_rev):
                    changed = True
            return self._end_txn(ok, changed, new_rev, reads)

    def txn_sequence_packed(self, steps: Sequence[wire.PackedTxn]) -> list[TxnResult]:
        """txn_sequence over txns as cellstate/store/wire.py packs them, run from their tuples
        without an op object per op (the Ray-hosted store's bulk submissions): the same checks
        (wire.check_packed_limits), compares, effects and results as txn_sequence
        (tests/test_store_wire.py)."""
        out: list[TxnResult] = []
        for i, (compares, success, failure) in enumerate(steps):
            if any(r == AFTER_PREVIOUS for _, r in compares):
                if i == 0:
                    raise InvalidInputError("a compare at AFTER_PREVIOUS needs a step before it")
                prev = out[-1].revision
                compares = [(k, prev if r == AFTER_PREVIOUS else r) for k, r in compares]
            result = self._txn_packed(compares, success, failure)
            out.append(result)
            if not result.succeeded:
                break
        return out

    def _txn_packed(self, compares, success, failure) -> TxnResult:
        """txn, for one packed txn: the same steps, on op tuples (wire.PackedTxn)."""
        wire.check_packed_limits(self.limits, compares, success, failure)
        put, get = wire.PUT, wire.GET
        with self._lock:
            self._expire_leases()
            ok = self._compares_hold(compares)
            ops = success if ok else failure
            self._require_leases([op[3] for op in ops if op[0] == put])
            reads: list[list[KeyValue]] = []
            new_rev = self._revision + 1
            changed = False
            for op in ops:
                kind = op[0]
                if kind == put:
                    self._put(op[1], op[2], op[3], new_rev)
                    changed = True
                elif kind == get:
                    reads.append(self._read(Get(op[1], op[2], op[3], op[4])))
                elif self._apply_delete(op[1], new_rev):
                    changed = True
            return self._end_txn(ok, changed, new_rev, reads)

    def _compares_hold(self, compares: Iterable[tuple[str, int]]) -> bool:
        """Every (key, mod_revision) compare holds now (revision 0: the key is absent)."""
        data = self._data
        for key, revision in compares:
            kv = data.get(key)
            if (kv.mod_revision if kv else 0) != revision:
                return False
        return True

    def _require_leases(self, leases: Iterable[int]) -> None:
        """A put bound to a lease that is gone fails the whole txn, before any write (etcd)."""
        for lease in leases:
            if lease and lease not in self._leases:
                raise LeaseNotFoundError(f"lease {lease:x} not found")

    def _end_txn(self, ok: bool, changed: bool, new_rev: int, reads: list[list[KeyValue]]) -> TxnResult:
        """The revision moves only if something changed (deleting an absent key does not);
        the txn's events reach the watches together, at its end."""
        if changed:
            self._revision = new_rev
            self._publish(new_rev)
        return TxnResult(ok, self._revision, reads)

    def _read(self, op: Get) -> list[KeyValue]:
        if not op.prefix:
            kv = self._data.get(op.key)
            return [kv] if kv else []
        lo, data = max(op.key, op.start), self._data
        if not op.key or ord(op.key[-1]) == 0x10FFFF:  # no bound to bump: take while under the prefix
            under = itertools.takewhile(lambda k: k.startswith(op.key), self._sorted_keys.between(lo, None))
            return [data[k] for k in itertools.islice(under, op.limit or None)]
        # the keys under a prefix are those from it up to the prefix with its last character bumped
        hi = op.key[:-1] + chr(ord(op.key[-1]) + 1)
        return [data[k] for k in self._sorted_keys.between(lo, hi, op.limit)]

    def _apply_put(self, op: Put, rev: int) -> None:
        self._put(op.key, op.value, op.lease, rev)

    def _put(self, key: str, value: bytes, lease: int, rev: int) -> None:
        old = self._data.get(key)
        if old is None:
            self._sorted_keys.add(key)
            kv = KeyValue(key, value, rev, rev, 1, lease)
        else:
            if old.lease and old.lease != lease and old.lease in self._leases:
                self._leases[old.lease].keys.discard(key)
            kv = KeyValue(key, value, rev, old.create_revision, old.version + 1, lease)
        if lease:
            self._leases[lease].keys.add(key)
        self._data[key] = kv
        self._emit(WatchEvent(EventType.PUT, key, value, rev))

    def _apply_delete(self, key: str, rev: int) -> bool:
        old = self._data.pop(key, None)
        if old is None:
            return False
        self._sorted_keys.discard(key)
        if old.lease and old.lease in self._leases:
            self._leases[old.lease].keys.discard(key)
        self._emit(WatchEvent(EventType.DELETE, key, b"", rev))
        return True

    def _emit(self, ev: WatchEvent) -> None:
        self._history.append(ev)
        self._pending.append(ev)

    def _publish(self, rev: int) -> None:
        """Hand the events of one revision to the synced watches that take them (under the lock)."""
        events, self._pending = self._pending, []
        by_prefix: dict[str, list[WatchEvent]] = {}
        for w in self._watches:
            if not w.synced or w.start_revision > rev:
                continue
            mine = by_prefix.get(w.prefix)
            if mine is None:
                mine = by_prefix[w.prefix] = [ev for ev in events if ev.key.startswith(w.prefix)]
            if mine:
                w._push(mine)

    # -- watches ------------------------------------------------------------

    def watch(self, prefix: str, start_revision: int) -> Watch:
        check_revision_arg("watch start revision", start_revision, 0)
        with self._lock:
            self._expire_leases()
            if start_revision == 0:  # etcd: "from now on"
                start_revision = self._revision + 1
            if start_revision < self._compacted:
                raise CompactedError(start_revision, self._compacted)
            w = _MemoryWatch(self, prefix, start_revision, synced=start_revision > self._revision)
            self._watches.append(w)
            return w

    def _sync_watch(self, w: _MemoryWatch) -> None:
        """Hand an unsynced watch its backlog, or fail it if compaction got there first."""
        with self._lock:
            if w.synced:
                return
            if w.start_revision < self._compacted:
                w._error = CompactedError(w.start_revision, self._compacted)
                self._remove_watch(w)
                raise w._error
            revs = [e.mod_revision for e in self._history]
            backlog = [ev for ev in self._history[bisect.bisect_left(revs, w.start_revision):]
                       if ev.key.startswith(w.prefix)]
            if backlog:
                w._push(backlog)
            w.synced = True

    def _remove_watch(self, w: _MemoryWatch) -> None:
        with self._lock:
            if w in self._watches:
                self._watches.remove(w)

    def compact(self, revision: int) -> None:
        check_revision_arg("compact revision", revision, 1)
        with self._lock:
            if revision > self._revision:
                raise FutureRevisionError(revision, self._revision)
            if revision <= self._compacted:
                raise CompactedError(revision, self._compacted)
            self._compacted = revision
            revs = [e.mod_revision for e in self._history]
            del self._history[: bisect.bisect_left(revs, revision)]

    # -- leases ---------------------------------------------------------------

    def grant_lease(self, ttl_s: int) -> int:
        check_lease_ttl(ttl_s)
        with self._lock:
            lease_id = next(self._lease_ids)
            self._leases[lease_id] = _Lease(ttl_s, self.clock.now() + ttl_s)
            return lease_id

    def refresh_lease(self, lease_id: int) -> None:
        with self._lock:
            self._expire_leases()
            lease = self._leases.get(lease_id)
            if lease is None:
                raise LeaseNotFoundError(f"lease {lease_id:x} not found or expired")
            lease.expires_at = self.clock.now() + lease.ttl

    def revoke_lease(self, lease_id: int) -> None:
        with self._lock:
            self._expire_leases()  # an expired lease is gone, whether or not anyone looked since
            lease = self._leases.get(lease_id)
            if lease is None:
                raise LeaseNotFoundError(f"lease {lease_id:x} not found or expired")
            self._drop_lease(lease_id, lease)

    def _expire_leases(self) -> None:
        if not self._leases:
            return
        with self._lock:
            now = self.clock.now()
            for lease_id, lease in list(self._leases.items()):
                if lease.expires_at <= now:
                    self._drop_lease(lease_id, lease)

    def _drop_lease(self, lease_id: int, lease: _Lease) -> None:
        del self._leases[lease_id]
        if lease.keys:
            # All of a lease's keys go in one revision, as in etcd.
            self._revision += 1
            for key in sorted(lease.keys):
                self._apply_delete(key, self._revision)
            self._publish(self._revision)

    def close(self) -> None:
        with self._lock:
            for w in list(self._watches):
                w.close()
