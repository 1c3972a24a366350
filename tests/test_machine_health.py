"""The machine monitor under races: heartbeats and re-placements that land between its
read and its write, machines that come back, and what it reads per tick."""

from __future__ import annotations

import pytest

from cellsched.cellstate import codec
from cellsched.cellstate.clock import SimClock
from cellsched.cellstate.commit import CommitEngine, Plan
from cellsched.cellstate.errors import CorruptValueError
from cellsched.cellstate.invariants import check_store
from cellsched.cellstate.lifecycle import release_tasks
from cellsched.cellstate.machine_health import MachineMonitor, heartbeat
from cellsched.cellstate.machines import set_machine_state
from cellsched.cellstate.model import Claim, Machine, MachineState, TaskOutcome
from cellsched.cellstate.store import Get, StoreLimits
from cellsched.cellstate.store.memory import MemoryStore
from cellsched.cellstate.submission import submit_jobs
from cellsched.cellstate.views import read_job_view
from cellsched.schedulers.cache import SchedulerCache
from tests.cellfactory import make_cell, make_job, views
from tests.storespy import SpyStore


def state_of(store, keys, mid: str) -> Machine:
    kv = store.get(keys.spec(mid))
    return codec.decode_machine(kv.key, kv.value)


def place(store, keys, job_id: str, tid: str, mid: str, n: int) -> None:
    plan = Plan([Claim(tid, mid, (1000, 1024, 0))], views(store, keys, n), {job_id: read_job_view(store, keys, job_id)})
    assert CommitEngine(store, keys).commit(plan).committed


def reads_prefix(success, prefix: str) -> bool:
    return any(type(op) is Get and op.key.startswith(prefix) for op in success)


def test_monitor_does_not_mark_down_a_machine_whose_heartbeat_lands_after_the_read():
    clock = SimClock(0.0)
    inner = MemoryStore(clock=clock)
    keys = make_cell(inner, 2)
    lease = inner.grant_lease(30)
    heartbeat(inner, keys, "m0", lease)
    fired = []

    def after(compares, success, result):  # m1's agent starts right after the monitor's read
        if not fired and reads_prefix(success, keys.live_prefix):
            fired.append(True)
            heartbeat(inner, keys, "m1", lease)

    report = MachineMonitor(SpyStore(inner, after), keys, clock).tick()
    assert fired and report.marked_down == []
    assert state_of(inner, keys, "m1").state is MachineState.UP


def test_monitor_returns_machines_it_marked_down_to_up_and_leaves_operator_states_alone():
    clock = SimClock(0.0)
    store = MemoryStore(clock=clock)
    keys = make_cell(store, 4)
    monitor = MachineMonitor(store, keys, clock)
    lease = store.grant_lease(30)
    set_machine_state(store, keys, "m1", MachineState.DRAINING)
    heartbeat(store, keys, "m2", lease)
    set_machine_state(store, keys, "m2", MachineState.DOWN)  # an operator's, with the agent alive
    report = monitor.tick()
    assert report.marked_down == ["m0", "m3"]  # a dead DRAINING machine keeps the operator's state
    set_machine_state(store, keys, "m3", MachineState.DOWN)  # the operator confirms: keep it down
    for mid in ("m0", "m1", "m3"):
        heartbeat(store, keys, mid, lease)
    report = monitor.tick()
    assert report.marked_up == ["m0"] and report.marked_down == []
    got = {m: state_of(store, keys, m).state for m in ("m0", "m1", "m2", "m3")}
    assert got == {"m0": MachineState.UP, "m1": MachineState.DRAINING, "m2": MachineState.DOWN,
                   "m3": MachineState.DOWN}
    assert monitor.tick().marked_up == []


def test_monitor_keeps_a_machine_down_when_its_live_key_vanishes_before_the_up_write():
    clock = SimClock(0.0)
    inner = MemoryStore(clock=clock)
    keys = make_cell(inner, 1)
    MachineMonitor(inner, keys, clock).tick()
    lease = inner.grant_lease(30)
    heartbeat(inner, keys, "m0", lease)
    fired = []

    def after(compares, success, result):  # the agent dies again right after the read
        if not fired and reads_prefix(success, keys.live_prefix):
            fired.append(True)
            inner.revoke_lease(lease)

    report = MachineMonitor(SpyStore(inner, after), keys, clock).tick()
    assert fired and report.marked_up == []
    assert state_of(inner, keys, "m0").state is MachineState.DOWN


