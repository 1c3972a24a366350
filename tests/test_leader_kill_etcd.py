"""Must show: SIGKILL the leader of a 3-member etcd mid-run.

Commits resume after the election, every acknowledged commit survives, and commits
interrupted between send and ack (injected: applied, then the ack is dropped) never
lead to a task bound twice.
"""

from __future__ import annotations

import random
import threading
import time

import pytest

from cellsched.cellstate.commit import CommitEngine, Plan
from cellsched.cellstate.errors import StoreUnavailableError
from cellsched.cellstate.faults import FaultInjectingStore, FaultPlan
from cellsched.cellstate.invariants import check_store
from cellsched.cellstate.keys import CellKeys
from cellsched.cellstate.machines import add_machines
from cellsched.cellstate.model import Claim, Job, Machine, TaskGroup
from cellsched.cellstate.store import Get
from cellsched.cellstate.store.etcd import EtcdStore
from cellsched.cellstate.submission import submit_jobs
from cellsched.cellstate.views import job_records, read_job_view, read_machine_views

TASK = (100, 100, 0)


@pytest.mark.etcd
def test_leader_kill_commits_resume_and_nothing_is_bound_twice(etcd_three):
    keys = CellKeys("lk")
    admin = EtcdStore(etcd_three.all_endpoints)
    machines = [f"m{i}" for i in range(40)]
    add_machines(admin, keys, [Machine(m, (100_000, 100_000, 0)) for m in machines])
    jobs = [Job(f"j{i}", (TaskGroup("g", 4, TASK),)) for i in range(600)]
    submit_jobs(admin, keys, jobs, now=0.0)

    acked: list[tuple[str, str]] = []  # (task, machine) of every acknowledged commit
    ack_times: list[float] = []
    lock = threading.Lock()
    stop = threading.Event()
    stores: list[FaultInjectingStore] = []
    errors: list[str] = []

    def committer(k: int):
        rng = random.Random(k)
        # Sends every commit for real, then drops the ack of a seeded 5% of them.
        store = FaultInjectingStore(EtcdStore(etcd_three.all_endpoints, timeout_s=2.0), FaultPlan(p_lost_ack=0.05),
                                    seed=k)
        stores.append(store)
        engine = CommitEngine(store, keys)
        for job in jobs[k::3]:
            if stop.is_set():
                return
            while not stop.is_set():
                try:
                    view = read_job_view(store, keys, job.id)
                    todo = [t for t, _, _ in view.record.unbound_tasks()]
                    if not todo:
                        break
                    picks = rng.sample(machines, len(todo))
                    mviews = read_machine_views(store, keys, picks)
                    out = engine.commit(Plan([Claim(t, m, TASK) for t, m in zip(todo, picks, strict=True)],
                                             mviews, {job.id: view}))
                    with lock:
                        acked.extend((c.task_id, c.machine_id) for c in out.committed)
                        if out.committed:
                            ack_times.append(time.monotonic())
                except StoreUnavailableError:
                    time.sleep(0.05)  # election in progress: retry from a fresh read
                except Exception as exc:  # pragma: no cover - reported below
                    errors.append(repr(exc))
                    return

    threads = [threading.Thread(target=committer, args=(k,)) for k in range(3)]
    for t in threads:
        t.start()
    # Kill mid-run by progress, not by the clock: after 100 acked commits of 600 jobs.
    deadline = time.monotonic() + 60
    while len(ack_times) < 100 and time.monotonic() < deadline:
        time.sleep(0.05)
    leader = etcd_three.leader()
    killed_at = time.monotonic()
    etcd_three.kill(leader)
    time.sleep(4.0)
    stop.set()
    for t in threads:
        t.join(timeout=60)
    assert not errors, errors

    after = EtcdStore(etcd_three.endpoints)
    resumed = [t for t in ack_times if t > killed_at]
    dropped = sum(s.faults["lost_ack"] for s in stores)
    print(f"\nacked commits before kill: {len(ack_times) - len(resumed)}, after: {len(resumed)}, "
          f"injected ack drops: {dropped}, acked placements: {len(acked)}")
    assert len(resumed) > 0, "no commit succeeded after the leader was killed"
    assert dropped >= 5
    # Every acknowledged placement is still in the store, exactly where it was acked.
    bound = {}
    for rec in job_records(*after.txn([], [Get(keys.jobs_prefix, prefix=True),
                                           Get(keys.bind_root, prefix=True)]).reads):
        bound.update(rec.bound)
    missing = [(t, m) for t, m in acked if bound.get(t) != m]
    assert not missing, missing[:5]
    assert len({t for t, _ in acked}) == len(acked), "a task was acknowledged twice"
    report = check_store(after, keys, [j.id for j in jobs])
    assert report.ok, report.violations[:10]
    after.close()
    admin.close()
