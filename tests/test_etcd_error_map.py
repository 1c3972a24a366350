"""The etcd backend's one error table: every client or gRPC error leaves as a CellError."""

from __future__ import annotations

import socket

import grpc
import pytest
from etcd3 import exceptions as etcd_exc

from cellsched.cellstate.errors import (
    CommitOutcomeUnknown,
    CompactedError,
    FutureRevisionError,
    InvalidInputError,
    LeaseNotFoundError,
    StoreUnavailableError,
    TxnLimitError,
)
from cellsched.cellstate.store import Get, Put, StoreLimits
from cellsched.cellstate.store.etcd import EtcdStore, to_cell_error


class FakeRpcError(grpc.RpcError):
    def __init__(self, code: grpc.StatusCode, details: str):
        self._code, self._details = code, details

    def code(self):
        return self._code

    def details(self):
        return self._details


S = grpc.StatusCode
CASES = [  # (code, etcd's details, error for a read, error for a write)
    (S.NOT_FOUND, "etcdserver: requested lease not found", LeaseNotFoundError, LeaseNotFoundError),
    (S.INVALID_ARGUMENT, "etcdserver: too many operations in txn request", TxnLimitError, TxnLimitError),
    (S.INVALID_ARGUMENT, "etcdserver: duplicate key given in txn request", TxnLimitError, TxnLimitError),
    (S.INVALID_ARGUMENT, "etcdserver: request is too large", TxnLimitError, TxnLimitError),
    (S.INVALID_ARGUMENT, "etcdserver: key is not provided", InvalidInputError, InvalidInputError),
    (S.OUT_OF_RANGE, "etcdserver: mvcc: required revision has been compacted", CompactedError, CompactedError),
    (S.OUT_OF_RANGE, "etcdserver: mvcc: required revision is a future revision", FutureRevisionError,
     FutureRevisionError),
    (S.OUT_OF_RANGE, "etcdserver: too large lease TTL", InvalidInputError, InvalidInputError),
    (S.RESOURCE_EXHAUSTED, "etcdserver: mvcc: database space exceeded", StoreUnavailableError,
     StoreUnavailableError),
    (S.UNAVAILABLE, "etcdserver: request timed out", StoreUnavailableError, CommitOutcomeUnknown),
    (S.UNAVAILABLE, "etcdserver: leader changed", StoreUnavailableError, CommitOutcomeUnknown),
    (S.DEADLINE_EXCEEDED, "Deadline Exceeded", StoreUnavailableError, CommitOutcomeUnknown),
    # Not in the table: never raw, and a write's outcome is unknown.
    (S.PERMISSION_DENIED, "etcdserver: permission denied", StoreUnavailableError, CommitOutcomeUnknown),
    (S.CANCELLED, "Locally cancelled by application!", StoreUnavailableError, CommitOutcomeUnknown),
    (S.NOT_FOUND, "something else entirely", StoreUnavailableError, CommitOutcomeUnknown),
]


@pytest.mark.parametrize(("code", "details", "read_error", "write_error"), CASES)
def test_grpc_errors_map_to_the_contract(code, details, read_error, write_error):
    read, _ = to_cell_error(FakeRpcError(code, details), "txn", write=False, revision=7)
    write, _ = to_cell_error(FakeRpcError(code, details), "txn", write=True, revision=7)
    assert type(read) is read_error and type(write) is write_error
    if read_error in (CompactedError, FutureRevisionError):
        assert read.requested == 7


def test_only_sick_member_errors_fail_over():
    assert to_cell_error(FakeRpcError(S.UNAVAILABLE, "connection refused"), "txn")[1]
    assert not to_cell_error(FakeRpcError(S.NOT_FOUND, "etcdserver: requested lease not found"), "txn")[1]
    assert not to_cell_error(FakeRpcError(S.PERMISSION_DENIED, "no"), "txn")[1]


def test_client_errors_without_status_map_too():
    err, _ = to_cell_error(etcd_exc.RevisionCompactedError(12), "watch", revision=3)
    assert isinstance(err, CompactedError) and (err.requested, err.compacted) == (3, 12)
    err, _ = to_cell_error(etcd_exc.NoServerAvailableError("none"), "txn", write=True)
    assert type(err) is StoreUnavailableError  # never sent, so the outcome is known
    err, _ = to_cell_error(etcd_exc.WatchTimedOut(), "watch open")
    assert type(err) is StoreUnavailableError


def test_unreachable_etcd_raises_only_typed_errors():
    with socket.socket() as s:  # a loopback port with nothing listening
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    store = EtcdStore([("127.0.0.1", port)], StoreLimits(), timeout_s=1.0, failover_retry_s=0.1)
    try:
        with pytest.raises(CommitOutcomeUnknown):
            store.txn([], [Put("/u/a", b"1")])
        for call in (lambda: store.txn([], [Get("/u/a")]), lambda: store.grant_lease(5),
                     lambda: store.refresh_lease(1), lambda: store.revoke_lease(1),
                     lambda: store.compact(1), lambda: store.watch("/u/", 1).get(0.5),
                     lambda: store.txn([], [Put("/u/a", b"1")])):
            with pytest.raises(StoreUnavailableError):
                call()
    finally:
        store.close()

