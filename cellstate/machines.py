"""Adding machines and changing their state (up / draining / down).

Every write of a machine's spec also writes its allocation record (see docs/architecture.md,
"The commit protocol"): a new machine gets an empty one, a state change rewrites it as it is,
compared unchanged. So the allocation record's mod_revision moves on any change of the
machine, and a commit compares that one key per machine, not the spec too."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from . import codec
from .errors import ContentionError, InvalidInputError, UnknownMachineError
from .keys import CellKeys
from .model import AllocationRecord, Machine, MachineState
from .schema import ensure_schema
from .store import CellStore, Delete, Get, KeyValue, ModRevisionIs, Put


def add_machines(store: CellStore, keys: CellKeys, machines: Sequence[Machine]) -> int:
    """Register machines, many per txn. An id that already exists is refused whole."""
    ids = [m.id for m in machines]
    if len(set(ids)) != len(ids):
        raise InvalidInputError("duplicate machine ids in one request")
    ensure_schema(store, keys)
    rev = 0
    per_txn = max(1, store.limits.max_txn_ops // 2)
    empty = codec.encode_alloc(AllocationRecord())
    for start in range(0, len(machines), per_txn):
        batch = machines[start:start + per_txn]
        compares = [c for m in batch for c in (ModRevisionIs(keys.spec(m.id), 0), ModRevisionIs(keys.alloc(m.id), 0))]
        result = store.txn(compares,
                           [p for m in batch for p in (Put(keys.spec(m.id), codec.encode_machine(m)),
                                                       Put(keys.alloc(m.id), empty))],
                           [Get(keys.spec(m.id)) for m in batch])
        if not result.succeeded:
            existing = [keys.last_segment(kv.key) for r in result.reads for kv in r]
            raise InvalidInputError(f"machines already exist: {existing[:5]}")
        rev = result.revision
    return rev


def set_machine_state(store: CellStore, keys: CellKeys, machine_id: str, state: MachineState) -> int:
    for _ in range(16):
        kv = store.get(keys.spec(machine_id))
        if kv is None:
            raise UnknownMachineError(f"unknown machine {machine_id!r}")
        m = replace(codec.decode_machine(kv.key, kv.value), state=state, state_by="operator")
        revision = write_spec(store, keys, kv, m)
        if revision:
            return revision
    raise ContentionError(f"machine {machine_id}: state change kept conflicting")


def write_spec(store: CellStore, keys: CellKeys, spec: KeyValue, new: Machine,
               guards: Sequence[ModRevisionIs] = ()) -> int:
    """Write a machine's new spec over `spec` (as read), with its allocation record rewritten
    as it is (an empty one if it has none), both compared unchanged, and `guards`; in one txn.
    Returns its revision, or 0 when something changed meanwhile (the caller reads again)."""
    mid = keys.last_segment(spec.key)
    alloc = store.get(keys.alloc(mid))
    value = alloc.value if alloc is not None else codec.encode_alloc(AllocationRecord())
    result = store.txn([ModRevisionIs(spec.key, spec.mod_revision),
                        ModRevisionIs(keys.alloc(mid), alloc.mod_revision if alloc is not None else 0), *guards],
                       [Put(spec.key, codec.encode_machine(new)), Put(keys.alloc(mid), value)])
    return result.revision if result.succeeded else 0


def remove_machine(store: CellStore, keys: CellKeys, machine_id: str) -> int:
    """Delete a machine that holds no task: its spec, allocation record and liveness key.

    Refused (InvalidInputError, nothing written) while it is UP, so schedulers stop placing
    there first (drain it), and while any task is still bound to it. One txn compares the
    spec and the allocation record it judged, so a placement landing meanwhile fails it."""
    for _ in range(16):
        spec, alloc = store.txn([], [Get(keys.spec(machine_id)), Get(keys.alloc(machine_id))]).reads
        if not spec:
            raise UnknownMachineError(f"unknown machine {machine_id!r}")
        m = codec.decode_machine(spec[0].key, spec[0].value)
        if m.state is MachineState.UP:
            raise InvalidInputError(f"machine {machine_id} is up: drain it before removing it")
        tasks = codec.decode_alloc(alloc[0].key, alloc[0].value).tasks if alloc else {}
        if tasks:
            raise InvalidInputError(f"machine {machine_id} still holds {len(tasks)} tasks")
        alloc_rev = alloc[0].mod_revision if alloc else 0
        result = store.txn([ModRevisionIs(spec[0].key, spec[0].mod_revision),
                            ModRevisionIs(keys.alloc(machine_id), alloc_rev)],
                           [Delete(keys.spec(machine_id)), Delete(keys.alloc(machine_id)),
                            Delete(keys.live(machine_id))])
        if result.succeeded:
            return result.revision
    raise ContentionError(f"machine {machine_id}: removal kept conflicting")
