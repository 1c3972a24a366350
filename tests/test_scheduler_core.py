"""The scheduler loop on the memory store: placing, batching, parking, gangs, leases, retries."""

from __future__ import annotations

import threading

from cellsched.cellstate.clock import RealClock, SimClock
from cellsched.cellstate.invariants import check_store
from cellsched.cellstate.lifecycle import release_tasks
from cellsched.cellstate.machines import set_machine_state
from cellsched.cellstate.model import Claim, ConflictMode, Job, JobClass, JobStatus, MachineState, TaskGroup
from cellsched.cellstate.store import StoreLimits
from cellsched.cellstate.store.memory import MemoryStore
from cellsched.cellstate.submission import submit_jobs
from cellsched.cellstate.views import read_job_view
from cellsched.schedulers.core import Scheduler
from cellsched.schedulers.decide import Decision
from cellsched.schedulers.settings import BATCH, SERVICE
from tests.cellfactory import make_cell, make_job


def sim_cell(n: int = 4, **kw):
    clock = SimClock()
    store = MemoryStore(clock=clock)
    return clock, store, make_cell(store, n, **kw)


def status(store, keys, jid):
    return read_job_view(store, keys, jid).record


def test_scheduler_places_jobs_and_store_stays_consistent():
    clock, store, keys = sim_cell(4)
    jobs = [make_job(f"j{i}", 3) for i in range(4)]
    submit_jobs(store, keys, jobs, now=0.0)
    s = Scheduler("b0", store, keys, BATCH, clock)
    clock.advance(2.0)
    s.run(clock.now() + 5.0)  # a deadline on the simulated clock: idle polls advance it
    rep = check_store(store, keys, [j.id for j in jobs])
    assert rep.ok, rep.violations
    assert rep.bound_tasks == 12
    assert all(status(store, keys, j.id).status is JobStatus.PLACED for j in jobs)
    m = s.metrics()
    assert m["jobs_placed"] == 4 and m["tasks_placed"] == 12
    assert m["wait_first_attempt_p50_s"] == 2.0  # submitted at 0, first decided at 2
    assert m["attempts_per_job_max"] == 1 and m["conflict_fraction"] == 0.0
    assert 0.0 <= m["busyness"] <= 1.0


def test_scheduler_batches_single_task_jobs_into_one_commit():
    clock, store, keys = sim_cell(4)
    # 40 single-task jobs of 100 mCPU fit anywhere; claim_batch 64 takes them all at once.
    submit_jobs(store, keys, [make_job(f"s{i:02d}", 1, cpu=100, mem=10) for i in range(40)], now=0.0)
    s = Scheduler("b0", store, keys, BATCH.with_(claim_batch=64), clock)
    assert s.step()
    # 4 machines + 40 jobs cost max(2*4 + 40, 4 + 3*40) = 124 ops <= 128: one txn for all 40.
    assert s.metrics()["txns"] == 1 and s.metrics()["jobs_placed"] == 40
    assert not s.step()  # nothing left
    assert check_store(store, keys).ok


def test_scheduler_parks_unplaceable_job_then_places_it_after_release():
    clock, store, keys = sim_cell(2)
    filler = make_job("fill", 2, cpu=4000, mem=1024)  # one task fills each machine's 4000 mCPU
    submit_jobs(store, keys, [filler], now=0.0)
    s = Scheduler("b0", store, keys, BATCH, clock)
    assert s.step()
    submit_jobs(store, keys, [make_job("late", 1, cpu=2000)], now=clock.now())
    assert s.step()
    rec = status(store, keys, "late")
    assert rec.status is JobStatus.PARKED
    assert "insufficient cpu" in rec.reason, rec.reason
    assert not s.step()  # parked, and nothing freed: it is not retried in a busy loop
    release_tasks(store, keys, "fill", ["fill/0/0"], now=clock.now())
    # The copy sees used capacity drop, so the next step claims parked jobs again.
    assert s.step()
    assert status(store, keys, "late").status is JobStatus.PLACED
    rep = check_store(store, keys)
    assert rep.ok, rep.violations


def test_scheduler_parked_job_is_not_retried_while_its_need_cannot_fit():
    clock, store, keys = sim_cell(1)
    submit_jobs(store, keys, [make_job("big", 1, cpu=4000)], now=0.0)
    s = Scheduler("b0", store, keys, BATCH.with_(parked_retry_s=10.0), clock)
    s.step()
    submit_jobs(store, keys, [make_job("wait", 1, cpu=1000)], now=0.0)
    s.step()
    assert status(store, keys, "wait").status is JobStatus.PARKED
    rev = store.current_revision()
    clock.advance(5.0)
    assert not s.step()  # nothing freed and the period has not passed: left parked
    clock.advance(5.0)
    # The period passed: the parked index is looked at, but 1000 mCPU is free nowhere, so
    # the job is neither claimed nor re-parked: nothing is written.
    assert not s.step()
    assert store.current_revision() == rev
    rec = status(store, keys, "wait")
    assert rec.status is JobStatus.PARKED and "insufficient cpu" in rec.reason


