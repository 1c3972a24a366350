"""The etcd backend: the only module that imports the etcd client library.

It speaks the python-etcd3 API through the maintained `cslab-etcd3` fork (current
protobuf stubs), but calls the gRPC stubs itself: one RPC per commit, the header
revision comes back with the result, and errors keep their status details. Every RPC
(txn, watch open, lease grant/refresh/revoke, compact) goes through `_rpc_errors`, which
maps etcd's and gRPC's errors to the contract's with one table, `_GRPC_ERRORS`:
- etcd refused the request (too many ops, dead lease, compacted, ...) -> the matching
  CellError, nothing applied;
- the request may have reached the leader (UNAVAILABLE, DEADLINE_EXCEEDED, anything not
  in the table) -> CommitOutcomeUnknown for writes, StoreUnavailableError for the rest:
  the caller settles by reading.
With several endpoints the client fails over to the next member.
"""

from __future__ import annotations

import queue
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import NamedTuple

import etcd3
import grpc
from etcd3 import etcdrpc
from etcd3 import exceptions as etcd_exc
from etcd3 import utils as etcd_utils

from ..errors import (
    CellError,
    CommitOutcomeUnknown,
    CompactedError,
    FutureRevisionError,
    InvalidInputError,
    LeaseNotFoundError,
    StoreUnavailableError,
    TxnLimitError,
)
from .contract import (
    CellStore,
    Delete,
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

# gRPC's client default is 4 MiB per received message; a whole-cell read (the local copy's
# snapshot, check_store) of a 5,000-machine cell with 11,000 jobs is already ~5 MiB. etcd
# limits requests (1.5 MiB), not responses, so the client must accept big ones.
MAX_RECEIVE_BYTES = 512 * 1024 * 1024

_S = grpc.StatusCode


class _Rule(NamedTuple):
    code: grpc.StatusCode
    detail: str  # a substring of the status details (case-sensitive); "" matches any
    error: type[CellError]
    refused: bool  # etcd refused it before applying anything: a write's outcome is known
    failover: bool = False  # the member looks unhealthy: try the next endpoint


# The one table from gRPC status to contract error; the first matching rule wins. Details
# are etcd 3.4's (api/v3rpc/rpctypes) and grpc-go's, matched on their stable part.
_GRPC_ERRORS: tuple[_Rule, ...] = (
    _Rule(_S.INVALID_ARGUMENT, "too many operations in txn request", TxnLimitError, True),
    _Rule(_S.INVALID_ARGUMENT, "request is too large", TxnLimitError, True),
    _Rule(_S.INVALID_ARGUMENT, "duplicate key given in txn request", TxnLimitError, True),
    _Rule(_S.INVALID_ARGUMENT, "", InvalidInputError, True),  # empty key, bad range, ...
    _Rule(_S.RESOURCE_EXHAUSTED, "grpc: received message larger than max", TxnLimitError, True),  # server side
    _Rule(_S.RESOURCE_EXHAUSTED, "database space exceeded", StoreUnavailableError, True),  # NOSPACE alarm
    _Rule(_S.OUT_OF_RANGE, "required revision has been compacted", CompactedError, True),
    _Rule(_S.OUT_OF_RANGE, "required revision is a future revision", FutureRevisionError, True),
    _Rule(_S.OUT_OF_RANGE, "too large lease TTL", InvalidInputError, True),
    _Rule(_S.NOT_FOUND, "requested lease not found", LeaseNotFoundError, True),
    _Rule(_S.UNAVAILABLE, "too many requests", StoreUnavailableError, True),  # refused before proposing
    _Rule(_S.UNAVAILABLE, "", StoreUnavailableError, False, failover=True),
    _Rule(_S.DEADLINE_EXCEEDED, "", StoreUnavailableError, False, failover=True),
    _Rule(_S.INTERNAL, "", StoreUnavailableError, False, failover=True),
    _Rule(_S.UNKNOWN, "", StoreUnavailableError, False, failover=True),
)
# Anything else (auth, cancelled, a status this table does not know): the store did not
# do what was asked, and for a write we cannot tell whether it applied.
_UNMATCHED = _Rule(_S.UNKNOWN, "", StoreUnavailableError, False)


def _rule_for(code: grpc.StatusCode, detail: str) -> _Rule:
    for rule in _GRPC_ERRORS:
        if rule.code == code and rule.detail in detail:
            return rule
    return _UNMATCHED


def to_cell_error(exc: BaseException | None, what: str, write: bool = False,
                  revision: int = 0) -> tuple[CellError, bool]:
    """(the contract's error for `exc`, whether to fail over). `what` names the RPC for the
    message, `revision` is the revision it asked about (for CompactedError)."""
    if isinstance(exc, CellError):
        return exc, False
    if isinstance(exc, etcd_exc.RevisionCompactedError):
        return CompactedError(revision, exc.compacted_revision), False
    if isinstance(exc, etcd_exc.NoServerAvailableError):  # nothing was sent
        return StoreUnavailableError(f"{what}: no etcd member available"), False
    if isinstance(exc, grpc.RpcError) and callable(getattr(exc, "code", None)):
        code, detail = exc.code(), exc.details() or ""
        rule = _rule_for(code, detail)
        message = f"{what}: {code.name} {detail}"
    else:  # a client error without a status (watch timeout, a stream that just ended)
        rule, message = _UNMATCHED, f"{what}: {exc!r}"
    if rule.error is CompactedError:
        err: CellError = CompactedError(revision, 0)
    elif rule.error is FutureRevisionError:
        err = FutureRevisionError(revision)
    elif write and not rule.refused:
        err = CommitOutcomeUnknown(f"outcome unknown, {message}")
    else:
        err = rule.error(message)
    return err, rule.failover


def parse_endpoints(spec: str) -> list[tuple[str, int]]:
    """'host:port,host:port' -> [(host, port), ...] with a clear error for bad input."""
    out = []
    for part in spec.split(","):
        part = part.strip()
        host, sep, port = part.rpartition(":")
        if not sep or not host or not port.isdigit():
            raise InvalidInputError(f"etcd endpoint {part!r} must look like host:port")
        out.append((host, int(port)))
    if not out:
        raise InvalidInputError("no etcd endpoints given")
    return out


def _kv(kv) -> KeyValue:
    return KeyValue(kv.key.decode(), bytes(kv.value), kv.mod_revision, kv.create_revision, kv.version, kv.lease)


class _EtcdWatch(Watch):
    def __init__(self, store: EtcdStore, prefix: str, start_revision: int):
        self._q: queue.SimpleQueue = queue.SimpleQueue()
        self._store = store
        self._next = start_revision  # the first revision not delivered yet
        self._error: CellError | None = None
        with store._rpc_errors("watch open", revision=start_revision):
            self._watch_id = store._client.add_watch_prefix_callback(
                prefix, self._q.put, start_revision=start_revision)

    def get(self, timeout: float = 0.0) -> list[WatchEvent]:
        out: list[WatchEvent] = []
        if self._error is None:
            try:
                item = self._q.get(timeout=timeout) if timeout > 0 else self._q.get_nowait()
            except queue.Empty:
                return out
            while self._absorb(item, out):
                try:
                    item = self._q.get_nowait()
                except queue.Empty:
                    break
        if self._error is not None and not out:
            raise self._error  # events before the failure first, then the failure, for good
        return out

    def _absorb(self, item, out: list[WatchEvent]) -> bool:
        """Append one response's events; False (and the watch failed) on an error item.
        The client hands over grpc errors, RevisionCompactedError, or None for a stream
        that ended, all through the same callback."""
        events = getattr(item, "events", None)
        if events is None:
            self._error, _ = to_cell_error(item if item is not None else EOFError("watch stream ended"),
                                           "watch", revision=self._next)
            return False
        for ev in events:
            kv = ev._event.kv
            if isinstance(ev, etcd3.events.DeleteEvent):
                out.append(WatchEvent(EventType.DELETE, kv.key.decode(), b"", kv.mod_revision))
            else:
                out.append(WatchEvent(EventType.PUT, kv.key.decode(), bytes(kv.value), kv.mod_revision))
            self._next = kv.mod_revision + 1
        return True

    def close(self) -> None:
        try:
            self._store._client.cancel_watch(self._watch_id)
        except Exception:  # the stream may already be gone; nothing to cancel then
            pass


class EtcdStore(CellStore):
    def __init__(self, endpoints: str | Sequence[tuple[str, int]], limits: StoreLimits | None = None,
                 timeout_s: float = 5.0, failover_retry_s: float = 2.0):
        self.limits = limits or StoreLimits()
        eps = parse_endpoints(endpoints) if isinstance(endpoints, str) else list(endpoints)
        self._client = etcd3.MultiEndpointEtcd3Client(
            endpoints=[etcd3.Endpoint(h, p, secure=False, time_retry=failover_retry_s,
                                      opts=[("grpc.max_receive_message_length", MAX_RECEIVE_BYTES)])
                       for h, p in eps],
            timeout=timeout_s, failover=True)
        self._timeout = timeout_s

    def _failover(self) -> None:
        ep = self._client.endpoint_in_use
        if ep is not None:
            ep.fail()
        self._client._clear_old_stubs()

    @contextmanager
    def _rpc_errors(self, what: str, write: bool = False, revision: int = 0) -> Iterator[None]:
        """Every RPC runs inside this: client and gRPC errors leave as the contract's."""
        try:
            yield
        except (grpc.RpcError, etcd_exc.Etcd3Exception) as exc:
            err, failover = to_cell_error(exc, what, write, revision)
            if failover:
                self._failover()
            raise err from None

    def _call(self, stub: str, method: str, request):
        client = self._client
        return getattr(getattr(client, stub), method)(request, self._timeout, credentials=client.call_credentials,
                                                      metadata=client.metadata)

    @staticmethod
    def _add_op(branch, op: Op) -> None:
        """Append op to a TxnRequest branch, setting fields in place: building each message
        with keyword arguments and nesting it copies it, about 3x slower per commit."""
        if isinstance(op, Put):
            put = branch.add().request_put
            put.key, put.value = op.key.encode(), op.value
            if op.lease:
                put.lease = op.lease
        elif isinstance(op, Delete):
            branch.add().request_delete_range.key = op.key.encode()
        else:
            rng = branch.add().request_range
            rng.key = key = op.key.encode()
            if op.prefix:
                rng.range_end = etcd_utils.prefix_range_end(key)
                if op.start > op.key:
                    rng.key = op.start.encode()
                if op.limit:
                    rng.limit = op.limit

    def txn(self, compares: Sequence[ModRevisionIs], success: Sequence[Op],
            failure: Sequence[Op] = ()) -> TxnResult:
        check_txn_limits(self.limits, compares, success, failure)
        req = etcdrpc.TxnRequest()
        add_compare = req.compare.add
        for c in compares:
            add_compare(key=c.key.encode(), result=etcdrpc.Compare.EQUAL, target=etcdrpc.Compare.MOD,
                        mod_revision=c.revision)
        for branch, ops in ((req.success, success), (req.failure, failure)):
            for op in ops:
                self._add_op(branch, op)
        writes = any(not isinstance(o, Get) for o in (*success, *failure))
        with self._rpc_errors("txn", write=writes):
            resp = self._call("kvstub", "Txn", req)
        reads = [[_kv(kv) for kv in r.response_range.kvs] for r in resp.responses
                 if r.WhichOneof("response") == "response_range"]
        return TxnResult(resp.succeeded, resp.header.revision, reads)

    def watch(self, prefix: str, start_revision: int) -> Watch:
        check_revision_arg("watch start revision", start_revision, 0)
        return _EtcdWatch(self, prefix, start_revision)

    def grant_lease(self, ttl_s: int) -> int:
        check_lease_ttl(ttl_s)
        with self._rpc_errors("lease grant"):
            return self._call("leasestub", "LeaseGrant", etcdrpc.LeaseGrantRequest(TTL=ttl_s)).ID

    def refresh_lease(self, lease_id: int) -> None:
        request = iter([etcdrpc.LeaseKeepAliveRequest(ID=lease_id)])
        with self._rpc_errors("lease refresh"):
            responses = list(self._call("leasestub", "LeaseKeepAlive", request))
        if not responses or responses[0].TTL <= 0:  # etcd answers TTL 0 for a dead lease
            raise LeaseNotFoundError(f"lease {lease_id:x} not found or expired")

    def revoke_lease(self, lease_id: int) -> None:
        with self._rpc_errors("lease revoke"):
            self._call("leasestub", "LeaseRevoke", etcdrpc.LeaseRevokeRequest(ID=lease_id))

    def compact(self, revision: int) -> None:
        check_revision_arg("compact revision", revision, 1)
        with self._rpc_errors("compact", revision=revision):
            self._call("kvstub", "Compact", etcdrpc.CompactionRequest(revision=revision))

    def close(self) -> None:
        self._client.close()
