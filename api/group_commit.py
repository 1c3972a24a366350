"""Group commit of single submissions: the ones that arrive together share one txn.

Each POST /v1/jobs is checked on the event loop (api/submit.py `prepare_one`), then queued
here. Once per event-loop tick the queue is cut into groups that each fit one txn (ops and
request bytes, with each job's audit record), and each group is written by one
`submit_jobs` call on a small thread pool, at most `max_in_flight` at once; what arrives
while they are in flight waits for the next group. So under load a store round trip (a
Raft commit on etcd, an actor call on the Ray-hosted store) carries tens of submissions
instead of one, and when idle a submission waits for nothing but its own txn.

What stays as it was for each submission:
- atomic: its record, queue entry and Idempotency-Key record are in one txn (a group's txn
  holds whole jobs only; a job refused as existing is dropped and the rest retried, by
  `submit_jobs`);
- durable before its 2xx: its request awaits its group's txn, and hears nothing until
  the store acknowledged it (an error in the txn fails every request of the group, as it
  would have failed each alone);
- audited: one record per submission, in the txn that wrote it (cellstate/audit.py
  `AuditLog.group`), and a record alone for one refused (409);
- one job id and one Idempotency-Key per group at most: a second submission with either is
  held for the next group, where the first one's record decides it (exists, or a replay).
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from cellsched.cellstate.audit import ENTRY_BYTES, RECORD_BYTES, RECORD_OPS, AuditEntry, AuditLog
from cellsched.cellstate.chunking import REQUEST_BYTES_BUDGET
from cellsched.cellstate.clock import Clock
from cellsched.cellstate.keys import CellKeys
from cellsched.cellstate.store import CellStore
from cellsched.cellstate.submission import submit_jobs

from .errors import ApiError
from .submit import Prepared, outcome_of

DEFAULT_IN_FLIGHT = 4  # txns at once: enough to keep a Raft pipeline busy, few audit chains held


@dataclass(frozen=True)
class Landed:
    """A submission's outcome: `outcome` as api/submit.py `outcome_of` gives it, and the
    time its txn was sent (the job's submitted_at)."""

    outcome: str | ApiError
    at: float


@dataclass
class _Waiting:
    prepared: Prepared
    entry: AuditEntry
    future: asyncio.Future


class SubmitGroups:
    def __init__(self, store: CellStore, keys: CellKeys, clock: Clock, audit: AuditLog | None,
                 max_in_flight: int = DEFAULT_IN_FLIGHT):
        self.store, self.keys, self.clock, self.audit = store, keys, clock, audit
        self.max_in_flight = max_in_flight
        self._queue: deque[_Waiting] = deque()
        self._in_flight = 0
        self._kick_scheduled = False
        self._pool = ThreadPoolExecutor(max_in_flight, thread_name_prefix="submit-group")
        limits = store.limits
        # Room per txn: the store's, less one audit head (compare and put) and its bytes.
        self._max_ops = limits.max_txn_ops - (RECORD_OPS if audit else 0)
        self._max_bytes = int(limits.max_request_bytes * REQUEST_BYTES_BUDGET) - (RECORD_BYTES if audit else 0)

    async def submit(self, prepared: Prepared, entry: AuditEntry) -> Landed:
        """Queue one prepared submission; returns once its txn was acknowledged (or raises
        what the txn raised)."""
        loop = asyncio.get_running_loop()
        waiting = _Waiting(prepared, entry, loop.create_future())
        self._queue.append(waiting)
        if not self._kick_scheduled:
            # After the callbacks already ready in this tick: the requests parsed with this one join it.
            self._kick_scheduled = True
            loop.call_soon(self._kick, loop)
        return await waiting.future

    def _kick(self, loop: asyncio.AbstractEventLoop) -> None:
        self._kick_scheduled = False
        while self._queue and self._in_flight < self.max_in_flight:
            group = self._take()
            self._in_flight += 1
            done = loop.run_in_executor(self._pool, self._commit, [w.prepared for w in group],
                                        [w.entry for w in group])
            done.add_done_callback(self._finisher(loop, group))

    def _finisher(self, loop: asyncio.AbstractEventLoop, group: list[_Waiting]) -> Callable[[asyncio.Future], None]:
        def finish(done: asyncio.Future) -> None:
            self._in_flight -= 1
            error = done.exception()
            for i, w in enumerate(group):
                if w.future.done():  # the client went away; its job's fate is in the store
                    continue
                if error is not None:
                    w.future.set_exception(error)
                else:
                    w.future.set_result(done.result()[i])
            self._kick(loop)
        return finish

    def _take(self) -> list[_Waiting]:
        """The queue's head, as many as one txn holds; a job id or key already in the group
        stays queued, in order, for the next one."""
        group: list[_Waiting] = []
        held: deque[_Waiting] = deque()
        ids: set[str] = set()
        guards: set[str] = set()
        ops = size = 0
        audited = 1 if self.audit else 0
        while self._queue:
            w = self._queue[0]
            p = w.prepared
            need = (3 if p.guard else 2) + audited
            grow = p.size + (ENTRY_BYTES if audited else 0)
            if group and (ops + need > self._max_ops or size + grow > self._max_bytes):
                break
            self._queue.popleft()
            if p.job.id in ids or (p.guard is not None and p.guard.key in guards):
                held.append(w)
                continue
            group.append(w)
            ids.add(p.job.id)
            if p.guard is not None:
                guards.add(p.guard.key)
            ops, size = ops + need, size + grow
        self._queue.extendleft(reversed(held))
        return group

    def _commit(self, prepared: list[Prepared], entries: list[AuditEntry]) -> list[Landed]:
        """One group's txn (and its retries without the jobs that exist already), on a pool thread."""
        jobs = [p.job for p in prepared]
        guards = {p.job.id: p.guard for p in prepared if p.guard is not None}
        parts = {p.job.id: p.part for p in prepared if p.part is not None}
        now = self.clock.now()
        if self.audit is None:
            result = submit_jobs(self.store, self.keys, jobs, now, guards, per_txn=len(jobs), job_parts=parts)
            return [Landed(outcome_of(p, result), now) for p in prepared]
        entry_of = {p.job.id: e for p, e in zip(prepared, entries, strict=True)}
        with self.audit.group() as writer:
            def send(compares, success, failure, written):
                return writer.txn(compares, success, failure,
                                  [dataclasses.replace(entry_of[j.id], keys=tuple(ks)) for j, ks in written])

            result = submit_jobs(self.store, self.keys, jobs, now, guards, send=send, per_txn=len(jobs),
                                 job_parts=parts)
            landed = [Landed(outcome_of(p, result), now) for p in prepared]
            writer.refusals([dataclasses.replace(e, outcome=f"refused: ApiError: {o.outcome}"[:500])
                             for e, o in zip(entries, landed, strict=True) if isinstance(o.outcome, ApiError)])
        return landed
