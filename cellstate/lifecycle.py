"""Releasing resources: tasks that finish (or fail) leave their machines.

Like a commit, a release compares the job record and every touched allocation record
and retries on conflict, so it never races a placement into a wrong `used` vector.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping

from . import codec
from .claims import index_entry_for_new_job
from .errors import ContentionError, InvalidInputError
from .keys import CellKeys
from .model import TERMINAL_STATUSES, JobRecord, JobStatus, TaskOutcome
from .shards import encode_shard
from .store import CellStore, Delete, Get, ModRevisionIs, Put
from .views import read_job_view

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
        view = read_job_view(store, keys, job_id)
        if view is None:
            raise InvalidInputError(f"job {job_id!r} does not exist")
        rec, job_key = view.record, keys.job(job_id)
        by_machine: dict[str, list[str]] = defaultdict(list)
        for tid in wanted:
            mid = rec.bound.get(tid)
            if mid is not None and (on_machine is None or on_machine.get(tid) == mid):
                by_machine[mid].append(tid)
        if not by_machine:
            return view.revision
        # One txn touches machines + shards + 3 keys (the job put and its queue ops) at most
        # max_txn_ops; larger releases go in several txns, each consistent on its own.
        mids = _release_batch(rec, by_machine, store.limits.max_txn_ops - 3)
        by_machine = {m: by_machine[m] for m in mids}
        reads = store.txn([], [Get(keys.alloc(m)) for m in mids]).reads
        compares = [ModRevisionIs(job_key, view.revision)]
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
        success += _shard_rewrites(keys, new, released)
        success.append(Put(job_key, codec.encode_job(new)))
        result = store.txn(compares, success)
        if result.succeeded:
            wanted -= {t for tids in by_machine.values() for t in tids}
            rounds = 0  # progress: the bound is on conflicts in a row
            if not wanted:
                return result.revision
    raise ContentionError(f"release of {job_id} kept conflicting for {MAX_RELEASE_ROUNDS} rounds")


def _release_batch(rec: JobRecord, by_machine: Mapping[str, list[str]], room: int) -> list[str]:
    """Machines to release in one txn: each costs its allocation put, plus the shards its
    tasks live in that the batch does not touch yet."""
    chosen: list[str] = []
    shards: set[int] = set()
    for mid in sorted(by_machine):
        more = {rec.shard_of[t] for t in by_machine[mid] if t in rec.shard_of} - shards
        if chosen and len(chosen) + 1 + len(shards) + len(more) > room:
            break
        chosen.append(mid)
        shards |= more
    return chosen


def _shard_rewrites(keys: CellKeys, rec: JobRecord, released: list[str]) -> list[Put | Delete]:
    """A sharded job's shards that held released tasks, rewritten (or deleted when empty)."""
    touched = {rec.shard_of[t] for t in released if t in rec.shard_of}
    if not touched:
        return []
    bound: dict[int, dict[str, str]] = {s: {} for s in touched}
    done: dict[int, list[str]] = {s: [] for s in touched}
    for tid, seq in rec.shard_of.items():
        if seq in touched:
            if tid in rec.bound:
                bound[seq][tid] = rec.bound[tid]
            elif tid in rec.done:
                done[seq].append(tid)
    for tid in released:  # rescheduled tasks leave their shard; a new commit writes a new one
        if tid not in rec.done:
            rec.shard_of.pop(tid, None)
    return [Put(keys.bind(rec.job.id, s), encode_shard(bound[s], done[s])) if bound[s] or done[s]
            else Delete(keys.bind(rec.job.id, s)) for s in sorted(touched)]


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
