"""Audit records: hash-chained, each written in the txn of the mutation it records.

A process registers its chains once (`AuditLog.open`: one txn adds their ids to the
registry /<cell>/audit/registry and writes their heads). A mutation takes a chain for
its duration (`AuditLog.session`) and gets an `AuditingStore`: every txn it sends that
writes something also gets, in its success branch, the chain's next record
/<cell>/audit/rec/<chain>/<seq> {seq, prev, who, what, at, outcome, writes, keys, hash}
and the chain's new head, guarded by a compare on the head it extends. So a record exists
exactly when its mutation landed, and the chain has no fork. A mutation refused before any
write gets a record of its own ("refused: ...").

Several chains per process (sessions take a free one), so one chain's txn-at-a-time order
never caps a process's submissions. A group commit (`AuditLog.group`, the API's batched
single submissions) holds one chain for a txn that carries several mutations, and writes one
record per mutation in it: consecutive sequence numbers, each chained to the one before, and
the head moved once to the last. `AuditingStore.limits` is the store's less the three
ops and the bytes a record adds, so writers that size txns to the limits leave room.

`verify` catches an edited record (its hash), a deleted middle record (a gap in the
sequence, a broken `prev`), a deleted newest record (the head is ahead of the records) and
a deleted chain (the registry lists a chain without a head) or one the registry lacks.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import secrets
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from . import codec
from .errors import ContentionError
from .keys import CellKeys
from .store import AFTER_PREVIOUS, CellStore, Get, ModRevisionIs, Op, Put, StoreLimits, TxnResult, Watch

RECORD_OPS = 3  # the head compare, the record put, the head put
RECORD_BYTES = 4096  # room kept for a record and its head in a txn's request bytes
KEYS_IN_RECORD = 8
ENTRY_BYTES = 1024  # room per record beyond the first, in a group commit's txn


@dataclass(frozen=True)
class AuditEntry:
    """One mutation's record: who, what, when, the outcome and the keys it wrote."""

    who: str
    what: str
    at: float
    outcome: str = "committed"
    keys: tuple[str, ...] = ()


def _digest(obj: dict) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def genesis(chain: str) -> str:
    return hashlib.sha256(f"cellsched-audit-genesis:{chain}".encode()).hexdigest()


@dataclass
class _Chain:
    id: str
    seq: int
    hash: str
    head_revision: int
    lock: threading.Lock = field(default_factory=threading.Lock)
    stale: bool = False  # an outcome unknown: read the head again before extending it


def _chain_ops(keys: CellKeys, c: _Chain, entries: Sequence[AuditEntry], seq: int | None = None, prev: str = "",
               head_revision: int | None = None) -> tuple[ModRevisionIs, list[Put], str]:
    """The records of `entries`, in order after the chain's head, and the new head: the compare
    on the head they extend, the puts, and the last record's hash. `seq`, `prev` and
    `head_revision`: a head not yet written (the steps before in one CellStore.txn_sequence call)."""
    puts: list[Put] = []
    if seq is None:
        seq, prev = c.seq, c.hash
    for e in entries:
        seq += 1
        body = {"seq": seq, "prev": prev, "who": e.who, "what": e.what, "at": e.at, "outcome": e.outcome,
                "writes": len(e.keys), "keys": list(e.keys[:KEYS_IN_RECORD])}
        prev = _digest(body)
        puts.append(Put(keys.audit_record(c.id, seq), codec.encode_obj({**body, "hash": prev})))
    puts.append(Put(keys.audit_head(c.id), codec.encode_obj({"seq": seq, "hash": prev})))
    at = c.head_revision if head_revision is None else head_revision
    return ModRevisionIs(keys.audit_head(c.id), at), puts, prev


def _send_with_records(inner: CellStore, keys: CellKeys, c: _Chain, compares, success, failure,
                       entries: Sequence[AuditEntry]) -> TxnResult:
    """One txn with the records of `entries` in its success branch; the chain moves on only
    if it landed, and is marked stale when the outcome is unknown."""
    guard, puts, h = _chain_ops(keys, c, entries)
    try:
        result = inner.txn([*compares, guard], [*success, *puts], failure)
    except Exception:
        c.stale = True  # it may have landed: read the head before the next record
        raise
    if result.succeeded:
        c.seq, c.hash, c.head_revision = c.seq + len(entries), h, result.revision
    return result


