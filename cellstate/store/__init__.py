"""cellsched.cellstate.store: the CellStore contract and its backends.

``contract`` is the contract every backend provides (etcd's semantics, limits, paged
reads); ``memory`` is the embedded backend; ``etcd`` is the etcd backend, the only module
that imports the etcd client library (import it as ``cellsched.cellstate.store.etcd``;
it is not re-exported here, so importing the contract never loads the etcd client).
"""

from .contract import (
    AFTER_PREVIOUS,
    DEFAULT_MAX_REQUEST_BYTES,
    DEFAULT_MAX_TXN_OPS,
    MAX_LEASE_TTL_S,
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
from .memory import MemoryStore

__all__ = [
    "AFTER_PREVIOUS",
    "DEFAULT_MAX_REQUEST_BYTES",
    "DEFAULT_MAX_TXN_OPS",
    "MAX_LEASE_TTL_S",
    "CellStore",
    "Delete",
    "EventType",
    "Get",
    "KeyValue",
    "MemoryStore",
    "ModRevisionIs",
    "Op",
    "Put",
    "StoreLimits",
    "TxnResult",
    "Watch",
    "WatchEvent",
    "check_lease_ttl",
    "check_revision_arg",
    "check_txn_limits",
]
