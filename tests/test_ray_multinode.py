"""Must show: on a multi-node Ray cluster the schedulers spread over the nodes, and when a
node is removed the actors that ran on it restart elsewhere and no job is lost.

The cell lives in a real etcd outside Ray, so it survives the loss of any Ray node. The
schedulers are pinned alternately to the head and to an added worker node with soft node
affinity: soft, so that Ray may restart them on the head once the worker is gone.
"""

from __future__ import annotations

import time

import pytest
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from cellsched.cellstate import codec
from cellsched.cellstate.claims import claim_holders
from cellsched.cellstate.invariants import check_store
from cellsched.cellstate.keys import CellKeys
from cellsched.cellstate.machines import add_machines
from cellsched.cellstate.model import JobStatus, Machine
from cellsched.cellstate.store.etcd import EtcdStore
from cellsched.cellstate.submission import submit_jobs
from cellsched.schedulers import ray_actors
from cellsched.schedulers.settings import BATCH, ThinkTime
from tests.cellfactory import make_job

CELL = "multi"
SCHEDULERS = 4
WAVE_JOBS = 40
TASKS_PER_JOB = 3


def _statuses(actors, timeout: float = 60.0) -> list[dict]:
    # A call to a restarting actor waits until it is back (max_task_retries=-1).
    return ray_actors.get([a.status.remote() for a in actors], timeout=timeout)


def _wait_off_node(actors, node_id: str, timeout: float = 60.0) -> list[dict]:
    """Statuses once no actor answers from `node_id` (its workers may outlive its raylet briefly)."""
    deadline = time.monotonic() + timeout
    while True:
        statuses = _statuses(actors)
        if all(s["node_id"] != node_id for s in statuses) or time.monotonic() >= deadline:
            return statuses
        time.sleep(0.2)


def _wait_for_claims(store, keys: CellKeys, owners: set[str], timeout: float = 5.0) -> int:
    """How many claims `owners` hold, once they hold any (0 if none within `timeout`)."""
    deadline = time.monotonic() + timeout
    while True:
        held = sum(codec.decode_obj(kv.key, kv.value)["owner"] in owners for kv in claim_holders(store, keys).values())
        if held or time.monotonic() >= deadline:
            return held
        time.sleep(0.01)


def _wait_placed(store, keys: CellKeys, job_ids: list[str], timeout: float = 60.0):
    expected = len(job_ids) * TASKS_PER_JOB
    deadline = time.monotonic() + timeout
    while True:
        report = check_store(store, keys, job_ids)
        if report.bound_tasks == expected or not report.ok or time.monotonic() >= deadline:
            return report
        time.sleep(0.2)


@pytest.mark.ray
@pytest.mark.etcd
def test_scheduler_actors_node_removed_restart_elsewhere_and_lose_nothing(ray_cluster, etcd_member):
    keys = CellKeys(CELL)
    admin = EtcdStore(etcd_member.endpoints)
    add_machines(admin, keys, [Machine(f"m{i}", (16000, 65536, 0)) for i in range(30)])
    job_ids: list[str] = []

    def submit_wave(w: int) -> None:
        jobs = [make_job(f"w{w}-j{i}", TASKS_PER_JOB) for i in range(WAVE_JOBS)]
        assert len(submit_jobs(admin, keys, jobs, now=time.time()).accepted) == len(jobs)
        job_ids.extend(j.id for j in jobs)

    head_id = ray_cluster.head_node.node_id
    worker = ray_cluster.add_node(num_cpus=2, object_store_memory=78_643_200)
    actors = []
    try:
        ray_cluster.wait_for_nodes()
        worker_id = worker.node_id
        spec = ray_actors.StoreSpec(etcd=etcd_member.endpoints)
        # A short lease, so claims held by the actors on the lost node free up quickly; a
        # think time, so those actors hold claims when the node goes.
        settings = BATCH.with_(lease_ttl_s=2, idle_poll_s=0.05, claim_batch=4, think_time=ThinkTime(0.05, 0.0))
        for i in range(SCHEDULERS):
            node = (head_id, worker_id)[i % 2]
            actors.append(ray_actors.start_scheduler(
                f"multi-b{i}", spec, CELL, settings,
                scheduling_strategy=NodeAffinitySchedulingStrategy(node, soft=True)))
        before = _statuses(actors)
        assert {s["node_id"] for s in before} == {head_id, worker_id}

        submit_wave(0)
        first = _wait_placed(admin, keys, job_ids)
        assert first.ok and first.bound_tasks == len(job_ids) * TASKS_PER_JOB, first.violations[:5]

        submit_wave(1)  # in flight while the node goes
        on_worker = {f"multi-b{i}" for i in range(SCHEDULERS) if before[i]["node_id"] == worker_id}
        orphaned = _wait_for_claims(admin, keys, on_worker)
        removed_at = time.monotonic()
        ray_cluster.remove_node(worker, allow_graceful=False)
        submit_wave(2)
        after = _wait_off_node(actors, worker_id)
        moved_s = time.monotonic() - removed_at
        report = _wait_placed(admin, keys, job_ids)
        final = ray_actors.get([a.stop.remote() for a in actors], timeout=60)
        jobs_kvs, _ = admin.get_prefix(keys.jobs_prefix)
        status = {keys.last_segment(kv.key): codec.decode_job(kv.key, kv.value).status for kv in jobs_kvs}
    finally:
        for a in actors:
            ray_actors.kill_actor(a, no_restart=True)
        if worker in ray_cluster.worker_nodes:
            ray_cluster.remove_node(worker)
        admin.close()

    moved = [(b, a) for b, a in zip(before, after, strict=True) if b["node_id"] == worker_id]
    placed = sum(1 for s in status.values() if s is JobStatus.PLACED)
    print(f"\nmulti-node: {SCHEDULERS} schedulers on 2 nodes "
          f"({sum(s['node_id'] == head_id for s in before)} head, {len(moved)} worker); worker removed, "
          f"its actors held {orphaned} claims; {len(moved)} restarted on the head with new pids "
          f"{[(b['pid'], a['pid']) for b, a in moved]} after {moved_s:.1f} s; jobs {len(job_ids)}, placed {placed}, "
          f"tasks bound {report.bound_tasks}/{len(job_ids) * TASKS_PER_JOB}")

    assert moved
    for b, a in moved:
        assert a["node_id"] == head_id and a["pid"] != b["pid"]
    assert report.ok, report.violations[:5]
    assert report.bound_tasks == len(job_ids) * TASKS_PER_JOB
    assert set(status) == set(job_ids) and placed == len(job_ids)
    assert all(s["error"] is None for s in final)