def test_scheduler_gang_job_is_all_or_nothing():
    clock, store, keys = sim_cell(2)
    # 3 tasks of 3000 mCPU on 2 machines of 4000: only 2 fit, one per machine.
    gang, inc = make_job("gang", 3, cpu=3000, gang=True), make_job("inc", 3, cpu=3000)
    submit_jobs(store, keys, [gang], now=0.0)
    s = Scheduler("b0", store, keys, BATCH, clock)
    s.step()
    rec = status(store, keys, "gang")
    assert rec.status is JobStatus.PARKED and not rec.bound
    assert rec.reason.startswith("gang needs every task placed") and "insufficient cpu" in rec.reason
    assert check_store(store, keys).bound_tasks == 0
    submit_jobs(store, keys, [inc], now=0.0)
    s.step()
    rec = status(store, keys, "inc")  # incremental keeps what fits and parks the rest
    assert rec.status is JobStatus.PARKED and len(rec.bound) == 2
    assert check_store(store, keys).ok


def test_scheduler_gang_that_fits_is_placed_whole():
    clock, store, keys = sim_cell(4)
    submit_jobs(store, keys, [make_job("gang", 4, cpu=3000, gang=True)], now=0.0)
    s = Scheduler("g0", store, keys, BATCH, clock)
    s.step()
    rec = status(store, keys, "gang")
    assert rec.status is JobStatus.PLACED and len(set(rec.bound.values())) == 4
    assert check_store(store, keys).ok


def test_scheduler_gang_larger_than_one_txn_is_parked_and_batch_mates_still_commit():
    clock = SimClock()
    store = MemoryStore(StoreLimits(max_txn_ops=16), clock=clock)
    keys = make_cell(store, 10)
    # 10 tasks of 3000 mCPU need 10 machines; a txn holds (16 - 1) // 2 = 7 of them.
    submit_jobs(store, keys, [make_job("wide", 10, cpu=3000, gang=True), make_job("small", 1, cpu=500)], now=0.0)
    s = Scheduler("b0", store, keys, BATCH, clock)
    s.step()
    rec = status(store, keys, "wide")
    assert rec.status is JobStatus.PARKED and not rec.bound
    assert rec.reason == "gang spans 10 machines; one txn holds at most 7 with max_txn_ops=16"
    assert status(store, keys, "small").status is JobStatus.PLACED
    rep = check_store(store, keys)
    assert rep.ok and rep.bound_tasks == 1, rep.violations


def test_scheduler_run_in_real_time_until_stopped():
    store = MemoryStore()
    keys = make_cell(store, 4)
    s = Scheduler("b0", store, keys, BATCH.with_(idle_poll_s=0.01), RealClock())
    stop = threading.Event()
    worker = threading.Thread(target=s.run, args=(stop,), daemon=True)
    worker.start()
    submit_jobs(store, keys, [make_job(f"r{i}", 2) for i in range(5)], now=0.0)
    placed = threading.Event()
    for _ in range(500):  # waits for an outcome, bounded; asserts nothing about time
        if check_store(store, keys).bound_tasks == 10:
            placed.set()
            break
        stop.wait(0.01)
    stop.set()
    worker.join(timeout=10)
    assert placed.is_set() and not worker.is_alive()
    assert check_store(store, keys).ok
    s.close()


def test_scheduler_highest_priority_job_wins_scarce_capacity():
    clock, store, keys = sim_cell(1)
    low = Job("low", (TaskGroup("g", 1, (3000, 1024, 0)),), JobClass.BATCH, priority=1)
    high = Job("high", (TaskGroup("g", 1, (3000, 1024, 0)),), JobClass.BATCH, priority=9)
    submit_jobs(store, keys, [low, high], now=0.0)  # low submitted first
    Scheduler("b0", store, keys, BATCH, clock).step()
    assert status(store, keys, "high").status is JobStatus.PLACED
    assert status(store, keys, "low").status is JobStatus.PARKED


def test_scheduler_claims_only_its_own_class():
    clock, store, keys = sim_cell(2)
    submit_jobs(store, keys, [make_job("svc", 1, job_class=JobClass.SERVICE)], now=0.0)
    assert not Scheduler("b0", store, keys, BATCH, clock).step()
    assert Scheduler("s0", store, keys, SERVICE, clock).step()
    assert status(store, keys, "svc").status is JobStatus.PLACED


