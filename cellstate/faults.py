"""Fault injection for tests and chaos runs: store wrappers around a real store.

- `DelegatingStore` forwards every call to an inner store, so a wrapper overrides only
  what it changes.
- `AfterSendStore` applies a write txn for real and then calls a hook before handing the
  result back: the hook can drop the ack (raise CommitOutcomeUnknown) or kill the process
  (SIGKILL), which is exactly the window where a commit's outcome is unknown to its sender.
- `FaultInjectingStore` injects, with seeded probabilities, the three faults a write txn
  can meet: the store is unreachable before the send (nothing applied), the ack is lost
  after the txn applied (outcome unknown to the sender), and a delay between the
  sender's read and its commit (its view goes stale while it waits). Its `after_write`
  hook runs after every committed write, e.g. an invariant check.
- `ScriptedFaultStore` injects the same faults deterministically, on chosen txns: the nth
  txn that writes a key under a prefix is refused before it is sent, or applied and its
  ack dropped. What a test needs to hit one exact chunk of one commit.
- `CountingStore` counts what each txn's executed branch did (writes, Get ops, keys read),
  in all and under chosen prefixes, so a test can bound what a step costs.

A "write txn" is one with compares and a non-Get op: commits, claims, parks, releases,
state changes. Plain reads and unconditional writes pass through FaultInjectingStore
untouched, so a settling read after a lost ack is never itself faulted. ScriptedFaultStore
counts by what a txn writes instead (compares or not); reads are never counted.
"""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Collection, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass

from .errors import CommitOutcomeUnknown, InvalidInputError, StoreUnavailableError
from .store import CellStore, Delete, Get, ModRevisionIs, Op, Put, TxnResult, Watch

FAULT_KINDS = ("unavailable", "lost_ack", "delay")


def is_write_txn(compares: Sequence[ModRevisionIs], success: Sequence[Op]) -> bool:
    return bool(compares) and any(type(op) is not Get for op in success)


class DelegatingStore(CellStore):
    """Every call goes to `inner`; subclasses override what they change."""

    def __init__(self, inner: CellStore):
        self.inner = inner
        self.limits = inner.limits

    def txn(self, compares: Sequence[ModRevisionIs], success: Sequence[Op], failure: Sequence[Op] = ()) -> TxnResult:
        return self.inner.txn(compares, success, failure)

    def watch(self, prefix: str, start_revision: int) -> Watch:
        return self.inner.watch(prefix, start_revision)

    def grant_lease(self, ttl_s: int) -> int:
        return self.inner.grant_lease(ttl_s)

    def refresh_lease(self, lease_id: int) -> None:
        self.inner.refresh_lease(lease_id)

    def revoke_lease(self, lease_id: int) -> None:
        self.inner.revoke_lease(lease_id)

    def compact(self, revision: int) -> None:
        self.inner.compact(revision)

    def close(self) -> None:
        self.inner.close()


class AfterSendStore(DelegatingStore):
    def __init__(self, inner: CellStore, hook: Callable[[Sequence[Op], TxnResult], None]):
        super().__init__(inner)
        self.hook = hook

    def txn(self, compares: Sequence[ModRevisionIs], success: Sequence[Op], failure: Sequence[Op] = ()) -> TxnResult:
        result = self.inner.txn(compares, success, failure)
        if is_write_txn(compares, success):
            self.hook(success, result)
        return result


@dataclass(frozen=True, slots=True)
class FaultPlan:
    """Per write txn: the probability of each fault, and the delay's range."""

    p_unavailable: float = 0.0  # StoreUnavailableError before sending: nothing applied
    p_lost_ack: float = 0.0  # applied, then CommitOutcomeUnknown: the ack was lost
    p_delay: float = 0.0  # sleep before sending: the read the txn compares goes stale
    max_delay_s: float = 0.05

    def __post_init__(self) -> None:
        for name in ("p_unavailable", "p_lost_ack", "p_delay"):
            p = getattr(self, name)
            if not isinstance(p, (int, float)) or not 0.0 <= p <= 1.0:
                raise InvalidInputError(f"{name} must be a probability in [0, 1], got {p!r}")
        if not self.max_delay_s >= 0.0:
            raise InvalidInputError(f"max_delay_s must be non-negative, got {self.max_delay_s!r}")


