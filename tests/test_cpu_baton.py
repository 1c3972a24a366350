"""The CPU baton: loops of one process step one at a time, first come first served, and a
step hands the baton on while it waits on a store in another process (schedulers/cpu_baton.py)."""

from __future__ import annotations

import threading

from cellsched.cellstate.clock import RealClock
from cellsched.cellstate.faults import DelegatingStore
from cellsched.cellstate.invariants import check_store
from cellsched.cellstate.keys import CellKeys
from cellsched.cellstate.machines import add_machines
from cellsched.cellstate.model import Machine
from cellsched.cellstate.store.memory import MemoryStore
from cellsched.cellstate.submission import submit_jobs
from cellsched.schedulers import BATCH, CpuBaton, Scheduler
from cellsched.schedulers.cpu_baton import BatonStore, baton_store, blocks_on_io

from .cellfactory import make_job, run_loops_until


class RemoteLikeStore(DelegatingStore):
    """A memory store that says its calls wait on another process, and records whether the
    calling thread held the baton during each call (another loop may hold it meanwhile: the
    hand-off gives it straight to the next waiter)."""

    def __init__(self, inner, baton: CpuBaton):
        super().__init__(inner)
        self.baton = baton
        self.held_during_call: list[bool] = []

    def txn(self, compares, success, failure=()):
        self.held_during_call.append(self.baton._owner == threading.get_ident())
        return super().txn(compares, success, failure)


def test_held_is_exclusive_and_first_come_first_served():
    baton = CpuBaton()
    order: list[int] = []

    def step(i: int) -> None:
        with baton.held():
            order.append(i)

    threads = []
    with baton.held():
        for i in range(4):
            t = threading.Thread(target=step, args=(i,))
            t.start()
            while len(baton._waiting) < i + 1:  # queued behind us: the arrival order is known
                threading.Event().wait(0.001)
            threads.append(t)
        assert order == []  # nobody stepped while we held it
    for t in threads:
        t.join(5)
    assert order == [0, 1, 2, 3]


def test_released_lets_another_step_run_while_the_holder_waits():
    baton = CpuBaton()
    ran = threading.Event()
    with baton.held():
        def step() -> None:
            with baton.held():
                ran.set()

        other = threading.Thread(target=step)
        other.start()
        assert not ran.wait(0.05)  # blocked while we hold it
        with baton.released():
            assert ran.wait(5)  # it got its turn while we were "on the network"
        other.join(5)
    assert baton.handoffs == 1


