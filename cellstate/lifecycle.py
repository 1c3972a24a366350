"""Releasing resources: tasks that finish (or fail) leave their machines.

Like a commit, a release compares the job record and every touched allocation record
and retries on conflict, so it never races a placement into a wrong `used` vector.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable

from . import codec
from .errors import InvalidInputError
from .keys import CellKeys
from .model import JobStatus
from .store import CellStore, Delete, Get, ModRevisionIs, Put

MAX_RELEASE_ROUNDS = 32


def release_tasks(store: CellStore, keys: CellKeys, job_id: str, task_ids: Iterable[str], now: float,
                  finished: bool = True) -> int:
    """Remove tasks from their machines. finished=True records them as done; False
    (a failure or eviction) makes them unbound again so they are rescheduled.

    Returns the store revision of the release. Tasks not currently bound are ignored.
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
            if mid is not None:
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
        for tids in by_machine.values():
            for tid in tids:
                del new.bound[tid]
                if finished:
                    new.done.add(tid)
        if finished and len(new.done) >= new.job.task_count:
            new.status, new.finished_at = JobStatus.FINISHED, now
        elif not finished and new.status is JobStatus.PLACED:
            # Failed tasks go back to the queue to be placed again.
            new.status = JobStatus.PENDING
            success.append(Put(keys.queue(new.job.job_class, new.job.priority, job_id),
                               codec.encode_obj({"job": job_id})))
        success.append(Put(jkv.key, codec.encode_job(new)))
        if new.status is JobStatus.FINISHED:
            success.append(Delete(keys.claim(job_id)))
        result = store.txn(compares, success)
        if result.succeeded:
            wanted -= {t for tids in by_machine.values() for t in tids}
            rounds = 0  # progress: the bound is on conflicts in a row
            if not wanted:
                return result.revision
    raise RuntimeError(f"release of {job_id} kept conflicting for {MAX_RELEASE_ROUNDS} rounds")