def test_eviction_spares_a_task_re_placed_on_a_healthy_machine_meanwhile():
    clock = SimClock(0.0)
    inner = MemoryStore(clock=clock)
    keys = make_cell(inner, 3)
    submit_jobs(inner, keys, [make_job("e", 1)], now=0.0)
    place(inner, keys, "e", "e/0/0", "m0", 3)
    set_machine_state(inner, keys, "m0", MachineState.DRAINING)
    fired = []

    def after(compares, success, result):  # another monitor evicts it, a scheduler places it on m1
        if not fired and reads_prefix(success, keys.alloc_prefix):
            fired.append(True)
            release_tasks(inner, keys, "e", ["e/0/0"], 0.0, TaskOutcome.EVICTED)
            place(inner, keys, "e", "e/0/0", "m1", 3)

    MachineMonitor(SpyStore(inner, after), keys, clock, liveness_required=False).tick()
    assert fired
    assert read_job_view(inner, keys, "e").record.bound == {"e/0/0": "m1"}
    assert check_store(inner, keys, ["e"]).ok


def test_release_on_machine_releases_only_tasks_still_bound_there(store):
    keys = make_cell(store, 2)
    submit_jobs(store, keys, [make_job("r", 2)], now=0.0)
    place(store, keys, "r", "r/0/0", "m0", 2)
    place(store, keys, "r", "r/0/1", "m1", 2)
    release_tasks(store, keys, "r", ["r/0/0", "r/0/1"], 1.0, TaskOutcome.EVICTED,
                  on_machine={"r/0/0": "m0", "r/0/1": "m0"})
    assert read_job_view(store, keys, "r").record.bound == {"r/0/1": "m1"}
    assert check_store(store, keys, ["r"]).ok


def test_monitor_reads_allocations_only_of_down_or_draining_machines_in_bounded_txns():
    clock = SimClock(0.0)
    inner = MemoryStore(StoreLimits(max_txn_ops=6), clock=clock)
    keys = make_cell(inner, 10)
    submit_jobs(inner, keys, [make_job("b", 1)], now=0.0)
    place(inner, keys, "b", "b/0/0", "m1", 10)
    drained = [f"m{i}" for i in range(1, 6)]
    for mid in drained:
        set_machine_state(inner, keys, mid, MachineState.DRAINING)
    spy = SpyStore(inner)
    report = MachineMonitor(spy, keys, clock, liveness_required=False).tick()
    assert report.evicted_tasks == 1
    alloc_reads = [[g for g in txn if g.key.startswith(keys.alloc_prefix)] for txn in spy.gets()]
    alloc_reads = [r for r in alloc_reads if r]
    assert not any(g.prefix for r in alloc_reads for g in r)
    assert {g.key for r in alloc_reads for g in r} == {keys.alloc(m) for m in drained}
    assert max(len(r) for r in alloc_reads) <= 6 // 2


def test_heartbeats_do_not_reach_the_schedulers_local_copy():
    store = MemoryStore()
    keys = make_cell(store, 2)
    copy = SchedulerCache(store, keys)
    lease = store.grant_lease(30)
    for _ in range(3):
        heartbeat(store, keys, "m0", lease)
    assert copy.poll(timeout=0.2) == 0
    set_machine_state(store, keys, "m1", MachineState.DRAINING)
    assert copy.poll(timeout=5.0) >= 1  # the watch itself still works (the spec and its allocation record)
    copy.close()


def test_machine_codec_keeps_who_set_the_state_and_reads_old_values():
    m = Machine("m9", (1, 2, 0), {}, MachineState.DOWN, state_by="monitor")
    assert codec.decode_machine("k", codec.encode_machine(m)) == m
    old = b'{"v":1,"id":"m9","cap":[1,2,0],"labels":{},"state":"down"}'
    assert codec.decode_machine("k", old).state_by == ""
    with pytest.raises(CorruptValueError):
        codec.decode_machine("k", b'{"v":1,"id":"m9","cap":[1,2,0],"labels":{},"state":"down","by":"cron"}')