# after_write(success ops, result): called once the store applied a write (a txn whose
# executed branch wrote something), before the caller sees the result.
AfterWrite = Callable[[Sequence[Op], TxnResult], None]


class FaultInjectingStore(DelegatingStore):
    """Seeded faults on write txns, counted per kind, plus an after-write hook.

    The fault draws come from one seeded generator under a lock: the sequence of draws is
    fixed by the seed, which txn gets which draw depends on the threads' interleaving.
    `write_lock`, when given, is held around applying a write and running `after_write`,
    so a hook that reads the store sees exactly the state that write produced (share one
    lock between every wrapper of the same store). Faults and delays stay outside it.
    """

    def __init__(self, inner: CellStore, plan: FaultPlan | None = None, seed: int = 0,
                 after_write: AfterWrite | None = None, write_lock: threading.Lock | None = None,
                 sleep: Callable[[float], None] = time.sleep, on_fault: Callable[[str], None] | None = None):
        super().__init__(inner)
        self.plan = plan or FaultPlan()
        self.after_write = after_write
        self.on_fault = on_fault  # called with the kind of each fault as it is injected
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._write_lock: AbstractContextManager = write_lock if write_lock is not None else nullcontext()
        self._sleep = sleep
        self._counts = dict.fromkeys(FAULT_KINDS, 0)
        self.write_txns = 0

    @property
    def faults(self) -> dict[str, int]:
        """Injected faults so far, per kind."""
        with self._lock:
            return dict(self._counts)

    def _draw(self) -> tuple[bool, bool, float]:
        p = self.plan
        with self._lock:
            self.write_txns += 1
            r_unavail, r_lost, r_delay, r_len = (self._rng.random() for _ in range(4))
            unavailable = r_unavail < p.p_unavailable
            lost = not unavailable and r_lost < p.p_lost_ack
            delay = r_len * p.max_delay_s if not unavailable and r_delay < p.p_delay else 0.0
        # A lost ack is counted once the txn was applied (in txn): should applying it
        # fail on its own (the store really down), no ack was there to lose.
        for kind, hit in (("unavailable", unavailable), ("delay", delay > 0)):
            if hit:
                self._count(kind)
        return unavailable, lost, delay

    def _count(self, kind: str) -> None:
        with self._lock:
            self._counts[kind] += 1
        if self.on_fault is not None:
            self.on_fault(kind)

    def txn(self, compares: Sequence[ModRevisionIs], success: Sequence[Op], failure: Sequence[Op] = ()) -> TxnResult:
        if not is_write_txn(compares, success):
            return self._apply(compares, success, failure)
        unavailable, lost, delay = self._draw()
        if unavailable:
            raise StoreUnavailableError("injected fault: store unreachable, txn not sent")
        if delay:
            self._sleep(delay)
        result = self._apply(compares, success, failure)
        if lost:
            self._count("lost_ack")
            raise CommitOutcomeUnknown(
                f"injected fault: ack lost after the txn was applied (succeeded={result.succeeded})")
        return result

    def _apply(self, compares, success, failure) -> TxnResult:
        if self.after_write is None:
            return self.inner.txn(compares, success, failure)
        with self._write_lock:
            result = self.inner.txn(compares, success, failure)
            ran = success if result.succeeded else failure
            if any(type(op) is not Get for op in ran):
                self.after_write(ran, result)
        return result


def writes_under(ops: Sequence[Op], prefix: str) -> bool:
    """Whether `ops` put or delete a key under `prefix` ("" matches every write)."""
    return any(type(op) is Put or type(op) is Delete for op in ops if op.key.startswith(prefix))


