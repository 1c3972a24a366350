"""The etcd backend: the only module that imports the etcd client library.

It speaks the python-etcd3 API through the maintained `cslab-etcd3` fork (current
protobuf stubs), but builds Txn requests itself: one RPC per commit, and the header
revision comes back with the result. Failures are classified:
- the request may have reached the leader (UNAVAILABLE, DEADLINE_EXCEEDED, leader
  changes) -> CommitOutcomeUnknown for writes: the caller settles by reading;
- etcd refused the request (too many ops, too large) -> TxnLimitError, nothing applied.
With several endpoints the client fails over to the next member.
"""

from __future__ import annotations

import queue
from collections.abc import Sequence

import etcd3
import grpc
from etcd3 import etcdrpc
from etcd3 import exceptions as etcd_exc
from etcd3 import utils as etcd_utils

from .errors import (
    CommitOutcomeUnknown,
    CompactedError,
    LeaseNotFoundError,
    StoreUnavailableError,
    TxnLimitError,
)
from .store import (
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
    check_txn_limits,
)

# gRPC's client default is 4 MiB per received message; a whole-cell read (the local copy's
# snapshot, check_store) of a 5,000-machine cell with 11,000 jobs is already ~5 MiB. etcd
# limits requests (1.5 MiB), not responses, so the client must accept big ones.
MAX_RECEIVE_BYTES = 512 * 1024 * 1024

_RETRYABLE = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.INTERNAL,
              grpc.StatusCode.UNKNOWN}


def parse_endpoints(spec: str) -> list[tuple[str, int]]:
    """'host:port,host:port' -> [(host, port), ...] with a clear error for bad input."""
    out = []
    for part in spec.split(","):
        part = part.strip()
        host, sep, port = part.rpartition(":")
        if not sep or not host or not port.isdigit():
            raise ValueError(f"etcd endpoint {part!r} must look like host:port")
        out.append((host, int(port)))
    if not out:
        raise ValueError("no etcd endpoints given")
    return out


def _kv(kv) -> KeyValue:
    return KeyValue(kv.key.decode(), bytes(kv.value), kv.mod_revision, kv.create_revision, kv.version, kv.lease)


class _EtcdWatch(Watch):
    def __init__(self, store: EtcdStore, prefix: str, start_revision: int):
        self._q: queue.SimpleQueue = queue.SimpleQueue()
        self._store = store
        try:
            self._watch_id = store._client.add_watch_prefix_callback(
                prefix, self._q.put, start_revision=start_revision)
        except etcd_exc.RevisionCompactedError as exc:
            raise CompactedError(start_revision, exc.compacted_revision) from None
        except (grpc.RpcError, etcd_exc.Etcd3Exception) as exc:
            store._failover()
            raise StoreUnavailableError(f"cannot open watch: {exc!r}") from None

    def get(self, timeout: float = 0.0) -> list[WatchEvent]:
        out: list[WatchEvent] = []
        try:
            item = self._q.get(timeout=timeout) if timeout > 0 else self._q.get_nowait()
        except queue.Empty:
            return out
        while True:
            self._absorb(item, out)
            try:
                item = self._q.get_nowait()
            except queue.Empty:
                return out

    @staticmethod
    def _absorb(item, out: list[WatchEvent]) -> None:
        if isinstance(item, etcd_exc.RevisionCompactedError):
            raise CompactedError(0, item.compacted_revision)
        if isinstance(item, BaseException):
            raise StoreUnavailableError(f"watch stream broke: {item!r}")
        for ev in item.events:
            kv = ev._event.kv
            if isinstance(ev, etcd3.events.DeleteEvent):
                out.append(WatchEvent(EventType.DELETE, kv.key.decode(), b"", kv.mod_revision))
            else:
                out.append(WatchEvent(EventType.PUT, kv.key.decode(), bytes(kv.value), kv.mod_revision))

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

    def _stub_call(self, method: str, request, write: bool):
        try:
            stub = self._client.kvstub
            return getattr(stub, method)(request, self._timeout, credentials=self._client.call_credentials,
                                         metadata=self._client.metadata)
        except etcd_exc.NoServerAvailableError as exc:
            raise StoreUnavailableError(f"no etcd member available: {exc}") from None
        except grpc.RpcError as exc:
            code, detail = exc.code(), exc.details() or ""
            if code == grpc.StatusCode.INVALID_ARGUMENT and ("too many operations" in detail or "too large" in detail):
                raise TxnLimitError(f"etcd refused the txn: {detail}") from None
            if code == grpc.StatusCode.OUT_OF_RANGE and "compacted" in detail:
                raise CompactedError(0, 0) from None
            if code in _RETRYABLE:
                self._failover()
                if write:
                    raise CommitOutcomeUnknown(f"txn outcome unknown: {code.name} {detail}") from None
                raise StoreUnavailableError(f"etcd unavailable: {code.name} {detail}") from None
            raise

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
        resp = self._stub_call("Txn", req, write=writes)
        reads = [[_kv(kv) for kv in r.response_range.kvs] for r in resp.responses
                 if r.WhichOneof("response") == "response_range"]
        return TxnResult(resp.succeeded, resp.header.revision, reads)

    def watch(self, prefix: str, start_revision: int) -> Watch:
        return _EtcdWatch(self, prefix, start_revision)

    def grant_lease(self, ttl_s: int) -> int:
        try:
            return self._client.lease(ttl_s).id
        except (grpc.RpcError, etcd_exc.Etcd3Exception) as exc:
            self._failover()
            raise StoreUnavailableError(f"cannot grant lease: {exc!r}") from None

    def refresh_lease(self, lease_id: int) -> None:
        try:
            responses = list(self._client.refresh_lease(lease_id))
        except (grpc.RpcError, etcd_exc.Etcd3Exception) as exc:
            self._failover()
            raise StoreUnavailableError(f"cannot refresh lease: {exc!r}") from None
        if not responses or responses[0].TTL <= 0:
            raise LeaseNotFoundError(f"lease {lease_id:x} not found or expired")

    def revoke_lease(self, lease_id: int) -> None:
        try:
            self._client.revoke_lease(lease_id)
        except grpc.RpcError as exc:
            if exc.code() == grpc.StatusCode.NOT_FOUND:
                raise LeaseNotFoundError(f"lease {lease_id:x} not found") from None
            raise StoreUnavailableError(f"cannot revoke lease: {exc!r}") from None
        except etcd_exc.Etcd3Exception as exc:
            raise StoreUnavailableError(f"cannot revoke lease: {exc!r}") from None

    def compact(self, revision: int) -> None:
        try:
            self._client.kvstub.Compact(etcdrpc.CompactionRequest(revision=revision), self._timeout,
                                        credentials=self._client.call_credentials,
                                        metadata=self._client.metadata)
        except grpc.RpcError as exc:
            if exc.code() == grpc.StatusCode.OUT_OF_RANGE:
                raise CompactedError(revision, 0) from None
            raise StoreUnavailableError(f"cannot compact: {exc!r}") from None

    def close(self) -> None:
        self._client.close()
