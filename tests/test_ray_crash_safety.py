"""Must show: scheduler actors killed 20 times mid-workload lose nothing and bind nothing twice.

Three batch scheduler actors share a real etcd. Jobs arrive in waves; before each wave
settles, one actor dies in one of three ways:
- `armed`: arm_crash_after_send() makes the actor SIGKILL itself right after a commit txn
  touching allocation records reached etcd and before it saw the ack (outcome unknown);
- `sigkill`: the test SIGKILLs the actor's process while it holds claims;
- `ray_kill`: ray.kill(actor, no_restart=False) while it holds claims.
Ray restarts every actor (max_restarts=-1). A modelled think time keeps claims held for a
while, so a kill leaves claims bound to the dead incarnation's lease (lease_ttl_s=2): they
must expire and the jobs must be claimed and placed by someone else.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from dataclasses import dataclass, field

import pytest

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

CELL = "crash"
SCHEDULERS = 3
KILLS = ("armed", "sigkill", "ray_kill") * 6 + ("armed", "sigkill")  # 20 kills, 7 of them armed
WAVE_JOBS = 12
TASKS_PER_JOB = 2
MACHINES = 40  # 16 task slots each: 640 slots for 20 x 12 x 2 = 480 tasks, so nothing parks


@dataclass
class ClaimLog:
    """Polls the claims prefix: which (owner, lease) held each job's claim, in order seen."""

    store: EtcdStore
    keys: CellKeys
    holders: dict[str, list[tuple[str, int]]] = field(default_factory=dict)
    stop: threading.Event = field(default_factory=threading.Event)

    def snapshot(self) -> dict[str, tuple[str, int]]:
        return {jid: (codec.decode_obj(kv.key, kv.value)["owner"], kv.lease)
                for jid, kv in claim_holders(self.store, self.keys).items()}

    def run(self) -> None:
        while not self.stop.wait(0.02):
            for jid, holder in self.snapshot().items():
                seen = self.holders.setdefault(jid, [])
                if holder not in seen:
                    seen.append(holder)


def _pid(actor, timeout: float = 60.0) -> int:
    # A call to a restarting actor waits until it is back (max_task_retries=-1).
    return ray_actors.get(actor.status.remote(), timeout=timeout)["pid"]


def _wait_for_restart(actor, old_pid: int, nudge, timeout: float = 60.0) -> int:
    deadline = time.monotonic() + timeout
    next_nudge = time.monotonic() + 2.0
    while time.monotonic() < deadline:
        pid = _pid(actor)
        if pid != old_pid:
            return pid
        if time.monotonic() >= next_nudge:  # an armed actor dies only once it commits: give it work
            nudge()
            next_nudge = time.monotonic() + 2.0
        time.sleep(0.05)
    raise AssertionError(f"actor (pid {old_pid}) was not killed and restarted within {timeout}s")


