"""Real Ray: the hosted memory store and scheduler actors place jobs end to end."""

from __future__ import annotations

import time

import pytest

from cellsched.cellstate.invariants import check_store
from cellsched.cellstate.keys import CellKeys
from cellsched.cellstate.machines import add_machines
from cellsched.cellstate.model import Machine
from cellsched.cellstate.submission import submit_jobs
from cellsched.schedulers import ray_actors
from cellsched.schedulers.settings import BATCH
from tests.cellfactory import make_job


@pytest.mark.ray
def test_ray_hosted_store_and_two_schedulers_place_jobs(ray_cluster):
    host = ray_actors.host_store(name="smoke-store")
    store = ray_actors.RemoteStore(host)
    keys = CellKeys("smoke")
    add_machines(store, keys, [Machine(f"m{i}", (16000, 65536, 0)) for i in range(20)])
    jobs = [make_job(f"j{i}", 3) for i in range(60)]
    submit_jobs(store, keys, jobs, now=time.time())
    spec = ray_actors.StoreSpec(host_name="smoke-store")
    actors = [ray_actors.start_scheduler(f"smoke-b{i}", spec, "smoke", BATCH.with_(idle_poll_s=0.05, claim_batch=8))
              for i in range(2)]
    deadline = time.time() + 60
    while time.time() < deadline:
        report = check_store(store, keys, [j.id for j in jobs])
        if report.bound_tasks == 180:
            break
        time.sleep(0.3)
    statuses = ray_actors.get([a.stop.remote() for a in actors])
    assert report.ok, report.violations[:5]
    assert report.bound_tasks == 180
    assert all(s["error"] is None for s in statuses)
    assert sum(s["metrics"]["tasks_placed"] for s in statuses) == 180
    for a in actors:
        ray_actors.kill_actor(a, no_restart=True)
    ray_actors.kill_actor(host, no_restart=True)
