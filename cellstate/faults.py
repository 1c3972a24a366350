"""Fault injection for tests and chaos runs: a store wrapper with a hook after send.

`AfterSendStore` applies a write txn for real and then calls a hook before handing the
result back: the hook can drop the ack (raise CommitOutcomeUnknown) or kill the process
(SIGKILL), which is exactly the window where a commit's outcome is unknown to its sender.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from .store import CellStore, Get, ModRevisionIs, Op, TxnResult, Watch


class AfterSendStore(CellStore):
    def __init__(self, inner: CellStore, hook: Callable[[Sequence[Op], TxnResult], None]):
        self.inner = inner
        self.hook = hook
        self.limits = inner.limits

    def txn(self, compares: Sequence[ModRevisionIs], success: Sequence[Op], failure: Sequence[Op] = ()) -> TxnResult:
        result = self.inner.txn(compares, success, failure)
        if any(type(op) is not Get for op in success) and compares:
            self.hook(success, result)
        return result

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
