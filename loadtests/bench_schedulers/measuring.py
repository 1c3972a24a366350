"""What a run measures besides the schedulers' own metrics: the queue draining (ray runner),
the txns each scheduler's store client sent (threads runner), this process's CPU."""

from __future__ import annotations

import os
import time
from collections import Counter, defaultdict
from collections.abc import Sequence

from cellsched.cellstate.index_entry import IndexEntry
from cellsched.cellstate.keys import CellKeys
from cellsched.cellstate.model import JobClass
from cellsched.cellstate.store import CellStore, EventType, Get, KeyValue, Op, Put
from cellsched.cellstate.store.memory import MemoryStore


class QueueDrain:
    """Counts the watched jobs whose queue entry is deleted: the store's word that they are
    bound. A queue segment (cellstate/queue_segments.py) goes once its holder settled all its
    jobs; a job of it given an entry of its own (let go, or split) counts when that goes."""

    def __init__(self, store: CellStore, keys: CellKeys, job_ids: list[str], from_revision: int):
        self.pending = set(job_ids)
        self.keys = keys
        self._watch = store.watch(keys.queue_prefix(JobClass.BATCH), from_revision)
        self._listed: dict[str, tuple[str, ...]] = {}  # segment key -> its jobs, from its puts
        self._own: set[str] = set()  # jobs with an entry of their own now

    def wait(self, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while self.pending:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            for ev in self._watch.get(min(left, 0.05)):
                if ev.type is EventType.DELETE:
                    jobs = self._listed.pop(ev.key, None)
                    if jobs is None:  # an own entry
                        jid = self.keys.last_segment(ev.key)
                        self._own.discard(jid)
                        self.pending.discard(jid)
                    else:
                        self.pending.difference_update(j for j in jobs if j not in self._own)
                elif b'"jobs":' in ev.value:
                    self._listed[ev.key] = IndexEntry.decode(KeyValue(ev.key, ev.value, 0, 0, 0)).jobs
                else:
                    self._own.add(self.keys.last_segment(ev.key))
        return True

    def close(self) -> None:
        self._watch.close()


def wait_settled(store: CellStore, keys: CellKeys, timeout_s: float) -> bool:
    """Wait until no queue entry and no claim key is left (a queue segment goes once its holder
    settled its jobs, a claim key once its holder holds none of them): the measured phase ends
    only then. Polls every 5 ms; whether it got there within `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while True:
        queue, claims = store.txn([], [Get(keys.queue_prefix(), prefix=True, limit=1),
                                       Get(keys.claims_prefix, prefix=True, limit=1)]).reads
        if not queue and not claims:
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.005)


def _txn_kind(success: Sequence[Op], keys: CellKeys) -> str:
    if all(type(op) is Get for op in success):
        return "read"
    if any(type(op) is Put and op.lease for op in success):
        return "claim"
    if any(type(op) is Put and op.key.startswith(keys.alloc_prefix) for op in success):
        return "commit"
    return "other"


class CountingStore(CellStore):
    """A store client that logs its txns; counts() classifies them afterwards, so the
    measured path pays one list append per txn."""

    def __init__(self, inner: CellStore, keys: CellKeys):
        self.inner, self.limits, self.keys = inner, inner.limits, keys
        self._log: list[tuple[Sequence[Op], Sequence[Op], bool, float]] = []  # list.append is atomic

    def txn(self, compares, success, failure=()):
        t0 = time.perf_counter()
        result = self.inner.txn(compares, success, failure)
        self._log.append((success, failure, result.succeeded, time.perf_counter() - t0))
        return result

    def counts(self) -> tuple[Counter[str], Counter[str], dict[str, float], int]:
        """(keys written by kind, txns by kind and kind_failed, seconds spent in txns by kind, bytes
        written: each put's key and value, each delete's key)."""
        kinds = [(self.keys.alloc_prefix, "alloc"), (self.keys.jobs_prefix, "job"),
                 (self.keys.queue_prefix(), "queue"), (self.keys.claims_prefix, "claim"),
                 (self.keys.spec_prefix, "spec")]
        written: Counter[str] = Counter()
        txns: Counter[str] = Counter()
        wall: defaultdict[str, float] = defaultdict(float)
        nbytes = 0
        for success, failure, ok, secs in self._log:
            what = _txn_kind(success, self.keys)
            txns[what] += 1
            wall[what] += secs
            if not ok:
                txns[f"{what}_failed"] += 1
            for op in success if ok else failure:
                if type(op) is not Get:
                    where = next((k for p, k in kinds if op.key.startswith(p)), "other")
                    written[f"{where}_{'put' if isinstance(op, Put) else 'delete'}"] += 1
                    nbytes += len(op.key.encode())
                    if isinstance(op, Put):
                        nbytes += len(op.value)
        return written, txns, wall, nbytes

    def watch(self, prefix, start_revision):
        return self.inner.watch(prefix, start_revision)

    def grant_lease(self, ttl_s):
        return self.inner.grant_lease(ttl_s)

    def refresh_lease(self, lease_id):
        self.inner.refresh_lease(lease_id)

    def revoke_lease(self, lease_id):
        self.inner.revoke_lease(lease_id)

    def compact(self, revision):
        self.inner.compact(revision)

    def close(self):
        if not isinstance(self.inner, MemoryStore):  # the embedded store is shared by every run
            self.inner.close()


def own_cpu_s() -> float:
    t = os.times()
    return t.user + t.system