class AuditLog:
    def __init__(self, store: CellStore, keys: CellKeys, chains: list[_Chain]):
        self.store, self.keys, self._chains = store, keys, chains
        self._next = 0
        self._pick = threading.Lock()

    @classmethod
    def open(cls, store: CellStore, keys: CellKeys, n_chains: int = 8) -> AuditLog:
        """Register `n_chains` new chains for this process (one txn, retried on a race)."""
        ids = [secrets.token_hex(8) for _ in range(n_chains)]
        for _ in range(32):
            kv = store.get(keys.audit_registry)
            known = codec.decode_obj(kv.key, kv.value)["chains"] if kv else []
            heads = [Put(keys.audit_head(c), codec.encode_obj({"seq": 0, "hash": genesis(c)})) for c in ids]
            result = store.txn([ModRevisionIs(keys.audit_registry, kv.mod_revision if kv else 0)],
                               [Put(keys.audit_registry, codec.encode_obj({"chains": [*known, *ids]})), *heads])
            if result.succeeded:
                return cls(store, keys, [_Chain(c, 0, genesis(c), result.revision) for c in ids])
        raise ContentionError("audit registry: registering chains kept conflicting")

    @contextlib.contextmanager
    def session(self, who: str, what: str, now: float) -> Iterator[AuditingStore]:
        chain = self._take()
        try:
            if chain.stale:
                self._resync(chain)
            audited = AuditingStore(self.store, self.keys, chain, who, what, now)
            try:
                yield audited
            except Exception as exc:
                if audited.records == 0 and not chain.stale:
                    audited.record_refusal(f"refused: {type(exc).__name__}: {exc}"[:500])
                raise
        finally:
            chain.lock.release()

    @contextlib.contextmanager
    def group(self) -> Iterator[GroupWriter]:
        """A chain held for one group commit (see GroupWriter)."""
        chain = self._take()
        try:
            if chain.stale:
                self._resync(chain)
            yield GroupWriter(self.store, self.keys, chain)
        finally:
            chain.lock.release()

    def record_refusal(self, who: str, what: str, now: float, outcome: str) -> None:
        """A record alone, for a mutation refused before it reached a txn (best effort)."""
        with self.session(who, what, now) as audited:
            audited.record_refusal(outcome)

    def _take(self) -> _Chain:
        with self._pick:
            start, self._next = self._next, (self._next + 1) % len(self._chains)
        for i in range(len(self._chains)):
            c = self._chains[(start + i) % len(self._chains)]
            if c.lock.acquire(blocking=False):
                return c
        c = self._chains[start]
        c.lock.acquire()
        return c

    def _resync(self, chain: _Chain) -> None:
        kv = self.store.get(self.keys.audit_head(chain.id))
        head: dict[str, Any] = codec.decode_obj(kv.key, kv.value) if kv else {"seq": 0, "hash": genesis(chain.id)}
        chain.seq, chain.hash, chain.head_revision = int(head["seq"]), str(head["hash"]), kv.mod_revision if kv else 0
        chain.stale = False


class AuditingStore(CellStore):
    """The store as one audited mutation sees it (see the module docstring)."""

    def __init__(self, inner: CellStore, keys: CellKeys, chain: _Chain, who: str, what: str, now: float):
        self.inner, self.keys, self.chain = inner, keys, chain
        self.who, self.what, self.now = who, what, now
        self.limits = StoreLimits(inner.limits.max_txn_ops - RECORD_OPS, inner.limits.max_request_bytes - RECORD_BYTES)
        self.records = 0

    def _send(self, compares, success, failure, outcome: str, written: list[str]) -> TxnResult:
        entry = AuditEntry(self.who, self.what, self.now, outcome, tuple(written))
        result = _send_with_records(self.inner, self.keys, self.chain, compares, success, failure, [entry])
        if result.succeeded:
            self.records += 1
        return result

    def txn(self, compares: Sequence[ModRevisionIs], success: Sequence[Op], failure: Sequence[Op] = ()) -> TxnResult:
        written = [op.key for op in success if not isinstance(op, Get)]
        if not written:
            return self.inner.txn(compares, success, failure)
        return self._send(compares, success, failure, "committed", written)

    def txn_sequence(self, steps: Sequence[tuple[Sequence[ModRevisionIs], Sequence[Op], Sequence[Op]]]) -> list[TxnResult]:
        """Each step with its own record, as txn gives it, sent in one inner `txn_sequence` call: step
        k's head compare is AFTER_PREVIOUS, the head step k-1 wrote (its record's seq and hash
        are known before it is sent). A step that writes nothing would move no head: then
        they go one by one."""
        written = [[op.key for op in success if not isinstance(op, Get)] for _, success, _ in steps]
        if len(steps) < 2 or not all(written):
            return super().txn_sequence(steps)
        c = self.chain
        seq, prev = c.seq, c.hash
        sent, hashes = [], []
        for i, ((compares, success, failure), keys) in enumerate(zip(steps, written, strict=True)):
            entry = AuditEntry(self.who, self.what, self.now, "committed", tuple(keys))
            guard, puts, prev = _chain_ops(self.keys, c, [entry], seq, prev, None if i == 0 else AFTER_PREVIOUS)
            seq += 1
            sent.append(([*compares, guard], [*success, *puts], failure))
            hashes.append(prev)
        try:
            results = self.inner.txn_sequence(sent)
        except Exception:
            c.stale = True  # some steps may have landed: read the head before the next record
            raise
        for result, h in zip(results, hashes, strict=False):
            if not result.succeeded:
                break
            c.seq, c.hash, c.head_revision = c.seq + 1, h, result.revision
            self.records += 1
        return results

    def record_refusal(self, outcome: str) -> None:
        """A record alone, for a mutation that wrote nothing (best effort: the refusal stands)."""
        with contextlib.suppress(Exception):
            self._send([], [], [], outcome, [])

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
        pass  # the session's store is borrowed


