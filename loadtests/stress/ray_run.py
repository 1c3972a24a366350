"""run_ray_stress: the stress workload with scheduler *actors* (own processes, Ray restarts
them) on an etcd cluster, and process faults instead of store-call faults.

The cell, the jobs, the submitter and the chaos thread are the thread variant's. The
faults are what a process can suffer, drawn from a seeded generator on a period:
- armed: the actor SIGKILLs itself right after a commit reached etcd, before the ack
  (SchedulerActor.arm_crash_after_send): an unknown outcome at the process level;
- sigkill: its process is killed at an arbitrary moment, typically holding claims;
- ray_kill: ray.kill with restart.
Claims of a dead incarnation expire with its lease (lease_ttl_s=2) and are taken over.
The invariant checker runs on a period and at the end (a write hook would need code in
the actors). Metrics are per incarnation: the last snapshot of each is summed.
"""

from __future__ import annotations

import os
import random
import signal
import tempfile
import threading
import time
from collections.abc import Callable
from typing import Any

from cellsched.cellstate.faults import FaultInjectingStore
from cellsched.cellstate.keys import CellKeys
from cellsched.cellstate.machines import add_machines
from cellsched.schedulers import ray_actors

from .chaos import Chaos
from .checking import InvariantRecorder, memoized_decoding
from .common import (
    RunState,
    jobs_lost,
    join_all,
    open_store,
    periodic_checker,
    record_error,
    scheduler_settings,
    submitter,
)
from .harness import DEFAULT_THINK
from .workload import JobMaker, build_fleet

KILL_KINDS = ("armed", "sigkill", "ray_kill")
STATUS_TIMEOUT_S = 30.0


def _start_ray(address: str | None) -> None:
    """Connect to Ray at `address`, or start a small local instance."""
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("RAY_TMPDIR", tempfile.mkdtemp(prefix="cellsched-stress-ray-"))
    ray_actors.init_ray(address)


class _Incarnations:
    """The last metrics seen of every (actor, pid): what each incarnation did before it died."""

    def __init__(self):
        self.last: dict[tuple[str, int], dict] = {}

    def poll(self, actors: dict[str, Any]) -> dict[str, int]:
        pids = {}
        for name, actor in actors.items():
            st = ray_actors.get(actor.status.remote(), timeout=STATUS_TIMEOUT_S)
            self.last[(name, st["pid"])] = st["metrics"]
            pids[name] = st["pid"]
        return pids

    def totals(self) -> dict:
        ms = list(self.last.values())
        return {"commits": sum(m["txns"] - m["failed_txns"] for m in ms),
                "conflicts": sum(m["conflicted_claims"] for m in ms),
                "conflicted_txns": sum(m["failed_txns"] for m in ms),
                "tasks_placed": sum(m["tasks_placed"] for m in ms),
                "unknown_outcomes": sum(m["unknown_outcomes"] for m in ms),
                "incarnations": len(self.last)}


