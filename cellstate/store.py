"""The CellStore contract: what every backend (etcd, memory) provides.

The semantics are etcd's, so that nothing that passes on the embedded store fails on
etcd:
- one global revision, bumped once per write txn; every key carries its mod_revision;
- a txn is (compares, success ops, failure ops); compares look at mod_revision
  (0 = the key is absent); both branches may contain Get ops, so a failed commit
  returns the current values of the keys it touched without another round trip;
- a key is written at most once per txn; ops per branch and request bytes are limited;
- watches deliver every change on a prefix from a given revision, in order, or raise
  CompactedError if that revision was compacted away;
- leases expire after their TTL unless refreshed, deleting the keys bound to them.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum
from typing import NamedTuple

from .errors import TxnLimitError

DEFAULT_MAX_TXN_OPS = 128  # etcd's --max-txn-ops default; production must not rely on more
DEFAULT_MAX_REQUEST_BYTES = 1_572_864  # etcd's --max-request-bytes default (1.5 MiB)


@dataclass(frozen=True, slots=True)
class StoreLimits:
    max_txn_ops: int = DEFAULT_MAX_TXN_OPS
    max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES


class KeyValue(NamedTuple):  # a NamedTuple: built once per key per txn, so cheap construction matters
    key: str
    value: bytes
    mod_revision: int
    create_revision: int
    version: int
    lease: int = 0


@dataclass(frozen=True, slots=True)
class Put:
    key: str
    value: bytes
    lease: int = 0


@dataclass(frozen=True, slots=True)
class Delete:
    key: str


@dataclass(frozen=True, slots=True)
class Get:
    """Read one key, or with `prefix` every key under it in key order.

    A prefix read may be paged: `start` (a key under the prefix) is the first key to
    return, `limit` caps the keys returned (0: no cap). Paging is what keeps a claim
    step's or a purge's reads bounded as the cell grows.
    """

    key: str
    prefix: bool = False
    limit: int = 0
    start: str = ""


Op = Put | Delete | Get


@dataclass(frozen=True, slots=True)
class ModRevisionIs:
    """True when the key's mod_revision equals `revision`; 0 means the key is absent."""

    key: str
    revision: int


@dataclass(frozen=True, slots=True)
class TxnResult:
    succeeded: bool
    revision: int  # the store's revision after this txn (header revision)
    reads: list[list[KeyValue]]  # one list per Get op of the executed branch, in order


class EventType(Enum):
    PUT = "put"
    DELETE = "delete"


class WatchEvent(NamedTuple):
    type: EventType
    key: str
    value: bytes  # empty for deletes
    mod_revision: int


class Watch(ABC):
    """A stream of changes on one prefix, starting at a revision, in revision order."""

    @abstractmethod
    def get(self, timeout: float = 0.0) -> list[WatchEvent]:
        """Events available now, waiting up to `timeout` for the first one.

        Raises CompactedError when the start revision was compacted and
        StoreUnavailableError when the stream broke; reopen from last revision + 1.
        """

    @abstractmethod
    def close(self) -> None: ...


def check_txn_limits(limits: StoreLimits, compares: Sequence[object], success: Sequence[Op],
                     failure: Sequence[Op]) -> None:
    """Refuse a txn that etcd would refuse, with the same rules, before sending it."""
    max_ops = limits.max_txn_ops
    for name, seq in (("compares", compares), ("success ops", success), ("failure ops", failure)):
        if len(seq) > max_ops:
            raise TxnLimitError(f"txn has {len(seq)} {name}; the store allows {max_ops}")
    # Rough request size: keys, values and a few bytes of framing per op, as etcd counts it.
    size = 16 * len(compares) + sum(len(c.key) for c in compares)  # type: ignore[attr-defined]
    for branch in (success, failure):
        written = [op.key for op in branch if type(op) is not Get]
        if len(set(written)) != len(written):
            dup = next(k for k in written if written.count(k) > 1)
            raise TxnLimitError(f"txn writes key {dup!r} twice")
        size += sum(len(op.key) + 8 for op in branch)
        size += sum(len(op.value) for op in branch if type(op) is Put)
    if size > limits.max_request_bytes:
        raise TxnLimitError(f"txn request is about {size} bytes; the store allows {limits.max_request_bytes}")


class CellStore(ABC):
    """The one shared component every scheduler agrees on."""

    limits: StoreLimits

    @abstractmethod
    def txn(self, compares: Sequence[ModRevisionIs], success: Sequence[Op],
            failure: Sequence[Op] = ()) -> TxnResult:
        """Atomically: if every compare holds run `success`, else run `failure`.

        Raises TxnLimitError for an over-limit txn (nothing applied),
        CommitOutcomeUnknown when the request may or may not have been applied.
        """

    @abstractmethod
    def watch(self, prefix: str, start_revision: int) -> Watch: ...

    @abstractmethod
    def grant_lease(self, ttl_s: int) -> int: ...

    @abstractmethod
    def refresh_lease(self, lease_id: int) -> None:
        """Raises LeaseNotFoundError when the lease already expired."""

    @abstractmethod
    def revoke_lease(self, lease_id: int) -> None: ...

    @abstractmethod
    def compact(self, revision: int) -> None:
        """Drop history before `revision`; watches from earlier revisions fail after this."""

    @abstractmethod
    def close(self) -> None: ...

    # Conveniences built on txn, identical for every backend.

    def get(self, key: str) -> KeyValue | None:
        kvs = self.txn([], [Get(key)]).reads[0]
        return kvs[0] if kvs else None

    def get_prefix(self, prefix: str) -> tuple[list[KeyValue], int]:
        result = self.txn([], [Get(prefix, prefix=True)])
        return result.reads[0], result.revision

    def get_page(self, prefix: str, limit: int, after: str = "") -> list[KeyValue]:
        """Up to `limit` keys under `prefix` in key order, strictly after the key `after`."""
        start = after + "\0" if after else ""
        return self.txn([], [Get(prefix, prefix=True, limit=limit, start=start)]).reads[0]

    def put(self, key: str, value: bytes, lease: int = 0) -> int:
        return self.txn([], [Put(key, value, lease)]).revision

    def delete(self, key: str) -> int:
        return self.txn([], [Delete(key)]).revision

    def current_revision(self) -> int:
        return self.txn([], []).revision
