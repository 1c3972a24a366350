"""A job's attempts and last conflicts ride on its record (schedulers/history.py), written
only with the placement or park they led to, and the explanation serves them over HTTP."""

from __future__ import annotations

import httpx

from cellsched.api import ApiContext, Role, TokenTable, create_app
from cellsched.cellstate.invariants import check_store
from cellsched.cellstate.model import ConflictMode, JobStatus
from cellsched.cellstate.store import Put
from cellsched.cellstate.submission import submit_jobs
from cellsched.demo_api import ApiThread
from cellsched.schedulers.core import Scheduler
from cellsched.schedulers.history import MAX_CONFLICTS, merged
from cellsched.schedulers.settings import BATCH
from tests.cellfactory import make_job
from tests.storespy import SpyStore
from tests.test_scheduler_core import Interloper, sim_cell, status


def run_interloped(n_tasks: int, progress: bool, max_retries: int):
    clock, store, keys = sim_cell(2)
    submit_jobs(store, keys, [make_job("hot", n_tasks, cpu=100)], now=0.0)
    settings = BATCH.with_(conflict_mode=ConflictMode.SEQUENCE, max_retries=max_retries)
    s = Scheduler("b0", store, keys, settings, clock, decide_fn=Interloper(store, keys, progress=progress))
    steps = 0
    while s.step():
        steps += 1
        assert steps < 20
    assert check_store(store, keys).ok
    return store, keys, status(store, keys, "hot")


def test_a_parked_job_carries_every_attempt_and_its_last_conflicts():
    # 4 attempts, each claiming both tasks on m0, each refused: 8 conflicts, the last 8 kept.
    _, _, rec = run_interloped(2, progress=False, max_retries=3)
    assert rec.status is JobStatus.PARKED
    assert rec.history["attempts"] == 4
    conflicts = rec.history["conflicts"]
    assert len(conflicts) == 8 and all(c["machine"] == "m0" and c["kind"] == "machine_changed" for c in conflicts)
    assert [c["at"] for c in conflicts] == sorted(c["at"] for c in conflicts)


def test_a_placed_job_carries_the_conflicts_of_the_attempts_before_its_last():
    # Attempt k lands one task on m1 and loses the rest (4-k tasks) on m0: 3 + 2 + 1 + 0.
    _, _, rec = run_interloped(4, progress=True, max_retries=1)
    assert rec.status is JobStatus.PLACED
    assert rec.history == {"attempts": 4, "conflicts": rec.history["conflicts"]}
    assert len(rec.history["conflicts"]) == 6


def test_a_first_attempt_without_conflicts_writes_no_history_and_no_extra_write():
    clock, store, keys = sim_cell(2)
    spy = SpyStore(store)
    submit_jobs(store, keys, [make_job("calm", 2, cpu=100)], now=0.0)
    s = Scheduler("b0", spy, keys, BATCH, clock)
    assert s.step()
    rec = status(store, keys, "calm")
    assert rec.status is JobStatus.PLACED and rec.history is None
    job_puts = [op for _, ops in spy.txns for op in ops if type(op) is Put and op.key == keys.job("calm")]
    assert len(job_puts) == 1  # the placement write only


def test_history_keeps_the_last_ten_and_counts_across_writers():
    first = merged(None, 3, [{"at": float(i)} for i in range(7)])
    assert first == {"attempts": 3, "conflicts": [{"at": float(i)} for i in range(7)]}
    later = merged(first, 2, [{"at": float(i)} for i in range(7, 12)])
    assert later["attempts"] == 5 and [c["at"] for c in later["conflicts"]] == [float(i) for i in range(2, 12)]
    assert len(later["conflicts"]) == MAX_CONFLICTS
    assert merged(None, 1, []) is None and merged(None, 1, [], always=True) == {"attempts": 1, "conflicts": []}


def test_the_explanation_over_http_gives_attempts_and_conflicts():
    store, keys, rec = run_interloped(2, progress=False, max_retries=3)
    tokens = TokenTable()
    tokens.add(Role.READER, "r", "reader-secret-0123456789")
    api = ApiThread(create_app(ApiContext(store, keys, tokens)))
    api.start()
    try:
        got = httpx.get(f"{api.base}/v1/jobs/hot/explanation",
                        headers={"Authorization": "Bearer reader-secret-0123456789"}, timeout=10)
    finally:
        api.stop()
    assert got.status_code == 200, got.text
    body = got.json()
    assert body["status"] == "parked" and body["attempts"] == 4
    assert body["conflicts"] == rec.history["conflicts"]
    assert not any("attempts" in n or "conflicts" in n for n in body["not_recorded"])