def run_ray_stress(seed: int, schedulers: int, seconds: float, *, etcd_endpoints: str | None = None,
                   etcd_members: int = 3, kill_every_s: tuple[float, float] = (1.0, 2.5),
                   own_ray: bool = True, ray_address: str | None = None, cell: str | None = None,
                   check_every_s: float = 1.0, progress: Callable[[dict], None] | None = None) -> dict:
    """own_ray: start (or connect to `ray_address`) and shut down Ray here; False when the
    caller already initialised Ray in this process (a test fixture)."""
    rng = random.Random(seed)
    cell = cell or f"rstress{seed}"
    be = open_store("etcd", etcd_endpoints, etcd_members)
    if own_ray:
        _start_ray(ray_address)
    keys = CellKeys(cell)
    recorder = InvariantRecorder(be.admin, keys)
    run = RunState(be.admin, keys, recorder, threading.Event(), [], [0])
    kills = dict.fromkeys(KILL_KINDS, 0)
    restarts = [0]
    seen = _Incarnations()
    actors: dict[str, Any] = {}  # Ray actor handles (their methods' .remote are untyped)
    client_stores = [FaultInjectingStore(be.connect()) for _ in range(2)]  # submitter, chaos: no faults
    try:
        add_machines(be.admin, keys, build_fleet(rng, 28, 8))
        spec = ray_actors.StoreSpec(etcd=be.etcd_endpoints)
        for k in range(schedulers):
            settings = scheduler_settings(k, seed, DEFAULT_THINK).with_(lease_ttl_s=2)
            name = f"{cell}-{settings.job_class.value[:3]}{k}-{settings.conflict_mode.value[:3]}"
            actors[name] = ray_actors.start_scheduler(name, spec, cell, settings, num_cpus=0.1)
        maker = JobMaker(random.Random(rng.getrandbits(64)), prefix=f"r{seed}")
        accepted: list[str] = []
        chaos = Chaos(client_stores[1], keys, recorder, seed=rng.getrandbits(64))
        threads = [
            threading.Thread(target=submitter, daemon=True, args=(run, client_stores[0], maker,
                                                                  random.Random(rng.getrandbits(64)), 1, accepted)),
            threading.Thread(target=chaos.run, args=(run.stop,), daemon=True),
            threading.Thread(target=periodic_checker, args=(run, check_every_s), daemon=True),
        ]
        with memoized_decoding():
            pids = seen.poll(actors)  # every actor is up before the clock starts
            began = time.monotonic()
            for t in threads:
                t.start()
            next_kill = began + rng.uniform(*kill_every_s)
            offset = rng.randrange(len(KILL_KINDS))
            while not run.stop.wait(0.5):
                try:
                    now_pids = seen.poll(actors)
                except Exception as exc:  # a status call that timed out: note it, keep going
                    record_error(run, "status", exc)
                    continue
                restarts[0] += sum(1 for n, p in now_pids.items() if pids.get(n) != p)
                pids = now_pids
                if progress is not None:
                    progress({"elapsed_s": time.monotonic() - began, **seen.totals(), "kills": dict(kills)})
                if time.monotonic() - began >= seconds:
                    break
                if time.monotonic() >= next_kill:
                    # Kinds in rotation from a seeded start, victims at random: a short run
                    # still sees every kind.
                    kind = KILL_KINDS[(offset + sum(kills.values())) % len(KILL_KINDS)]
                    name = rng.choice(sorted(actors))
                    if kind == "armed":
                        ray_actors.get(actors[name].arm_crash_after_send.remote(), timeout=STATUS_TIMEOUT_S)
                    elif kind == "sigkill":
                        try:
                            os.kill(pids[name], signal.SIGKILL)
                        except ProcessLookupError:  # it died meanwhile (an armed crash went off)
                            pass
                    else:
                        ray_actors.kill_actor(actors[name], no_restart=False)
                    kills[kind] += 1
                    next_kill = time.monotonic() + rng.uniform(*kill_every_s)
            run.stop.set()
            join_all(run, threads)
            finals = ray_actors.get([a.stop.remote() for a in actors.values()], timeout=60)
            for (name, _), st in zip(actors.items(), finals, strict=True):
                seen.last[(name, st["pid"])] = st["metrics"]
                if st["error"]:
                    record_error(run, name, RuntimeError(st["error"]))
            elapsed = time.monotonic() - began
            final = recorder.final_check()
            lost, lost_ids = jobs_lost(final, recorder.expected, be.admin, keys)
        summary = recorder.summary()
        return {
            "seed": seed, "backend": f"etcd-{etcd_members}" if etcd_endpoints is None else "etcd",
            "variant": "ray-actors", "schedulers": schedulers, "seconds": round(elapsed, 1),
            **seen.totals(), "kills": {**kills, "total": sum(kills.values())}, "restarts_seen": restarts[0],
            "violations": summary["violations"], "violation_count": summary["violation_count"],
        "violation_onsets": summary["violation_onsets"],
            "violation_kinds": summary["violation_kinds"], "violations_first_seen": summary["violations_first_seen"],
            "checks": summary["checks"], "violating_checks": summary["violating_checks"],
        "check_outages": summary["check_outages"],
            "jobs": len(accepted), "jobs_lost": lost, "jobs_lost_examples": lost_ids,
            "final_bound_tasks": final.bound_tasks if final is not None else None,
            "chaos": chaos.stats.summary(),
            "harness_errors": run.error_count[0], "harness_error_messages": run.errors,
        "submitter_outages": run.outages,
        }
    finally:
        run.stop.set()
        for a in actors.values():
            ray_actors.kill_actor(a, no_restart=True)
        for st in client_stores:
            st.close()
        if own_ray:
            ray_actors.shutdown()
        be.close()
