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

from .cellfactory import make_job


class RemoteLikeStore(DelegatingStore):
    """A memory store that says its calls wait on another process, and records who held the
    baton during each call."""

    def __init__(self, inner, baton: CpuBaton):
        super().__init__(inner)
        self.baton = baton
        self.held_during_call: list[bool] = []

    def txn(self, compares, success, failure=()):
        self.held_during_call.append(self.baton._owner is not None)
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
    assert remote.held_during_call and not any(remote.held_during_call)  # no store call held the baton
    assert baton.handoffs > 0
    assert check_store(raw, keys, [j.id for j in jobs]).ok
    for s in scheds:
        s.close()
