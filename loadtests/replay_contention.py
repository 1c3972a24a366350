"""Trace replay under contention: every wave of both Google 2011 parts, several scheduler
Ray actors on a 3-member etcd, then the invariant check.

    python -m loadtests.replay_contention [--json] [--first-wave-only] [--schedulers batch=3,service=2,gpu=1]
                                          [--data-dir DIR] [--seed N] [--horizon S] [--max-jobs N]

Starts its own etcd cluster (free loopback ports, stopped by PID) and a local Ray
instance (stopped with it); never touches a Ray or etcd it did not start. The workload is
loadtests.replay's: a seeded machine subset sized for 90% peak offered CPU, time
compressed so the ~2.8 h window plays in --horizon seconds, plus synthetic GPU gangs.

After the replay comes a settle: no job still waiting for a first decision, and placement
unchanged while every scheduler made two whole passes over its parked index, so every
parked job has been retried against the final state. Then it reports, and exits 0 only when all four hold:
- violations: cellstate.invariants.check_store finds none (no overcommit, no double
  binding, records agree, no accepted job missing);
- jobs_lost: every accepted job is pending and queued, parked and in the parked index,
  placed or finished;
- actor_errors: no scheduler actor raised, died (was restarted) or stopped answering;
- fittable_unplaced: no parked or unplaced task that the scalar reference
  (gpu/reference.py) can fit in the final state.
Exit 2 when the trace or etcd is missing or the arguments are bad; 1 when not clean.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from cellsched.cellstate import codec
from cellsched.cellstate.errors import InvalidInputError
from cellsched.cellstate.invariants import check_store
from cellsched.cellstate.keys import CellKeys
from cellsched.cellstate.machines import add_machines
from cellsched.cellstate.model import JobClass, JobStatus
from cellsched.cellstate.store import CellStore, Get
from cellsched.cellstate.store.etcd import EtcdStore
from cellsched.loadtests.etcd_process import etcd_binary, start_etcd_cluster
from cellsched.loadtests.final_state import (
    EXAMPLES,
    lost_jobs,
    read_final_state,
    unplaced_that_fit,
    violation_examples,
    violation_kind,
)
from cellsched.loadtests.replay import ReplayDriver, ReplayProgress, google_workload
from cellsched.loadtests.traces.sample import shared_data_dir
from cellsched.schedulers import ray_actors
from cellsched.schedulers.settings import PRESETS, SchedulerSettings

DEFAULT_FLEET_SPEC = "batch=3,service=2,gpu=1"


def parse_fleet(spec: str) -> tuple[tuple[JobClass, int], ...]:
    """'batch=3,service=2,gpu=1' -> ((BATCH, 3), (SERVICE, 2), (GPU, 1)); a class left out gets 0."""
    counts: dict[JobClass, int] = {}
    for part in (p.strip() for p in spec.split(",")):
        name, sep, value = part.partition("=")
        try:
            job_class = JobClass(name.strip())
        except ValueError:
            job_class = None
        if not sep or job_class is None or not value.strip().isdigit():
            raise InvalidInputError(f"scheduler spec {spec!r}: expected CLASS=COUNT items, CLASS one of "
                                    f"{[c.value for c in JobClass]}, e.g. {DEFAULT_FLEET_SPEC}")
        if job_class in counts:
            raise InvalidInputError(f"scheduler spec {spec!r}: {job_class.value} given twice")
        counts[job_class] = int(value)
    if sum(counts.values()) == 0:
        raise InvalidInputError(f"scheduler spec {spec!r}: no scheduler at all")
    return tuple((c, counts[c]) for c in JobClass if counts.get(c))


@dataclass(frozen=True)
class ContentionConfig:
    trace_dir: Path
    fleet: tuple[tuple[JobClass, int], ...] = parse_fleet(DEFAULT_FLEET_SPEC)
    first_wave_only: bool = False
    max_jobs: int | None = None  # evenly spaced waves (loadtests.replay.google_workload)
    horizon_s: float = 60.0
    seed: int = 11
    cell: str = "contention"  # also the prefix of the actors' names
    n_gpu_machines: int = 8
    n_gpu_jobs: int = 16
    # Short lease and parked retry, so a dead claim is taken over and every parked job is
    # retried against the final state within the settle (see _settle).
    lease_ttl_s: int = 5
    parked_retry_s: float = 2.0
    idle_poll_s: float = 0.1
    settle_timeout_s: float = 180.0

    def schedulers(self) -> list[tuple[str, SchedulerSettings]]:
        # Each class's n actors get homes (i, n), as `cellsched up` deploys them: disjoint
        # shares of the machines and of the queue first, the whole cell as the fallback.
        return [(f"{self.cell}-{c.value}-{i}", PRESETS[c].with_(lease_ttl_s=self.lease_ttl_s,
                                                                 idle_poll_s=self.idle_poll_s,
                                                                 parked_retry_s=self.parked_retry_s,
                                                                 home=i, homes=n))
                for c, n in self.fleet for i in range(n)]


# -- the run --------------------------------------------------------------------------


def _actor_status(actor, timeout_s: float, call: str = "status"):
    """(status dict, None) or (None, why the actor did not answer)."""
    try:
        return ray_actors.get(getattr(actor, call).remote(), timeout=timeout_s), None
    except Exception as exc:  # a dead actor, a timeout: either way an actor error
        text = " ".join(str(exc).split())
        if len(text) > 400:  # Ray puts the actor's own traceback, and its cause, last
            text = f"{text[:150]} ... {text[-250:]}"
        return None, f"did not answer {call}(): {type(exc).__name__}: {text}"


def run_contention(config: ContentionConfig, etcd_endpoints: str,
                   log: Callable[[str], None] = print) -> dict:
    """Replay the workload with the configured actors on the etcd at `etcd_endpoints`.

    Ray must already be initialised (main() starts a local instance; tests use their
    session cluster). Every actor started here is killed here.
    """
    workload = google_workload(config.trace_dir, horizon_s=config.horizon_s, target_peak=0.9, seed=config.seed,
                               max_jobs=config.max_jobs, first_wave_only=config.first_wave_only,
                               n_gpu_machines=config.n_gpu_machines, n_gpu_jobs=config.n_gpu_jobs)
    log(f"{workload.description}; peak offered CPU {workload.peak_offered_cpu:.0%}")
    store = EtcdStore(etcd_endpoints)
    keys = CellKeys(config.cell)
    fleet = config.schedulers()
    actors = []
    try:
        add_machines(store, keys, workload.machines)
        spec = ray_actors.StoreSpec(etcd=etcd_endpoints)
        actors = [ray_actors.start_scheduler(name, spec, keys.cell, settings) for name, settings in fleet]
        # An actor that fails to start (its constructor raised) is an actor error, not a crash of the run.
        first_pids, errors = {}, []
        for (name, _), actor in zip(fleet, actors, strict=True):
            st, why = _actor_status(actor, timeout_s=120.0)
            if st is None:
                errors.append(f"{name}: failed to start: {why}")
            else:
                first_pids[name] = st["pid"]
        log(f"{len(first_pids)} of {len(actors)} scheduler actors up: {', '.join(first_pids)}")
        t0 = time.monotonic()
        driver = ReplayDriver(store, keys, workload)
        progress = driver.run(until_s=config.horizon_s * 3, on_progress=lambda p: log(_progress_line(p)))
        settled = _settle(store, keys, config, [a for (name, _), a in zip(fleet, actors, strict=True)
                                                if name in first_pids])
        replay_s = time.monotonic() - t0
        statuses = []
        for (name, _), actor in zip(fleet, actors, strict=True):
            if name not in first_pids:
                continue  # reported above
            st, why = _actor_status(actor, timeout_s=60.0, call="stop")
            if st is None:
                errors.append(f"{name}: {why}")
                continue
            statuses.append(st)
            if st.get("error"):
                errors.append(f"{name}: raised {st['error'][:300]}")
            if st["pid"] != first_pids.get(name):
                errors.append(f"{name}: died and was restarted (pid {first_pids[name]} -> {st['pid']})")
    finally:
        for actor in actors:
            ray_actors.kill_actor(actor, no_restart=True)

    try:
        report = check_store(store, keys, driver.accepted)
        state = read_final_state(store, keys)
    finally:
        store.close()
    lost = lost_jobs(driver.accepted, state)
    fittable = unplaced_that_fit(state)
    accepted = set(driver.accepted)
    return {
        "workload": workload.description,
        "peak_offered_cpu": round(workload.peak_offered_cpu, 3),
        "machines": len(workload.machines),
        "schedulers": [name for name, _ in fleet],
        "jobs": len(accepted),
        "tasks": sum(j.task_count for j in workload.jobs if j.id in accepted),
        "rejected": len(driver.rejected),
        "submitted": progress.submitted,
        "tasks_placed": sum(len(r.bound) + len(r.done) for r in state.jobs),
        "jobs_placed": sum(r.status in (JobStatus.PLACED, JobStatus.FINISHED) for r in state.jobs),
        "jobs_parked": sum(r.status is JobStatus.PARKED for r in state.jobs),
        "jobs_pending": sum(r.status is JobStatus.PENDING for r in state.jobs),
        "jobs_parked_for_good": sum(r.status is JobStatus.PARKED and (r.refusal or {}).get("kind") == "crash_limit"
                                    for r in state.jobs),
        "status_counts": dict(Counter(r.status.value for r in state.jobs)),
        "settled": settled,
        "violations": len(report.violations),
        "violation_kinds": dict(Counter(violation_kind(v) for v in report.violations)),
        "violation_examples": violation_examples(report.violations),
        "jobs_lost": len(lost),
        "lost_examples": lost[:EXAMPLES],
        "actor_errors": len(errors),
        "actor_error_messages": errors,
        "fittable_unplaced": len(fittable),
        "fittable_examples": fittable[:EXAMPLES],
        "per_scheduler": [{"name": st["name"], **{k: st["metrics"][k] for k in _METRIC_KEYS}} for st in statuses],
        "replay_s": round(replay_s, 1),
    }


_METRIC_KEYS = ("tasks_placed", "jobs_placed", "wait_placed_p50_s", "wait_placed_p99_s", "busyness",
                "conflict_fraction", "store_errors", "lease_losses", "parked_rounds")


def _progress_line(p: ReplayProgress) -> str:
    return (f"  t={p.elapsed_s:5.1f}s submitted {p.submitted} placed {p.placed_jobs} parked {p.parked_jobs} "
            f"CPU {p.cpu_used / max(1, p.cpu_capacity):.0%}")


def _settle(store: CellStore, keys: CellKeys, config: ContentionConfig, actors: list) -> bool:
    """Wait, by progress and not by the clock, until no job still waits for a first decision
    and placement has stopped changing while every scheduler made two whole passes over its
    parked index (a pass is counted by the scheduler, `parked_rounds`): then every parked job
    has been retried against the final state, and one left that fits is stuck, not slow.
    False when that did not happen within settle_timeout_s."""
    deadline = time.monotonic() + config.settle_timeout_s
    previous, rounds_then = None, None
    while time.monotonic() < deadline:
        records = [codec.decode_job(kv.key, kv.value)
                   for kv in store.txn([], [Get(keys.jobs_prefix, prefix=True)]).reads[0]]
        statuses = Counter(r.status for r in records)
        if statuses[JobStatus.PENDING]:
            time.sleep(0.5)
            continue
        rounds = _parked_rounds(actors)
        # Statuses and the inline bindings: an incremental job placed part-way stays parked.
        snapshot = (statuses, sum(len(r.bound) + len(r.done) for r in records))
        if snapshot != previous or rounds is None or rounds_then is None:
            previous, rounds_then = snapshot, rounds
        elif all(now >= then + 2 for now, then in zip(rounds, rounds_then, strict=True)):
            return True
        time.sleep(config.parked_retry_s)
    return False


def _parked_rounds(actors: list) -> list[int] | None:
    """Each actor's count of whole passes over its parked index; None when one did not answer."""
    out = []
    for actor in actors:
        st, _ = _actor_status(actor, timeout_s=30.0)
        if st is None:
            return None
        out.append(st["metrics"]["parked_rounds"])
    return out


