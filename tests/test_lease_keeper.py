"""The scheduler's lease under slow and hung steps, and parked jobs under a queue that never drains.

A step that outlasts the lease must not lose the claims (a merely slow scheduler would
otherwise push healthy jobs towards their crash limit); a loop that hangs must lose them,
so its jobs go to another scheduler. Real time, on the memory store; no wall-clock
assertion: every wait is for an outcome, bounded only so a failure cannot hang.
"""

from __future__ import annotations

import threading
import time

from cellsched.cellstate.clock import RealClock, SimClock
from cellsched.cellstate.invariants import check_store
from cellsched.cellstate.lifecycle import release_tasks
from cellsched.cellstate.model import JobStatus
from cellsched.cellstate.store.memory import MemoryStore
from cellsched.cellstate.submission import submit_jobs
from cellsched.cellstate.views import read_job_view
from cellsched.schedulers.core import Scheduler
from cellsched.schedulers.decide import decide_job
from cellsched.schedulers.lease import LeaseKeeper
from cellsched.schedulers.settings import BATCH

from .cellfactory import make_cell, make_job

TTL = 1  # etcd's lease granularity is a second; the memory store's matches


def _wait_for(cond, limit_s: float = 30.0) -> bool:
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.05)
    return cond()


def _status(store, keys, jid):
    view = read_job_view(store, keys, jid)
    return view.record.status if view else None


def _run_in_thread(sched: Scheduler) -> tuple[threading.Thread, threading.Event]:
    stop = threading.Event()
    t = threading.Thread(target=sched.run, args=(stop,), daemon=True)
    t.start()
    return t, stop


def test_a_step_longer_than_the_lease_keeps_its_claims():
    store = MemoryStore()
    keys = make_cell(store, 2)
    slow_once = threading.Event()

    def slow_decide(columns, index, record, policy, seed):
        if not slow_once.is_set():
            slow_once.set()
            time.sleep(3.5 * TTL)  # the step outlasts the lease three times over
        return decide_job(columns, index, record, policy, seed)

    sched = Scheduler("b0", store, keys, BATCH.with_(lease_ttl_s=TTL, lease_stall_s=30.0, idle_poll_s=0.01),
                      RealClock(), decide_fn=slow_decide)
    submit_jobs(store, keys, [make_job("j", 2)], now=time.time())
    thread, stop = _run_in_thread(sched)
    try:
        assert _wait_for(lambda: _status(store, keys, "j") is JobStatus.PLACED)
    finally:
        stop.set()
        thread.join(10)
        sched.close()
    m = sched.metrics()
    assert m["lease_losses"] == 0 and m["attempts_per_job_max"] == 1, m
    assert m["lease_background_refreshes"] >= 1
    assert check_store(store, keys).ok


def test_a_hung_loop_lets_its_lease_lapse_and_another_scheduler_places_the_job():
    store = MemoryStore()
    keys = make_cell(store, 2)
    entered, release = threading.Event(), threading.Event()

    def hanging_decide(columns, index, record, policy, seed):
        entered.set()
        release.wait(60)  # hangs until the test lets it go
        return decide_job(columns, index, record, policy, seed)

    settings = BATCH.with_(lease_ttl_s=TTL, lease_stall_s=2.0, idle_poll_s=0.01)
    hung = Scheduler("hung", store, keys, settings, RealClock(), decide_fn=hanging_decide)
    healthy = Scheduler("ok", store, keys, settings, RealClock())
    submit_jobs(store, keys, [make_job("j", 2)], now=time.time())
    threads = [_run_in_thread(hung)]
    try:
        assert entered.wait(30)  # the hung scheduler holds the job's claim
        threads.append(_run_in_thread(healthy))
        assert _wait_for(lambda: _status(store, keys, "j") is JobStatus.PLACED)
        # The record reads PLACED as soon as the commit lands; the loop counts it just after.
        assert _wait_for(lambda: healthy.metrics()["jobs_placed"] == 1)
        release.set()  # the hung step wakes: its commit fails the claim's fence
        assert _wait_for(lambda: hung.metrics()["lease_losses"] >= 1)
    finally:
        release.set()
        for thread, stop in threads:
            stop.set()
            thread.join(10)
        hung.close()
        healthy.close()
    assert hung.metrics()["jobs_placed"] == 0
    assert check_store(store, keys).ok


def test_the_refresher_renews_only_while_the_loop_ticks():
    store = MemoryStore()
    keeper = LeaseKeeper(store, TTL, RealClock(), stall_s=1.5)
    lease = keeper.ensure()
    store.put("/probe", b"x", lease)  # gone when the lease lapses; reading it refreshes nothing
    keeper.start("k")
    try:
        for _ in range(30):  # 3 s of ticking: twice the stall limit, three times the TTL
            keeper.tick()
            time.sleep(0.1)
        assert store.get("/probe") is not None  # still alive
        # Without ticks the refresher stops after stall_s, and the lease lapses.
        assert _wait_for(lambda: store.get("/probe") is None)
        assert keeper.background_refreshes >= 2
    finally:
        keeper.close()


def test_parked_jobs_get_a_share_of_the_batch_while_the_queue_never_drains():
    clock = SimClock()
    store = MemoryStore(clock=clock)
    keys = make_cell(store, 1, cpu=4000)
    settings = BATCH.with_(claim_batch=16, parked_retry_s=5.0)
    submit_jobs(store, keys, [make_job("fill", 1, cpu=4000)], now=0.0)
    s = Scheduler("b0", store, keys, settings, clock)
    s.step()
    submit_jobs(store, keys, [make_job("parked", 1, cpu=2000)], now=1.0)
    s.step()
    assert _status(store, keys, "parked") is JobStatus.PARKED
    # Pending jobs that never fit (more memory than the machine has), many batches of them:
    # each step claims a batch from the queue's head and parks it, and the queue stays long.
    submit_jobs(store, keys, [make_job(f"big{i:04d}", 1, cpu=100, mem=10**9) for i in range(40 * 16)], now=2.0)
    release_tasks(store, keys, "fill", ["fill/0/0"], now=clock.now())
    rounds = s.claimer.parked_rounds
    for _ in range(3):  # within a few parked-retry periods, with the queue still full every step
        clock.advance(settings.parked_retry_s)
        s.step()
        if _status(store, keys, "parked") is JobStatus.PLACED:
            break
    assert _status(store, keys, "parked") is JobStatus.PLACED
    from cellsched.cellstate.claims import list_queue

    assert len(list_queue(store, keys, settings.job_class)) > settings.claim_batch  # it never drained
    assert s.claimer.parked_rounds > rounds  # a whole (short) pass over the parked index
    assert check_store(store, keys).ok
