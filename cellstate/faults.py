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

A "write txn" is one with compares and a non-Get op: commits, claims, parks, releases,
state changes. Plain reads and unconditional writes pass through untouched, so a
settling read after a lost ack is never itself faulted.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass

from .errors import CommitOutcomeUnknown, InvalidInputError, StoreUnavailableError
from .store import CellStore, Get, ModRevisionIs, Op, TxnResult, Watch

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
            hits = [kind for kind, hit in (("unavailable", unavailable), ("lost_ack", lost), ("delay", delay > 0))
                    if hit]
            for kind in hits:
                self._counts[kind] += 1
        if self.on_fault is not None:
            for kind in hits:
                self.on_fault(kind)
        return unavailable, lost, delay

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
