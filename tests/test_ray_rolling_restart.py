"""A rolling restart (SIGTERM to a scheduler actor) releases its claims at once, not after
its lease expires, and whatever its interrupted step still commits is fenced off."""

from __future__ import annotations

import os
import signal
import time

import pytest

from cellsched.cellstate.claims import claimed_jobs
from cellsched.cellstate.invariants import check_store
from cellsched.cellstate.keys import CellKeys
from cellsched.cellstate.machines import add_machines
from cellsched.cellstate.model import Machine
from cellsched.cellstate.submission import submit_jobs
from cellsched.schedulers import ray_actors
from cellsched.schedulers.settings import BATCH, ThinkTime
from tests.cellfactory import make_job

LEASE_TTL_S = 60


@pytest.mark.ray
def test_sigterm_releases_claims_before_the_lease_would_expire(ray_cluster):
    host = ray_actors.host_store(name="rolling-store")
    store = ray_actors.RemoteStore(host)
    keys = CellKeys("rolling")
    add_machines(store, keys, [Machine(f"m{i}", (16000, 65536, 0)) for i in range(4)])
    jobs = [make_job(f"j{i}", 1) for i in range(5)]
    submit_jobs(store, keys, jobs, now=time.time())
    # A long modelled think time: the actor holds its claims, deciding, when the signal comes.
    settings = BATCH.with_(think_time=ThinkTime(per_job_s=20.0), lease_ttl_s=LEASE_TTL_S, idle_poll_s=0.05)
    actor = ray_actors.start_scheduler("rolling-b0", ray_actors.StoreSpec(host_name="rolling-store"), "rolling",
                                       settings, max_restarts=0)
    deadline = time.time() + 30
    while time.time() < deadline and len(claimed_jobs(store, keys)) < 5:
        time.sleep(0.1)
    assert len(claimed_jobs(store, keys)) == 5
    pid = ray_actors.get(actor.status.remote())["pid"]
    signalled = time.time()
    os.kill(pid, signal.SIGTERM)
    while time.time() - signalled < LEASE_TTL_S / 2 and store.get_prefix(keys.claims_prefix)[0]:
        time.sleep(0.1)
    released_after = time.time() - signalled
    assert store.get_prefix(keys.claims_prefix)[0] == [], "claims still held half a lease TTL after SIGTERM"
    assert released_after < LEASE_TTL_S / 2
    report = check_store(store, keys, [j.id for j in jobs])
    assert report.ok and report.bound_tasks == 0, report.violations
    ray_actors.kill_actor(host, no_restart=True)