class ScriptedFaultStore(DelegatingStore):
    """Faults on chosen txns, by count: the nth txn (1-based) whose success branch writes a
    key under `prefix` ("" = any write), whether or not it has compares.

    - n in `unavailable_at`: StoreUnavailableError before it is sent; nothing applied;
    - n in `lost_ack_at`: applied for real, then CommitOutcomeUnknown: the ack was lost.

    Counting by what a txn writes, not by when it runs, is what lets a test aim at one
    chunk of one commit ("the third txn that writes a job record"). Reads and txns that
    write nothing under the prefix pass untouched and are not counted.
    """

    def __init__(self, inner: CellStore, prefix: str = "", *, unavailable_at: Collection[int] = (),
                 lost_ack_at: Collection[int] = ()):
        super().__init__(inner)
        both = set(unavailable_at) & set(lost_ack_at)
        if both:
            raise InvalidInputError(f"txn {min(both)} cannot be both unavailable and acked-then-lost")
        if any(type(n) is not int or n < 1 for n in (*unavailable_at, *lost_ack_at)):
            raise InvalidInputError("txn numbers are counted from 1")
        self.prefix = prefix
        self.unavailable_at = frozenset(unavailable_at)
        self.lost_ack_at = frozenset(lost_ack_at)
        self._lock = threading.Lock()
        self.matched = 0  # txns seen that write under the prefix
        self.injected: list[tuple[int, str]] = []  # (n, "unavailable" | "lost_ack"), in order

    def txn(self, compares: Sequence[ModRevisionIs], success: Sequence[Op], failure: Sequence[Op] = ()) -> TxnResult:
        if not writes_under(success, self.prefix):
            return self.inner.txn(compares, success, failure)
        with self._lock:
            self.matched += 1
            n = self.matched
        if n in self.unavailable_at:
            self._record(n, "unavailable")
            raise StoreUnavailableError(f"injected fault: store unreachable for txn {n}, not sent")
        result = self.inner.txn(compares, success, failure)
        if n in self.lost_ack_at:
            self._record(n, "lost_ack")
            raise CommitOutcomeUnknown(f"injected fault: ack of txn {n} lost after it was applied "
                                       f"(succeeded={result.succeeded})")
        return result

    def _record(self, n: int, kind: str) -> None:
        with self._lock:
            self.injected.append((n, kind))


class CountingStore(DelegatingStore):
    """Counts what each txn's executed branch did (the branch its compares chose):

    - `txns`: every txn sent through this wrapper;
    - `write_txns`: txns whose executed branch put or deleted something;
    - `failed_txns`: txns whose compares failed;
    - `gets[p]`: Get ops of executed branches whose key starts with p;
    - `keys_read[p]`: key-values those branches returned under p;
    - `writes[p]`: Put and Delete ops of executed branches under p.

    Counts are kept for "" (everything) and for each of `prefixes`. A txn that raised
    (store unreachable, limits) counts in `txns` only. `reset()` zeroes them all.
    """

    def __init__(self, inner: CellStore, prefixes: Sequence[str] = ()):
        super().__init__(inner)
        self.prefixes = ("", *(p for p in prefixes if p))
        self._lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        with self._lock:
            self.txns = 0
            self.write_txns = 0
            self.failed_txns = 0
            self.gets: Counter[str] = Counter()
            self.keys_read: Counter[str] = Counter()
            self.writes: Counter[str] = Counter()

    def txn(self, compares: Sequence[ModRevisionIs], success: Sequence[Op], failure: Sequence[Op] = ()) -> TxnResult:
        with self._lock:
            self.txns += 1
        result = self.inner.txn(compares, success, failure)
        ran = success if result.succeeded else failure
        with self._lock:
            wrote = False
            for op in ran:
                is_get = type(op) is Get
                wrote = wrote or not is_get
                for p in self.prefixes:
                    if op.key.startswith(p):
                        (self.gets if is_get else self.writes)[p] += 1
            self.write_txns += wrote
            self.failed_txns += not result.succeeded
            for kvs in result.reads:
                for kv in kvs:
                    for p in self.prefixes:
                        if kv.key.startswith(p):
                            self.keys_read[p] += 1
        return result