def is_clean(result: dict) -> bool:
    return not (result["violations"] or result["jobs_lost"] or result["actor_errors"] or result["fittable_unplaced"])


def print_report(result: dict) -> None:
    print(f"{'scheduler':22} {'tasks':>7} {'jobs':>6} {'wait p50':>8} {'wait p99':>8} {'busy':>6} "
          f"{'conflicts':>9} {'store err':>9}")
    for m in result["per_scheduler"]:
        print(f"{m['name']:22} {m['tasks_placed']:7d} {m['jobs_placed']:6d} {m['wait_placed_p50_s'] or 0:8.2f} "
              f"{m['wait_placed_p99_s'] or 0:8.2f} {m['busyness']:6.1%} {m['conflict_fraction']:9.3f} "
              f"{m['store_errors']:9d}")
    print(f"jobs {result['jobs']:,} ({result['tasks']:,} tasks) on {result['machines']:,} machines; "
          f"placed {result['jobs_placed']:,} jobs / {result['tasks_placed']:,} tasks, parked {result['jobs_parked']:,} "
          f"({result['jobs_parked_for_good']:,} for good), "
          f"pending {result['jobs_pending']:,}; replay {result['replay_s']} s"
          f"{'' if result['settled'] else ' (NOT settled: placement still changing at the settle timeout)'}")
    for label, count, examples in (("violations", result["violations"], result["violation_examples"]),
                                   ("jobs lost", result["jobs_lost"], result["lost_examples"]),
                                   ("actor errors", result["actor_errors"], result["actor_error_messages"]),
                                   ("fittable unplaced", result["fittable_unplaced"], result["fittable_examples"])):
        print(f"{label:18} {count:,}")
        for e in examples:
            print(f"    {e}")
    if result["violation_kinds"]:
        print(f"violation kinds: {result['violation_kinds']}")
    print("CLEAN" if is_clean(result) else "NOT CLEAN")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json", action="store_true", help="print the result as one JSON object, the last line")
    ap.add_argument("--first-wave-only", action="store_true", help="one wave (the first submission) per trace job")
    ap.add_argument("--schedulers", default=DEFAULT_FLEET_SPEC, help=f"actors per class (default {DEFAULT_FLEET_SPEC})")
    ap.add_argument("--data-dir", type=Path, default=None, help="default: ../shared/data ($CELLSCHED_SHARED_DATA)")
    ap.add_argument("--seed", type=int, default=11, help="machine subset and GPU gangs")
    ap.add_argument("--horizon", type=float, default=60.0, help="replay seconds the trace window is compressed into")
    ap.add_argument("--max-jobs", type=int, default=None, help="only this many evenly spaced waves")
    ap.add_argument("--members", type=int, default=3, help="etcd members")
    args = ap.parse_args(argv)
    try:
        fleet = parse_fleet(args.schedulers)
    except InvalidInputError as exc:
        ap.error(str(exc))  # exit 2
    trace_dir = (args.data_dir or shared_data_dir()) / "google2011"
    if not (trace_dir / "task_events").is_dir():
        print(f"no Google 2011 trace at {trace_dir}: this replay needs ../shared/data/google2011 "
              f"(pass --data-dir or set CELLSCHED_SHARED_DATA)", file=sys.stderr)
        return 2
    if etcd_binary() is None:
        print("etcd is not installed (Debian: apt-get install etcd-server)", file=sys.stderr)
        return 2
    config = ContentionConfig(trace_dir, fleet, first_wave_only=args.first_wave_only, max_jobs=args.max_jobs,
                              horizon_s=args.horizon, seed=args.seed)
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    cluster = start_etcd_cluster(args.members)
    try:
        ray_actors.init_ray()  # a local instance of our own; shutdown() below stops it
        try:
            result = run_contention(config, cluster.endpoints, log=lambda line: print(line, flush=True))
        finally:
            ray_actors.shutdown()
    finally:
        cluster.stop()
    print_report(result)
    if args.json:
        print(json.dumps(result))
    return 0 if is_clean(result) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
