"""Releasing resources: tasks that finish (or fail) leave their machines.

Like a commit, a release compares the job record and every touched allocation record
and retries on conflict, so it never races a placement into a wrong `used` vector.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping

from . import codec
from .claims import index_entry_for_new_job
from .errors import InvalidInputError
from .keys import CellKeys
from .model import TERMINAL_STATUSES, JobRecord, JobStatus, TaskOutcome
from .store import CellStore, Delete, Get, ModRevisionIs, Put

MAX_RELEASE_ROUNDS = 32


def release_tasks(store: CellStore, keys: CellKeys, job_id: str, task_ids: Iterable[str], now: float,
                  outcome: TaskOutcome = TaskOutcome.FINISHED, on_machine: Mapping[str, str] | None = None) -> int:
    """Remove tasks from their machines.

    FINISHED records them as done. EVICTED makes them unbound again, so they are
    rescheduled (a placed job goes back to the queue). FAILED does the same while the
    job's failures stay within job.max_failures; past it the job FAILS: the failed tasks
    become terminal, the rest are not rescheduled, and the job leaves the queue.
    Returns the store revision of the release. Tasks not currently bound are ignored,
    and with `on_machine` (task id -> machine id) so are tasks now bound elsewhere: an
    eviction read on one machine must not reach a task re-placed meanwhile.
    """
    wanted = set(task_ids)
    rounds = 0
    while rounds < MAX_RELEASE_ROUNDS:
        rounds += 1
        jkv = store.get(keys.job(job_id))
        if jkv is None:
            raise InvalidInputError(f"job {job_id!r} does not exist")
        rec = codec.decode_job(jkv.key, jkv.value)
        by_machine: dict[str, list[str]] = defaultdict(list)
        for tid in wanted:
            mid = rec.bound.get(tid)
            if mid is not None and (on_machine is None or on_machine.get(tid) == mid):
                by_machine[mid].append(tid)
        if not by_machine:
            return jkv.mod_revision
        # One txn touches at most max_txn_ops - 3 machines (+ the job put, claim delete and
        # queue put); larger releases go in several txns, each consistent on its own.
        mids = sorted(by_machine)[: max(1, store.limits.max_txn_ops - 3)]
        by_machine = {m: by_machine[m] for m in mids}
        reads = store.txn([], [Get(keys.alloc(m)) for m in mids]).reads
        compares = [ModRevisionIs(jkv.key, jkv.mod_revision)]
        success = []
        for mid, r in zip(mids, reads, strict=True):
            if not r:
                raise InvalidInputError(f"job {job_id}: machine {mid} has no allocation record")
            alloc = codec.decode_alloc(r[0].key, r[0].value)
            compares.append(ModRevisionIs(r[0].key, r[0].mod_revision))
            success.append(Put(r[0].key, codec.encode_alloc(alloc.without_tasks(by_machine[mid]))))
        new = rec.copy()
        released = [tid for tids in by_machine.values() for tid in tids]
        for tid in released:
            del new.bound[tid]
        success += _job_transition(keys, new, released, outcome, now)
        success.append(Put(jkv.key, codec.encode_job(new)))
        result = store.txn(compares, success)
        if result.succeeded:
            wanted -= {t for tids in by_machine.values() for t in tids}
            rounds = 0  # progress: the bound is on conflicts in a row
            if not wanted:
                return result.revision
    raise RuntimeError(f"release of {job_id} kept conflicting for {MAX_RELEASE_ROUNDS} rounds")


def _job_transition(keys: CellKeys, rec: JobRecord, released: list[str], outcome: TaskOutcome,
                    now: float) -> list[Put | Delete]:
    """Apply a release to the job record in place; return the queue/claim ops it needs."""
    job = rec.job
    ops: list[Put | Delete] = []
    if outcome is TaskOutcome.FAILED:
        rec.failures += len(released)
        if rec.failures > job.max_failures and rec.status not in TERMINAL_STATUSES:
            rec.done.update(released)
            was = rec.status
            rec.status, rec.finished_at = JobStatus.FAILED, now
            rec.reason = f"{rec.failures} task failures exceed max_failures={job.max_failures}"
            # The claim, if any, stays: only its holder deletes it (fenced), and its next
            # commit finds the job no longer schedulable.
            if was is JobStatus.PENDING:
                ops.append(Delete(keys.queue_of(rec)))
            elif was is JobStatus.PARKED:
                ops.append(Delete(keys.parked_of(rec)))
            return ops
    if outcome is TaskOutcome.FINISHED:
        rec.done.update(released)
        if len(rec.done) >= job.task_count and rec.status not in TERMINAL_STATUSES:
            rec.status, rec.finished_at = JobStatus.FINISHED, now
        return ops
    # Failed within policy, or evicted: back to the queue to be placed again.
    if rec.status is JobStatus.PLACED:
        rec.status = JobStatus.PENDING
        ops.append(Put(keys.queue_of(rec), index_entry_for_new_job(job.id)))
    return ops