class GroupWriter:
    """Sends a group commit's txns on one held chain: each txn carries one record per mutation
    it holds (`entries`, in the order given), so a record exists exactly when its mutation
    landed, in the same revision. `limits`: the store's less the head's ops and bytes; a caller
    adds ENTRY_BYTES and one op per mutation itself."""

    def __init__(self, inner: CellStore, keys: CellKeys, chain: _Chain):
        self.inner, self.keys, self.chain = inner, keys, chain
        self.limits = StoreLimits(inner.limits.max_txn_ops - RECORD_OPS, inner.limits.max_request_bytes - RECORD_BYTES)

    def txn(self, compares: Sequence[ModRevisionIs], success: Sequence[Op], failure: Sequence[Op],
            entries: Sequence[AuditEntry]) -> TxnResult:
        if not entries:
            return self.inner.txn(compares, success, failure)
        return _send_with_records(self.inner, self.keys, self.chain, compares, success, failure, entries)

    def refusals(self, entries: Sequence[AuditEntry]) -> None:
        """Records alone, for mutations refused without a write (best effort: the refusals stand)."""
        if entries and not self.chain.stale:
            with contextlib.suppress(Exception):
                _send_with_records(self.inner, self.keys, self.chain, [], [], [], entries)


@dataclass
class AuditReport:
    chains: int = 0
    records: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def verify(store: CellStore, keys: CellKeys) -> AuditReport:
    """Check every chain the registry lists, and that no chain is missing from it."""
    out = AuditReport()
    reg = store.get(keys.audit_registry)
    listed = codec.decode_obj(reg.key, reg.value)["chains"] if reg else []
    heads = {keys.last_segment(kv.key): codec.decode_obj(kv.key, kv.value)
             for kv in store.get_prefix(keys.audit_head_prefix)[0]}
    for chain in sorted(set(heads) - set(listed)):
        out.problems.append(f"chain {chain}: has a head but is not in the registry")
    for chain in listed:
        out.chains += 1
        records = [codec.decode_obj(kv.key, kv.value) for kv in store.get_prefix(keys.audit_records(chain))[0]]
        out.records += len(records)
        head = heads.get(chain)
        if head is None:
            out.problems.append(f"chain {chain}: in the registry but its head is gone (chain deleted)")
            continue
        prev, seq = genesis(chain), 0
        for rec in records:
            body = {k: v for k, v in rec.items() if k not in ("hash", "v")}
            if rec.get("seq") != seq + 1:
                out.problems.append(f"chain {chain}: record {seq + 1} is missing (next present: {rec.get('seq')})")
            elif rec.get("prev") != prev:
                out.problems.append(f"chain {chain}: record {rec['seq']} does not follow its predecessor")
            if _digest(body) != rec.get("hash"):
                out.problems.append(f"chain {chain}: record {rec.get('seq')} was altered (hash mismatch)")
            prev, seq = rec.get("hash", ""), rec.get("seq", seq + 1)
        if head.get("seq") != seq or head.get("hash") != prev:
            out.problems.append(f"chain {chain}: head is at {head.get('seq')} but the records end at {seq} "
                                "(newest records deleted or altered)")
    return out
