"""A commit compares one key per machine, its allocation record, because every spec write moves
that record too (cellstate/machines.py; docs/architecture.md, "The commit protocol"). A machine
drained, marked down, or removed and added again between a scheduler's read and its commit is
seen by the commit's compare, read again whole, and the claim refused: both backends."""

from __future__ import annotations

from cellsched.cellstate import codec
from cellsched.cellstate.commit import CommitEngine, Plan
from cellsched.cellstate.invariants import check_store
from cellsched.cellstate.keys import CellKeys
from cellsched.cellstate.machine_health import MachineMonitor
from cellsched.cellstate.machines import add_machines, remove_machine, set_machine_state
from cellsched.cellstate.model import Claim, Machine, MachineState, task_id
from cellsched.cellstate.validation import RefusalKind
from cellsched.cellstate.views import read_machine_views
from tests.cellfactory import make_cell, make_job, submit, views


def _one_claim(store, keys, jid: str, machine: str, cpu: int = 1000):
    job = make_job(jid, 1, cpu=cpu)
    return job, submit(store, keys, job), [Claim(task_id(jid, 0, 0), machine, job.groups[0].request)]


def test_a_new_machine_has_an_empty_allocation_record(store):
    keys = make_cell(store, 2)
    kv = store.get(keys.alloc("m0"))
    assert kv is not None and codec.decode_alloc(kv.key, kv.value).tasks == {}
    assert check_store(store, keys).ok


def test_a_drain_between_read_and_commit_is_caught_by_the_allocation_compare(store):
    keys = make_cell(store, 1)
    _, jobs, claims = _one_claim(store, keys, "j", "m0")
    stale = views(store, keys, 1)  # read while m0 is up
    alloc_before = store.get(keys.alloc("m0")).mod_revision
    set_machine_state(store, keys, "m0", MachineState.DRAINING)
    assert store.get(keys.alloc("m0")).mod_revision > alloc_before  # the spec write moved the record
    out = CommitEngine(store, keys).commit(Plan(claims, stale, jobs))
    assert out.committed == [] and [why.kind for _, why in out.conflicted] == [RefusalKind.MACHINE_NOT_UP]
    assert out.stats.conflicted_txns == 1  # the compare failed, then the fresh spec refused it
    rep = check_store(store, keys, ["j"])
    assert rep.ok and rep.bound_tasks == 0


def test_the_monitor_marking_a_machine_down_is_caught_too():
    from cellsched.cellstate.clock import SimClock
    from cellsched.cellstate.store.memory import MemoryStore

    clock = SimClock()
    store = MemoryStore(clock=clock)
    keys = make_cell(store, 1)
    _, jobs, claims = _one_claim(store, keys, "j", "m0")
    stale = views(store, keys, 1)
    MachineMonitor(store, keys, clock, liveness_required=True).tick()  # no heartbeat: m0 goes down
    assert read_machine_views(store, keys, ["m0"])["m0"].machine.state is MachineState.DOWN
    out = CommitEngine(store, keys).commit(Plan(claims, stale, jobs))
    assert out.committed == [] and [why.kind for _, why in out.conflicted] == [RefusalKind.MACHINE_NOT_UP]


def test_a_machine_removed_and_added_again_smaller_is_judged_on_its_new_capacity(store):
    keys = make_cell(store, 1)  # 4 CPUs
    _, jobs, claims = _one_claim(store, keys, "j", "m0", cpu=2000)
    stale = views(store, keys, 1)
    set_machine_state(store, keys, "m0", MachineState.DRAINING)
    remove_machine(store, keys, "m0")
    add_machines(store, keys, [Machine("m0", (1000, 16384, 0))])  # back with 1 CPU
    out = CommitEngine(store, keys).commit(Plan(claims, stale, jobs))
    assert out.committed == []
    [(_, why)] = out.conflicted
    assert (why.kind, why.capacity) == (RefusalKind.INSUFFICIENT_RESOURCE, 1000)
    assert check_store(store, keys, ["j"]).ok


def test_a_machine_of_an_older_cell_without_a_record_gets_one_with_its_first_state_change(store):
    keys = CellKeys("old")
    add_machines(store, keys, [Machine("m0", (4000, 16384, 0))])
    store.delete(keys.alloc("m0"))  # as cells written before this rule hold never-used machines
    _, jobs, claims = _one_claim(store, keys, "j", "m0")
    stale = views(store, keys, 1)
    assert stale["m0"].alloc_revision == 0
    set_machine_state(store, keys, "m0", MachineState.DOWN)
    assert store.get(keys.alloc("m0")) is not None
    out = CommitEngine(store, keys).commit(Plan(claims, stale, jobs))
    assert out.committed == [] and [why.kind for _, why in out.conflicted] == [RefusalKind.MACHINE_NOT_UP]
    assert check_store(store, keys, ["j"]).ok
