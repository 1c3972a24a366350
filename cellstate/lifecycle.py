"""Releasing resources: tasks that finish (or fail) leave their machines.

Like a commit, a release compares the job record and every touched allocation record
and retries on conflict, so it never races a placement into a wrong `used` vector.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping

from . import codec
from .errors import ContentionError, InvalidInputError
from .job_states import apply_event, release_event
from .keys import CellKeys
from .model import JobRecord, TaskOutcome
from .shards import encode_shard
from .store import CellStore, Delete, Get, ModRevisionIs, Op, Put
from .views import read_job_view

MAX_RELEASE_ROUNDS = 32


def release_tasks(store: CellStore, keys: CellKeys, job_id: str, task_ids: Iterable[str], now: float,
                  outcome: TaskOutcome = TaskOutcome.FINISHED, on_machine: Mapping[str, str] | None = None) -> int:
    """Remove tasks from their machines.

    FINISHED records them as done. EVICTED makes them unbound again, so they are
    rescheduled (a placed job goes back to the queue). FAILED does the same while the
    job's failures stay within job.max_failures; past it the job FAILS: the rest are not
    rescheduled, and the job leaves the queue. The status change is the job state
    machine's (cellstate/job_states.py). Returns the store revision of the release. Tasks
    not currently bound are ignored, and with `on_machine` (task id -> machine id) so are
    tasks now bound elsewhere: an eviction read on one machine must not reach a task
    re-placed meanwhile.
    """
    wanted = set(task_ids)

    def select(rec: JobRecord) -> list[str]:
        return [tid for tid in wanted if (mid := rec.bound.get(tid)) is not None
                and (on_machine is None or on_machine.get(tid) == mid)]

    def transition(new: JobRecord, released: list[str]) -> list[Put | Delete]:
        return _job_transition(keys, new, released, outcome, now)

    def finished(new: JobRecord, released: list[str]) -> bool:
        wanted.difference_update(released)
        return not wanted

    return release_loop(store, keys, job_id, select, transition, finished)


def release_loop(store: CellStore, keys: CellKeys, job_id: str, select: Callable[[JobRecord], list[str]],
                 transition: Callable[[JobRecord, list[str]], list[Put | Delete]],
                 finished: Callable[[JobRecord, list[str]], bool],
                 must_write: Callable[[JobRecord], bool] = lambda rec: False) -> int:
    """The release protocol, for release_tasks and cellstate/cancel.py.

    Each round reads the job whole, takes `select(rec)` (bound tasks to release), writes
    a batch of them in one txn that compares the job record and each touched allocation
    record, with `transition(new, released)`'s ops (it updates the new record in place),
    and retries on conflict. `finished(new, released)` after a txn that landed says
    whether to stop; `must_write(rec)` asks for a txn even with nothing to release (a
    status change alone). Returns the store revision of the last write or read.
    """
    rounds = 0
    while rounds < MAX_RELEASE_ROUNDS:
        rounds += 1
        view = read_job_view(store, keys, job_id)
        if view is None:
            raise InvalidInputError(f"job {job_id!r} does not exist")
        rec, job_key = view.record, keys.job(job_id)
        by_machine: dict[str, list[str]] = defaultdict(list)
        for tid in select(rec):
            by_machine[rec.bound[tid]].append(tid)
        if not by_machine and not must_write(rec):
            return view.revision
        # One txn touches machines + shards + 3 keys (the job put and its queue ops) at most
        # max_txn_ops; larger releases go in several txns, each consistent on its own.
        mids = _release_batch(rec, by_machine, store.limits.max_txn_ops - 3)
        by_machine = {m: by_machine[m] for m in mids}
        reads = store.txn([], [Get(keys.alloc(m)) for m in mids]).reads if mids else []
        compares = [ModRevisionIs(job_key, view.revision)]
        success: list[Op] = []
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
        success += transition(new, released)
        success += _shard_rewrites(keys, new, released)
        success.append(Put(job_key, codec.encode_job(new)))
        result = store.txn(compares, success)
        if result.succeeded:
            rounds = 0  # progress: the bound is on conflicts in a row
            if finished(new, released):
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
    """Apply a release to the job record in place; return the queue/claim ops it needs.

    The task bookkeeping is here (failures counted, finished tasks marked done; a failed
    task is not done: it did not finish), the status change is the state machine's."""
    if outcome is TaskOutcome.FAILED:
        rec.failures += len(released)
    elif outcome is TaskOutcome.FINISHED:
        rec.done.update(released)
    # FAIL leaves any claim to its holder: only it deletes it (fenced), and its next
    # commit finds the job no longer schedulable.
    return apply_event(rec, release_event(rec, outcome), keys, now)