def test_held_stays_exclusive_and_ends_free_under_random_hand_offs():
    """Seeded: loops step with random store waits (released) and random work; at most one is
    ever inside, every loop finishes (no hand-off lost), and the baton ends free."""
    import random

    baton = CpuBaton()
    inside, worst, done = [0], [0], []
    guard = threading.Lock()

    def enter() -> None:
        with guard:
            inside[0] += 1
            worst[0] = max(worst[0], inside[0])

    def leave() -> None:
        with guard:
            inside[0] -= 1

    def loop(seed: int) -> None:
        rng = random.Random(seed)
        for _ in range(40):
            with baton.held():
                enter()
                for _ in range(rng.randrange(3)):
                    leave()
                    with baton.released():
                        threading.Event().wait(rng.random() * 0.001)
                    enter()
                if rng.random() < 0.3:
                    threading.Event().wait(rng.random() * 0.0005)
                leave()
        done.append(seed)

    threads = [threading.Thread(target=loop, args=(s,)) for s in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sorted(done) == list(range(6))
    assert worst[0] == 1
    assert baton._owner is None and not baton._waiting


def test_released_is_a_no_op_for_a_thread_that_does_not_hold_it():
    baton = CpuBaton()
    with baton.released():
        pass
    assert baton.handoffs == 0 and baton._owner is None


def test_only_stores_that_wait_on_another_process_get_wrapped():
    baton = CpuBaton()
    mem = MemoryStore()
    assert not blocks_on_io(mem) and not blocks_on_io(DelegatingStore(mem))
    assert baton_store(mem, baton) is mem and baton_store(mem, None) is mem

    class Remote(DelegatingStore):
        inner = None  # not a wrapper of a CellStore: a client of its own

    remote = Remote(mem)
    remote.inner = None
    assert blocks_on_io(remote)
    assert isinstance(baton_store(remote, baton), BatonStore)


def test_two_loops_under_one_baton_hand_it_on_for_every_store_call_and_place_everything():
    baton = CpuBaton()
    raw = MemoryStore()
    keys = CellKeys("bt")
    add_machines(raw, keys, [Machine(f"m{i:02d}", (8000, 32768, 0)) for i in range(40)])
    jobs = [make_job(f"j{i:03d}", 3) for i in range(60)]
    submit_jobs(raw, keys, jobs, now=0.0)
    remote = RemoteLikeStore(raw, baton)
    wrapped = BatonStore(remote, baton)  # as baton_store wraps a client that waits on the network
    scheds = [Scheduler(f"s{k}", wrapped, keys, BATCH.with_(home=k, homes=2, idle_poll_s=0.001), RealClock(),
                        baton=baton) for k in range(2)]
    stop = threading.Event()
    threads = [threading.Thread(target=s.run, args=(stop,), daemon=True) for s in scheds]
    for t in threads:
        t.start()
    try:
        deadline = threading.Event()
        for _ in range(2000):
            if sum(s.raw_metrics.tasks_placed for s in scheds) >= 180:
                break
            deadline.wait(0.005)
    finally:
        stop.set()
        for t in threads:
            t.join(10)
    assert sum(s.raw_metrics.tasks_placed for s in scheds) == 180
    assert remote.held_during_call and not any(remote.held_during_call)  # no caller held the baton during its store call
    assert baton.handoffs > 0
    assert check_store(raw, keys, [j.id for j in jobs]).ok
    for s in scheds:
        s.close()


class LoggedScheduler(Scheduler):
    """A scheduler that logs when its halves of a step begin and end, in one shared log."""

    def __init__(self, log: list, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.log = log

    def prepare(self):
        self.log.append((self.name, "prepare"))
        attempt = super().prepare()
        self.log.append((self.name, "prepared" if attempt is not None else "idle"))
        return attempt

    def complete(self, attempt):
        self.log.append((self.name, "complete"))
        try:
            return super().complete(attempt)
        finally:
            self.log.append((self.name, "completed"))


def _run_logged(seed: int, think_s: float):
    import random

    from cellsched.schedulers.settings import ThinkTime

    rng = random.Random(seed)
    baton, raw, keys = CpuBaton(), MemoryStore(), CellKeys(f"bl{seed}")
    add_machines(raw, keys, [Machine(f"m{i:02d}", (8000, 32768, 0)) for i in range(rng.randrange(6, 12))])
    jobs = [make_job(f"j{i:03d}", rng.randrange(1, 5)) for i in range(rng.randrange(30, 60))]
    submit_jobs(raw, keys, jobs, now=0.0)
    log: list = []
    # homes=1: every loop picks from the whole cell, the most contention there can be
    settings = BATCH.with_(idle_poll_s=0.001, claim_batch=rng.choice([4, 8, 16]), think_time=ThinkTime(think_s, 0.0))
    scheds = [LoggedScheduler(log, f"s{k}", raw, keys, settings.with_(seed=seed * 10 + k), RealClock(), baton=baton)
              for k in range(3)]
    total = sum(j.task_count for j in jobs)
    fits = sum(8000 // 1000 for _ in range(len(raw.get_prefix(keys.spec_prefix)[0])))
    run_loops_until(scheds, min(total, fits), polls=2000)
    assert check_store(raw, keys, [j.id for j in jobs]).ok
    for s in scheds:
        s.close()
    return log, scheds


def test_a_step_without_think_time_commits_under_the_hold_it_decided_in_seeded():
    """Seeded: three loops under one baton on an in-process store, no think time, every loop
    on the whole cell. No other loop steps between a loop's decision and its commit, so the
    commits never conflict."""
    for seed in (1, 2, 3):
        log, scheds = _run_logged(seed, 0.0)
        steps = [k for k, (_, what) in enumerate(log) if what == "prepared"]
        assert steps
        for k in steps:  # the same loop goes straight on to commit
            assert log[k + 1] == (log[k][0], "complete"), log[k - 2:k + 3]
        assert sum(s.raw_metrics.commits.conflicted_txns for s in scheds) == 0


def test_a_step_with_think_time_hands_the_baton_on_while_it_thinks_seeded():
    """With think time, the loops decide while another thinks: some loop steps between a
    loop's decision and its commit (so the commits may conflict, and the validator settles it)."""
    log, _ = _run_logged(4, 0.003)
    steps = [k for k, (_, what) in enumerate(log) if what == "prepared"]
    assert any(log[k + 1][0] != log[k][0] for k in steps)


def test_only_loops_on_an_in_process_store_under_a_baton_hold_it_for_whole_steps():
    raw = MemoryStore()
    keys = CellKeys("ws")
    add_machines(raw, keys, [Machine("m0", (8000, 32768, 0))])
    baton = CpuBaton()
    local = Scheduler("a", raw, keys, BATCH, RealClock(), baton=baton)
    remote = Scheduler("b", BatonStore(RemoteLikeStore(raw, baton), baton), keys, BATCH, RealClock(), baton=baton)
    alone = Scheduler("c", raw, keys, BATCH, RealClock())
    assert isinstance(remote.store, BatonStore)  # its store calls hand the baton on
    assert (local._whole_steps, remote._whole_steps, alone._whole_steps) == (True, False, False)
    for s in (local, remote, alone):
        s.close()