def test_scheduler_lease_expiry_hands_claims_to_another_scheduler():
    clock, store, keys = sim_cell(4)
    submit_jobs(store, keys, [make_job(f"j{i}", 2) for i in range(3)], now=0.0)
    a = Scheduler("a", store, keys, BATCH.with_(lease_ttl_s=5), clock)
    b = Scheduler("b", store, keys, BATCH.with_(lease_ttl_s=5), clock)
    attempt = a.prepare()  # a claims and decides every job ...
    assert attempt is not None and len(attempt.decisions) == 3
    assert b.prepare() is None  # ... so b finds nothing to claim
    clock.advance(6.0)  # a stalls past its lease TTL: its claims vanish with the lease
    assert b.step()
    out = a.complete(attempt)  # a wakes up, finds its lease gone and commits nothing
    assert out.lease_lost and not out.committed
    assert a.metrics()["lease_losses"] == 1 and a.metrics()["jobs_lost_to_lease"] == 3
    assert b.metrics()["jobs_placed"] == 3
    rep = check_store(store, keys)
    assert rep.ok and rep.bound_tasks == 6, rep.violations
    assert not a.step()  # a recovers with a fresh lease; nothing is left to do


class Interloper:
    """Decides like a stubborn scheduler, and lets a rival touch m0 before every commit.

    Each attempt claims the first unbound task on m1 (`progress`) or on m0 (no progress)
    and the rest on m0; then the rival rewrites m0's spec, so under SEQUENCE conflict
    detection every claim on m0 conflicts.
    """

    def __init__(self, store, keys, progress: bool):
        self.store, self.keys, self.progress = store, keys, progress

    def __call__(self, columns, index, record, policy, seed):
        tasks = record.unbound_tasks()
        first = "m1" if self.progress else "m0"
        claims = [Claim(t, first if i == 0 else "m0", g.request) for i, (t, _, g) in enumerate(tasks)]
        set_machine_state(self.store, self.keys, "m0", MachineState.UP)  # a no-op write: new mod_revision
        return Decision(claims, 0, "", len(tasks))


def test_scheduler_retries_are_bounded_then_job_parked():
    clock, store, keys = sim_cell(2)
    submit_jobs(store, keys, [make_job("hot", 2, cpu=100)], now=0.0)
    settings = BATCH.with_(conflict_mode=ConflictMode.SEQUENCE, max_retries=3)
    s = Scheduler("b0", store, keys, settings, clock, decide_fn=Interloper(store, keys, progress=False))
    steps = 0
    while s.step():
        steps += 1
        assert steps < 20, "retries must be bounded"
    rec = status(store, keys, "hot")
    # 1 attempt + 3 retries, all conflicted and placing nothing, then parked with the cause.
    assert steps == 4 and rec.status is JobStatus.PARKED and not rec.bound
    assert rec.reason.startswith("no progress after 4 conflicted attempts; last: machine changed on m")
    m = s.metrics()
    assert m["jobs_parked_no_progress"] == 1 and m["conflicted_claims"] == 8
    assert m["wasted_decision_s"] == 0.0  # no think-time model: simulated decisions are instant
    assert check_store(store, keys).ok


def test_scheduler_retry_bound_resets_when_an_attempt_places_something():
    clock, store, keys = sim_cell(2)
    submit_jobs(store, keys, [make_job("hot", 4, cpu=100)], now=0.0)
    settings = BATCH.with_(conflict_mode=ConflictMode.SEQUENCE, max_retries=1)
    s = Scheduler("b0", store, keys, settings, clock, decide_fn=Interloper(store, keys, progress=True))
    steps = 0
    while s.step():
        steps += 1
        assert steps < 20
    # Every attempt conflicts on m0 but lands one task on m1: 4 attempts, never parked.
    rec = status(store, keys, "hot")
    assert steps == 4 and rec.status is JobStatus.PLACED
    assert s.metrics()["attempts_per_job_max"] == 4 and s.metrics()["jobs_parked"] == 0
    assert check_store(store, keys).ok


def test_scheduler_pipelined_claims_and_commits_place_everything_once():
    # txns_in_flight > 1: the next batch is claimed in the background while this one is
    # decided, and commit chunks go several at a time. The outcome must be the same:
    # every job placed exactly once, nothing left claimed.
    store = MemoryStore(limits=StoreLimits(max_txn_ops=32))
    keys = make_cell(store, 8, cpu=64_000, mem=262_144)
    jobs = [make_job(f"p{i:03d}", 1, cpu=100, mem=10) for i in range(300)]
    submit_jobs(store, keys, jobs, now=0.0)
    s = Scheduler("b0", store, keys, BATCH.with_(claim_batch=50, txns_in_flight=3), RealClock())
    try:
        for _ in range(100):
            if not s.step() and check_store(store, keys).bound_tasks == 300:
                break
    finally:
        s.close()
    rep = check_store(store, keys, [j.id for j in jobs])
    assert rep.ok, rep.violations[:5]
    assert rep.bound_tasks == 300
    assert s.metrics()["jobs_placed"] == 300
    assert store.get_prefix(keys.claims_prefix)[0] == []
