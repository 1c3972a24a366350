"""A bulk submission whose txns fail on taken ids builds each job's ops about once, not once per
failed txn before it (cellstate/submission.py): seeded, on the memory store."""

from __future__ import annotations

import random

import pytest

from cellsched.cellstate import codec
from cellsched.cellstate.claims import list_queue
from cellsched.cellstate.keys import CellKeys
from cellsched.cellstate.model import JobClass
from cellsched.cellstate.queue_segments import segment_limit
from cellsched.cellstate.store.memory import MemoryStore
from cellsched.cellstate.submission import submit_jobs

from .cellfactory import make_job


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_a_bulk_with_taken_ids_in_many_txns_builds_each_job_once_seeded(seed: int, monkeypatch):
    rng = random.Random(seed)
    store, keys = MemoryStore(), CellKeys(f"sb{seed}")
    jobs = [make_job(f"j{i:05d}", 1) for i in range(rng.randrange(2_000, 3_000))]
    taken = sorted(rng.sample(range(len(jobs)), rng.randrange(20, 40)))  # ids taken in many of its txns
    submit_jobs(store, keys, [jobs[i] for i in taken], now=0.0)
    built = []
    real = codec.splice_record
    monkeypatch.setattr(codec, "splice_record", lambda part, tail: built.append(1) or real(part, tail))
    out = submit_jobs(store, keys, jobs, now=1.0)
    assert sorted(out.rejected) == sorted(jobs[i].id for i in taken)
    assert len(out.accepted) == len(jobs) - len(taken)
    per_txn = segment_limit(store.limits)
    # every job once, and the jobs of each batch that failed once more (less its taken one)
    assert len(built) <= len(jobs) + len(taken) * per_txn
    queued = list_queue(store, keys, JobClass.BATCH)
    assert sorted(queued) == sorted(j.id for j in jobs)  # every job queued exactly once, taken ones from the first call
