"""Txns as one bytes value, for a store in another process (schedulers/ray_actors.py's
StoreHost; docs/architecture.md, "The REST API": the embedded store hosted in its Ray actor).

Ray's serializer pays per Python object, and the frozen slots dataclasses of the contract
(Put, Get, ModRevisionIs) pickle through a per-field `__getstate__`: a 62-job submission txn
(about 190 of them) cost each side about 4 ms per call, against under 1 ms for pickling the
same ops as plain tuples once. So the caller packs its txns here into one bytes value, the
host unpacks them into the same dataclasses and runs them unchanged, and the results come
back the same way. Nothing is lost: every field of every op and result round-trips, and the
host's store checks the txn exactly as it checks a local one.

The embedded store takes the packed tuples as they come (`MemoryStore.txn_sequence_packed`,
with `check_packed_limits`, the same checks as `check_txn_limits`): building an op object per
op on the host cost about a quarter of its CPU for a bulk submission.
"""

from __future__ import annotations

import pickle
from collections.abc import Sequence

from ..errors import InvalidInputError
from .contract import (
    Delete,
    Get,
    KeyValue,
    ModRevisionIs,
    Op,
    Put,
    StoreLimits,
    TxnResult,
    check_get_limit,
    check_op_counts,
    check_op_key,
    check_put_value,
    check_request_size,
    check_written_once,
)

Txn = tuple[Sequence[ModRevisionIs], Sequence[Op], Sequence[Op]]
PUT, DELETE, GET = 0, 1, 2  # an op tuple's kind: (PUT, key, value, lease), (GET, key, prefix, limit, start), (DELETE, key)
_PUT, _DELETE, _GET = PUT, DELETE, GET
PackedTxn = tuple[list[tuple[str, int]], list[tuple], list[tuple]]


def _op(op: Op) -> tuple:
    if type(op) is Put:
        return (_PUT, op.key, op.value, op.lease)
    if type(op) is Get:
        return (_GET, op.key, op.prefix, op.limit, op.start)
    if type(op) is Delete:
        return (_DELETE, op.key)
    raise InvalidInputError(f"not a txn op: {op!r}")


def _unop(t: tuple) -> Op:
    kind = t[0]
    if kind == _PUT:
        return Put(t[1], t[2], t[3])
    if kind == _GET:
        return Get(t[1], t[2], t[3], t[4])
    return Delete(t[1])


def pack_txns(txns: Sequence[Txn]) -> bytes:
    return pickle.dumps([([(c.key, c.revision) for c in compares], [_op(o) for o in success],
                          [_op(o) for o in failure]) for compares, success, failure in txns],
                        protocol=pickle.HIGHEST_PROTOCOL)


def unpack_txns(blob: bytes) -> list[tuple[list[ModRevisionIs], list[Op], list[Op]]]:
    return [([ModRevisionIs(k, r) for k, r in compares], [_unop(t) for t in success], [_unop(t) for t in failure])
            for compares, success, failure in pickle.loads(blob)]


def unpack_packed(blob: bytes) -> list[PackedTxn]:
    """The txns of pack_txns as their tuples ((key, revision) compares, op tuples): for a store
    that runs them so (MemoryStore.txn_sequence_packed)."""
    return pickle.loads(blob)


def check_packed_limits(limits: StoreLimits, compares: Sequence[tuple[str, int]], success: Sequence[tuple],
                        failure: Sequence[tuple]) -> None:
    """contract.check_txn_limits for a packed txn: the same rules, errors and messages (a kind
    other than PUT or GET is a DELETE, as unpack_txns reads it; tests/test_store_wire.py)."""
    check_op_counts(limits, compares, success, failure)
    size = 16 * len(compares) + sum(len(c[0]) for c in compares)
    for branch in (success, failure):
        for op in branch:
            _check_packed_op(op)
        check_written_once([op[1] for op in branch if op[0] != _GET])
        size += sum(len(op[1]) + 8 for op in branch)
        size += sum(len(op[2]) for op in branch if op[0] == _PUT)
    check_request_size(limits, size)


def _check_packed_op(op: tuple) -> None:
    check_op_key(op[1])
    if op[0] == _PUT:
        check_put_value(op[1], op[2])
    elif op[0] == _GET:
        check_get_limit(op[1], op[3])


def pack_results(results: Sequence[TxnResult]) -> bytes:
    # KeyValue is a NamedTuple: pickled as its fields, no per-object state call.
    return pickle.dumps([(r.succeeded, r.revision, [[tuple(kv) for kv in kvs] for kvs in r.reads]) for r in results],
                        protocol=pickle.HIGHEST_PROTOCOL)


def unpack_results(blob: bytes) -> list[TxnResult]:
    return [TxnResult(ok, rev, [[KeyValue(*kv) for kv in kvs] for kvs in reads]) for ok, rev, reads in pickle.loads(blob)]
