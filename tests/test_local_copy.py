"""The scheduler-side local copy: watch-fed, survives compaction and reconnects."""

from __future__ import annotations

import time

from cellsched.cellstate.commit import CommitEngine, Plan
from cellsched.cellstate.etcd_store import EtcdStore
from cellsched.cellstate.local_copy import LocalCellCopy
from cellsched.cellstate.machines import add_machines, set_machine_state
from cellsched.cellstate.model import Claim, Machine, MachineState, task_id
from tests.cellfactory import make_cell, make_job, submit, views


def drain(copy, until, timeout=5.0):
    deadline = time.monotonic() + timeout
    while not until() and time.monotonic() < deadline:
        copy.poll(timeout=0.2)
    return until()


def place(store, keys, jid, machine, n=1):
    job = make_job(jid, n)
    jobs = submit(store, keys, job)
    claims = [Claim(task_id(jid, 0, i), machine, job.groups[0].request) for i in range(n)]
    return CommitEngine(store, keys).commit(Plan(claims, views(store, keys, 4), jobs))


def test_local_copy_follows_commits_and_new_machines(store):
    keys = make_cell(store, 4)
    copy = LocalCellCopy(store, keys)
    assert copy.size == 4 and int(copy.used[:4].sum()) == 0
    place(store, keys, "a", "m1", 2)
    add_machines(store, keys, [Machine("m9", (8000, 1024, 1))])
    set_machine_state(store, keys, "m2", MachineState.DRAINING)
    assert drain(copy, lambda: copy.size == 5 and not copy.schedulable[copy.index["m2"]])
    assert tuple(copy.used[copy.index["m1"]]) == (2000, 2048, 0)
    assert tuple(copy.capacity[copy.index["m9"]]) == (8000, 1024, 1)
    assert copy.revision == store.current_revision()
    assert copy.lag() == 0


def test_local_copy_applies_each_change_once(store):
    keys = make_cell(store, 4)
    copy = LocalCellCopy(store, keys)
    out = place(store, keys, "a", "m0", 1)
    copy.assume(out.machines)  # our own commit, folded in before the watch delivers it
    drain(copy, lambda: copy.revision >= out.revision)
    copy.poll(timeout=0.3)
    assert tuple(copy.used[copy.index["m0"]]) == (1000, 1024, 0)


def test_local_copy_resyncs_after_compaction(store):
    keys = make_cell(store, 4)
    copy = LocalCellCopy(store, keys)
    copy.close()  # stop following: the copy falls behind while history is compacted
    copy._watch = None
    place(store, keys, "a", "m3", 3)
    store.compact(store.current_revision())
    assert drain(copy, lambda: copy.resyncs == 1)
    assert tuple(copy.used[copy.index["m3"]]) == (3000, 3072, 0)


def test_local_copy_reconnects_after_member_restart(etcd_member):
    store = EtcdStore(etcd_member.endpoints, failover_retry_s=0.1)
    keys = make_cell(store, 4)
    copy = LocalCellCopy(store, keys)
    member = etcd_member.members[0]
    etcd_member.kill(member)
    drain(copy, lambda: copy.reconnects >= 1, timeout=5)
    etcd_member.start_member(member)
    etcd_member.wait_healthy()
    writer = EtcdStore(etcd_member.endpoints)
    deadline = time.monotonic() + 10
    while True:
        try:
            place(writer, keys, "after", "m2", 1)
            break
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
    assert drain(copy, lambda: int(copy.used[copy.index["m2"], 0]) == 1000, timeout=10)
    assert copy.reconnects >= 1
    writer.close()
    store.close()
