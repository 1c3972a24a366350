"""One CPU baton for the scheduler loops that share an interpreter (docs/architecture.md,
"Parallel schedulers: the CPU baton").

Scheduler loops on threads of one process (``cellsched api``'s hosted schedulers, the
thread runner of the benchmarks) share one GIL. NumPy drops the GIL around most operations
on arrays of more than a few hundred elements, so N CPU-bound loops hand the GIL to each
other at nearly every column operation of a decision: every hand-off is an OS context
switch, and measured here four threads placed 4,383 tasks/s where one placed 11,243, with
no conflict at all. Their CPU work cannot overlap anyway (the GIL), so a loop holds the
baton for its whole step and the others wait on a lock instead of fighting for the GIL.

What the baton must not serialise is waiting on a store: a step that blocks on a round trip
(etcd, a store hosted in another process) releases the baton for the call, so another
loop decides meanwhile (``BatonStore``). The in-process memory store is CPU work under its
own lock, so it keeps the baton. The background threads of a loop (its lease refresher,
claim and commit pools, watch readers) never take the baton.

Ray actors are processes with a GIL each: they get no baton.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from cellsched.cellstate.store import CellStore, KeyValue, MemoryStore, ModRevisionIs, Op, TxnResult, Watch


class CpuBaton:
    """A first-come-first-served lock that knows its holder, so a store call on any thread
    can tell whether it runs inside a held step (and must hand the baton on while it
    waits) or not. First come, first served: a plain Lock lets the releasing loop take it
    straight back at its next step, and a loop back from a round trip can starve behind
    the others (measured: 8 loops on etcd fell to 738 tasks/s from 4,010 with one)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()  # guards _owner and _waiting
        # The loops that asked, in order, each with the lock it sleeps on: a release hands the
        # baton to the first one and wakes only it (a shared condition's notify_all woke all
        # N - 1 waiters at every hand-off, each to find it was not its turn: 8 loops spent
        # about 2% of their CPU so).
        self._waiting: deque[tuple[int, threading.Lock]] = deque()
        self._owner: int | None = None
        self.handoffs = 0  # times a step gave the baton up for a store round trip

    def _acquire(self) -> None:
        me = threading.get_ident()
        with self._lock:
            if self._owner is None and not self._waiting:
                self._owner = me
                return
            wake = threading.Lock()
            wake.acquire()
            self._waiting.append((me, wake))
        wake.acquire()  # released by the hand-off, which made us the owner first

    def _release(self) -> None:
        with self._lock:
            if not self._waiting:
                self._owner = None
                return
            self._owner, wake = self._waiting.popleft()
        wake.release()

    @contextmanager
    def held(self) -> Iterator[None]:
        self._acquire()
        try:
            yield
        finally:
            self._release()

    @contextmanager
    def released(self) -> Iterator[None]:
        """Give the baton up around a blocking call, when this thread holds it."""
        if self._owner != threading.get_ident():
            yield
            return
        self.handoffs += 1
        self._release()
        try:
            yield
        finally:
            self._acquire()


class NoBaton:
    """The baton of a loop that shares its interpreter with no other loop."""

    @contextmanager
    def held(self) -> Iterator[None]:
        yield


NO_BATON = NoBaton()


def blocks_on_io(store: CellStore) -> bool:
    """Whether a call on `store` waits for another process (so the baton is given up)."""
    inner = getattr(store, "inner", None)  # a wrapping client (a counting store, say) of another store
    if isinstance(inner, CellStore):
        return blocks_on_io(inner)
    return not isinstance(store, MemoryStore)


class BatonStore(CellStore):
    """`inner`, with the baton given up for every call made inside a held step."""

    def __init__(self, inner: CellStore, baton: CpuBaton):
        self.inner, self.baton, self.limits = inner, baton, inner.limits

    def txn(self, compares: Sequence[ModRevisionIs], success: Sequence[Op],
            failure: Sequence[Op] = ()) -> TxnResult:
        with self.baton.released():
            return self.inner.txn(compares, success, failure)

    def watch(self, prefix: str, start_revision: int) -> Watch:
        with self.baton.released():
            return self.inner.watch(prefix, start_revision)

    def grant_lease(self, ttl_s: int) -> int:
        with self.baton.released():
            return self.inner.grant_lease(ttl_s)

    def refresh_lease(self, lease_id: int) -> None:
        with self.baton.released():
            self.inner.refresh_lease(lease_id)

    def revoke_lease(self, lease_id: int) -> None:
        with self.baton.released():
            self.inner.revoke_lease(lease_id)

    def compact(self, revision: int) -> None:
        with self.baton.released():
            self.inner.compact(revision)

    def close(self) -> None:
        self.inner.close()

    def __getattr__(self, name: str):
        return getattr(self.inner, name)  # anything a backend adds to the contract, as it is

    # The conveniences go to the inner store's own (a backend may do them in one call).
    def get(self, key: str) -> KeyValue | None:
        with self.baton.released():
            return self.inner.get(key)

    def get_prefix(self, prefix: str) -> tuple[list[KeyValue], int]:
        with self.baton.released():
            return self.inner.get_prefix(prefix)

    def get_page(self, prefix: str, limit: int, after: str = "") -> list[KeyValue]:
        with self.baton.released():
            return self.inner.get_page(prefix, limit, after)

    def put(self, key: str, value: bytes, lease: int = 0) -> int:
        with self.baton.released():
            return self.inner.put(key, value, lease)

    def delete(self, key: str) -> int:
        with self.baton.released():
            return self.inner.delete(key)

    def current_revision(self) -> int:
        with self.baton.released():
            return self.inner.current_revision()


def baton_store(store: CellStore, baton: CpuBaton | None) -> CellStore:
    """The store a loop holding `baton` should use: `store` itself when there is no baton
    or its calls never wait on another process."""
    if baton is None or not blocks_on_io(store):
        return store
    return BatonStore(store, baton)
