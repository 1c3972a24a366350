"""The CellStore contract: what every backend (etcd, memory) provides.

The semantics are etcd's, so that nothing that passes on the embedded store fails on
etcd:
- one global revision, bumped once per txn that changes something (a txn that only
  reads, or only deletes absent keys, leaves it alone); every key carries its mod_revision;
- a txn is (compares, success ops, failure ops); compares look at mod_revision
  (0 = the key is absent); both branches may contain Get ops, so a failed commit
  returns the current values of the keys it touched without another round trip;
  reads see the txn's own earlier writes;
- a key is written at most once per txn; ops per branch and request bytes are limited;
- a Put bound to a dead lease refuses the whole txn with LeaseNotFoundError;
- watches deliver every change on a prefix from a given revision, in order (see Watch
  for what compaction does to them);
- leases expire after their TTL unless refreshed, deleting the keys bound to them.
Every failure is a CellError (errors.py); no client library error escapes a backend.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence, Sized
from dataclasses import dataclass
from enum import Enum
from typing import NamedTuple

from ..errors import InvalidInputError, TxnLimitError

DEFAULT_MAX_TXN_OPS = 128  # etcd's --max-txn-ops default; production must not rely on more
DEFAULT_MAX_REQUEST_BYTES = 1_572_864  # etcd's --max-request-bytes default (1.5 MiB)
MAX_LEASE_TTL_S = 9_000_000_000  # etcd's MaxLeaseTTL; it refuses longer leases


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


AFTER_PREVIOUS = -1  # a ModRevisionIs revision in CellStore.txn_sequence: the revision the step before produced


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
    """A stream of changes on one prefix, starting at a revision, in revision order.

    `start_revision` 0 means "from the next revision on" (etcd's meaning); a future one
    delivers nothing before it; a negative one is refused with InvalidInputError; one
    below the compact revision raises CompactedError, at open or on the first get.

    Compaction (what a real etcd does, and the memory store copies):
    - a caught-up watch (opened at the next revision, or one that has read its backlog)
      is never affected: events already delivered to it survive a later compaction even
      when its consumer has not called get yet;
    - a watch opened at a past revision reads its backlog asynchronously (etcd: up to
      1,000 revisions per 100 ms round; memory: all of it on the first get). If history
      is compacted past the point it has read, it fails with CompactedError after
      delivering a gapless prefix of its events (possibly none).
    After CompactedError or StoreUnavailableError a watch is dead: every later get raises
    the same error. Close it, then resynchronise (read, and watch from the read's
    revision + 1), or reopen from last revision + 1 after StoreUnavailableError.
    """

    @abstractmethod
    def get(self, timeout: float = 0.0) -> list[WatchEvent]:
        """Events available now, waiting up to `timeout` for the first one.

        Events received before a failure are returned first; the failure is raised by
        the next call: CompactedError when history the watch still needed was
        compacted, StoreUnavailableError when the stream broke.
        """

    @abstractmethod
    def close(self) -> None: ...


def check_lease_ttl(ttl_s: object) -> None:
    """A lease TTL is whole seconds in [1, MAX_LEASE_TTL_S]. etcd would silently raise
    0 or a negative TTL to its minimum, and the memory store would expire it at once."""
    if type(ttl_s) is not int or not 1 <= ttl_s <= MAX_LEASE_TTL_S:
        raise InvalidInputError(f"lease TTL must be whole seconds in [1, {MAX_LEASE_TTL_S}], got {ttl_s!r}")


def check_revision_arg(name: str, revision: object, minimum: int) -> None:
    if type(revision) is not int or revision < minimum:
        raise InvalidInputError(f"{name} must be an integer >= {minimum}, got {revision!r}")


def check_txn_limits(limits: StoreLimits, compares: Sequence[ModRevisionIs], success: Sequence[Op],
                     failure: Sequence[Op]) -> None:
    """Refuse a txn that etcd would refuse, with the same rules, before sending it. The rules
    are the check_* functions below, shared with the packed form (wire.check_packed_limits)."""
    check_op_counts(limits, compares, success, failure)
    # Rough request size: keys, values and a few bytes of framing per op, as etcd counts it.
    size = 16 * len(compares) + sum(len(c.key) for c in compares)
    for branch in (success, failure):
        for op in branch:
            _check_op(op)
        check_written_once([op.key for op in branch if type(op) is not Get])
        size += sum(len(op.key) + 8 for op in branch)
        size += sum(len(op.value) for op in branch if type(op) is Put)
    check_request_size(limits, size)


def check_op_counts(limits: StoreLimits, compares: Sized, success: Sized, failure: Sized) -> None:
    max_ops = limits.max_txn_ops
    for name, seq in (("compares", compares), ("success ops", success), ("failure ops", failure)):
        if len(seq) > max_ops:
            raise TxnLimitError(f"txn has {len(seq)} {name}; the store allows {max_ops}")


def check_written_once(written: list[str]) -> None:
    """etcd refuses a txn branch that writes one key twice."""
    if len(set(written)) != len(written):
        dup = next(k for k in written if written.count(k) > 1)
        raise TxnLimitError(f"txn writes key {dup!r} twice")


def check_request_size(limits: StoreLimits, size: int) -> None:
    if size > limits.max_request_bytes:
        raise TxnLimitError(f"txn request is about {size} bytes; the store allows {limits.max_request_bytes}")


def check_op_key(key: object) -> None:
    """Malformed ops are refused whole, the same on every backend (etcd refuses an empty key)."""
    if type(key) is not str or not key:
        raise InvalidInputError(f"a txn op needs a non-empty str key, got {key!r}")


def check_put_value(key: str, value: object) -> None:
    if type(value) is not bytes:
        raise InvalidInputError(f"Put {key!r}: value must be bytes, got {type(value).__name__}")


def check_get_limit(key: str, limit: object) -> None:
    """A negative limit would mean "no limit" on etcd and "nothing" elsewhere."""
    if type(limit) is not int or limit < 0:
        raise InvalidInputError(f"Get {key!r}: limit must be an integer >= 0, got {limit!r}")


def _check_op(op: Op) -> None:
    check_op_key(op.key)
    if type(op) is Put:
        check_put_value(op.key, op.value)
    elif type(op) is Get:
        check_get_limit(op.key, op.limit)


class CellStore(ABC):
    """The one shared component every scheduler agrees on."""

    limits: StoreLimits

    @abstractmethod
    def txn(self, compares: Sequence[ModRevisionIs], success: Sequence[Op],
            failure: Sequence[Op] = ()) -> TxnResult:
        """Atomically: if every compare holds run `success`, else run `failure`.

        Raises (nothing applied unless said otherwise) TxnLimitError for an over-limit
        txn, InvalidInputError for a malformed op, LeaseNotFoundError for a Put in the
        executed branch bound to a dead lease, StoreUnavailableError when the store
        could not take it, CommitOutcomeUnknown when a write may or may not have been
        applied.
        """

    def txn_sequence(self, steps: Sequence[tuple[Sequence[ModRevisionIs], Sequence[Op], Sequence[Op]]]) -> list[TxnResult]:
        """Several txns in order, each atomic on its own, as if sent one by one: stops after
        the first whose compares fail (its result, with its failure branch's reads, is the
        last). A compare at revision AFTER_PREVIOUS holds when the key's mod revision is the
        revision the step before produced (what a caller sending them one by one would
        compare once it saw that result). An exception from a step is raised as txn raises
        it; the steps before it landed. A store in another process (the Ray-hosted one)
        runs them in one call (docs/architecture.md, "The REST API")."""
        out: list[TxnResult] = []
        for i, (compares, success, failure) in enumerate(steps):
            if any(c.revision == AFTER_PREVIOUS for c in compares):
                if i == 0:
                    raise InvalidInputError("a compare at AFTER_PREVIOUS needs a step before it")
                prev = out[-1].revision
                compares = [ModRevisionIs(c.key, prev) if c.revision == AFTER_PREVIOUS else c for c in compares]
            result = self.txn(compares, success, failure)
            out.append(result)
            if not result.succeeded:
                break
        return out

    @abstractmethod
    def watch(self, prefix: str, start_revision: int) -> Watch: ...

    @abstractmethod
    def grant_lease(self, ttl_s: int) -> int:
        """A new lease. InvalidInputError unless `ttl_s` passes check_lease_ttl; etcd may
        grant a longer TTL than asked (its minimum follows the election timeout)."""

    @abstractmethod
    def refresh_lease(self, lease_id: int) -> None:
        """Raises LeaseNotFoundError when the lease expired, was revoked or never existed."""

    @abstractmethod
    def revoke_lease(self, lease_id: int) -> None:
        """Deletes the lease's keys in one revision. LeaseNotFoundError when the lease
        expired (once the store has deleted its keys), was revoked or never existed."""

    @abstractmethod
    def compact(self, revision: int) -> None:
        """Drop history before `revision`; watches that still need it fail (see Watch).

        InvalidInputError for a revision below 1, FutureRevisionError for one the store
        has not reached, CompactedError for one at or below the last compaction.
        """

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
