"""A store wrapper for race and fault tests: records every txn, runs code in the window
right after one (as another process would), or fails chosen txns. Every other call goes
to the inner store (cellstate.faults.DelegatingStore)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from cellsched.cellstate.faults import DelegatingStore
from cellsched.cellstate.store import CellStore, Get, ModRevisionIs, Op, TxnResult

Hook = Callable[[Sequence[ModRevisionIs], Sequence[Op], TxnResult], None]


class SpyStore(DelegatingStore):
    def __init__(self, inner: CellStore, after: Hook | None = None,
                 fail: Callable[[Sequence[Op]], Exception | None] | None = None):
        super().__init__(inner)
        self.after = after  # called after each txn, with its compares, success ops and result
        self.fail = fail  # returns the error to raise instead of sending the txn, or None
        self.txns: list[tuple[list[ModRevisionIs], list[Op]]] = []

    def txn(self, compares: Sequence[ModRevisionIs], success: Sequence[Op], failure: Sequence[Op] = ()) -> TxnResult:
        if self.fail is not None:
            exc = self.fail(success)
            if exc is not None:
                raise exc
        self.txns.append((list(compares), list(success)))
        result = self.inner.txn(compares, success, failure)
        if self.after is not None:
            self.after(compares, success, result)
        return result

    def gets(self) -> list[list[Get]]:
        """The Get ops of every txn sent so far, one list per txn (empty lists dropped)."""
        out = [[op for op in ops if type(op) is Get] for _, ops in self.txns]
        return [g for g in out if g]