def _wait_until_holding(log: ClaimLog, owner: str, timeout: float = 10.0) -> dict[str, int]:
    """The claims `owner` holds now (job -> lease); empty if it held none within `timeout`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        held = {jid: lease for jid, (who, lease) in log.snapshot().items() if who == owner}
        if held:
            return held
        time.sleep(0.01)
    return {}


@pytest.mark.ray
@pytest.mark.etcd
def test_scheduler_actors_killed_twenty_times_lose_nothing(ray_cluster, etcd_member):
    keys = CellKeys(CELL)
    admin = EtcdStore(etcd_member.endpoints)
    add_machines(admin, keys, [Machine(f"m{i}", (16000, 65536, 0)) for i in range(MACHINES)])
    spec = ray_actors.StoreSpec(etcd=etcd_member.endpoints)
    # Think time holds each claimed batch for ~0.2 s, so a kill finds claims to orphan.
    settings = BATCH.with_(lease_ttl_s=2, idle_poll_s=0.05, claim_batch=4, think_time=ThinkTime(0.05, 0.0))
    names = [f"crash-b{i}" for i in range(SCHEDULERS)]
    actors = [ray_actors.start_scheduler(n, spec, CELL, settings) for n in names]
    log = ClaimLog(admin, keys)
    poller = threading.Thread(target=log.run, daemon=True)
    job_ids: list[str] = []
    waves = [0]

    def submit_wave() -> None:
        jobs = [make_job(f"w{waves[0]}-j{i}", TASKS_PER_JOB) for i in range(WAVE_JOBS)]
        waves[0] += 1
        assert len(submit_jobs(admin, keys, jobs, now=time.time()).accepted) == len(jobs)
        job_ids.extend(j.id for j in jobs)

    kills: dict[str, int] = dict.fromkeys(("armed", "sigkill", "ray_kill"), 0)
    orphaned: dict[str, tuple[str, int]] = {}  # job -> (owner, lease) of a claim held by a killed incarnation
    try:
        pids = [_pid(a) for a in actors]
        poller.start()
        for k, kind in enumerate(KILLS):
            victim, name = actors[k % SCHEDULERS], names[k % SCHEDULERS]
            if kind == "armed":
                ray_actors.get(victim.arm_crash_after_send.remote())
                submit_wave()
            else:
                submit_wave()
                held = _wait_until_holding(log, name)
                orphaned.update({jid: (name, lease) for jid, lease in held.items()})
                if kind == "sigkill":
                    os.kill(pids[k % SCHEDULERS], signal.SIGKILL)
                else:
                    ray_actors.kill_actor(victim, no_restart=False)
            pids[k % SCHEDULERS] = _wait_for_restart(victim, pids[k % SCHEDULERS], submit_wave)
            kills[kind] += 1

        expected_tasks = len(job_ids) * TASKS_PER_JOB
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            report = check_store(admin, keys, job_ids)
            if report.bound_tasks == expected_tasks or not report.ok:
                break
            time.sleep(0.2)
        log.stop.set()
        poller.join(timeout=5)
        statuses = ray_actors.get([a.stop.remote() for a in actors], timeout=60)
        jobs_kvs, _ = admin.get_prefix(keys.jobs_prefix)
        records = {keys.last_segment(kv.key): codec.decode_job(kv.key, kv.value) for kv in jobs_kvs}
        statuses_by_job = {jid: rec.status for jid, rec in records.items()}
        # what an unplaced job says of itself, for the assertion's message
        unplaced = {jid: (rec.status.value, rec.reason) for jid, rec in records.items() if rec.status is not JobStatus.PLACED}
        left_claims, _ = admin.get_prefix(keys.claims_prefix)
    finally:
        log.stop.set()
        for a in actors:
            ray_actors.kill_actor(a, no_restart=True)
        admin.close()

    # Jobs whose claim passed from a killed incarnation's lease to another lease.
    taken_over = {jid: [h for h in log.holders.get(jid, []) if h[1] != held[1]] for jid, held in orphaned.items()}
    taken_over = {jid: hs for jid, hs in taken_over.items() if hs}
    by_other = sum(1 for jid, hs in taken_over.items() if any(who != orphaned[jid][0] for who, _ in hs))
    print(f"\ncrash safety: kills {kills} (total {sum(kills.values())}), restarts {sum(kills.values())}, "
          f"waves {waves[0]}, jobs {len(job_ids)}, tasks bound {report.bound_tasks}/{expected_tasks}; "
          f"claims orphaned by kills {len(orphaned)}, re-claimed after expiry {len(taken_over)} "
          f"({by_other} by another scheduler), claims left {len(left_claims)}; "
          f"current incarnations placed {sum(s['metrics']['jobs_placed'] for s in statuses)} jobs")

    assert report.ok, report.violations[:5]  # no overcommit, no task bound twice, nothing lost
    assert kills["armed"] >= 5 and sum(kills.values()) == 20
    assert report.bound_tasks == expected_tasks, unplaced
    assert set(statuses_by_job) == set(job_ids)
    assert all(s is JobStatus.PLACED for s in statuses_by_job.values())
    assert not left_claims  # orphaned claims expired; completed ones were dropped by their commits
    assert orphaned, "no kill caught a scheduler holding claims"
    assert all(statuses_by_job[jid] is JobStatus.PLACED for jid in orphaned)
    assert taken_over, "no orphaned claim was seen re-claimed under another lease"
    assert all(s["error"] is None for s in statuses)
