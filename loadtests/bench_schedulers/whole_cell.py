"""The whole-cell case (issue 9, Must show 5): the Google 2011 cell placed from scratch.

Machines: every machine live at the start of the trace window (12,457 in ../shared/data).
Jobs: trace jobs (one per submission wave, trace_job) drawn with replacement, seeded, until
their CPU requests reach `fill` (60%) of the cell's CPU; drawing whole jobs keeps both the
trace's tasks-per-job distribution and its task shapes. Every job is made a BATCH job (the
schedulers run the BATCH preset) with no duration (nothing finishes: a fill, not a replay).

The schedulers (threads of this process, or Ray actors: --whole-cell-runner; on memory the
Ray actors reach the store hosted in its own actor, as `make demo` runs it; BATCH preset,
disjoint homes) are built first (their snapshots taken) and idle; the clock starts at the
first submission (all jobs in one submit_jobs call) and stops when the schedulers' counts
of placed plus parked jobs cover every job (threads), or when every job's queue entry is
gone (Ray actors, out of reach). Then check_store over the whole cell, and the jobs'
states read back.
Without the trace the case is skipped, with the reason; --quick uses the shipped sample
(loadtests/data/google2011_sample) on a seeded subset of its machines.
"""

from __future__ import annotations

import random
import sys
import time
from collections import Counter
from pathlib import Path

from cellsched.cellstate import codec
from cellsched.cellstate.invariants import check_store
from cellsched.cellstate.keys import CellKeys
from cellsched.cellstate.machines import add_machines
from cellsched.cellstate.model import Job, JobClass, Machine, TaskGroup
from cellsched.cellstate.submission import submit_jobs
from cellsched.loadtests.traces.google2011 import (
    first_task_event_time,
    group_jobs,
    live_machines_at,
    read_task_attempts,
)
from cellsched.loadtests.traces.sample import sample_trace_dir, shared_trace_dir
from cellsched.loadtests.traces.to_model import trace_job, trace_machine
from cellsched.schedulers.settings import BATCH

from .backends import etcd_available, open_backend
from .measuring import QueueDrain
from .runners import RUNNERS, ThreadRunner, hosted_memory
from .workload import BenchmarkError

TARGETS_S = {"memory": 30.0, "etcd-3": 90.0}


def whole_cell_workload(trace_dir: Path, fill: float = 0.6, seed: int = 1,
                        max_machines: int | None = None) -> tuple[list[Machine], list[Job]]:
    live = live_machines_at(trace_dir, first_task_event_time(trace_dir))
    rng = random.Random(seed)
    if max_machines is not None and max_machines < len(live):
        live = rng.sample(live, max_machines)
    machines = [trace_machine(m) for m in live]
    target = fill * sum(m.capacity[0] for m in machines)
    shapes = [j for j in (trace_job(w) for w in group_jobs(read_task_attempts(trace_dir))) if j is not None]
    jobs: list[Job] = []
    cpu = 0
    while cpu < target:
        j = rng.choice(shapes)
        groups = tuple(TaskGroup(g.name, g.count, g.request, g.labels, g.different_machines) for g in j.groups)
        jobs.append(Job(f"wc{len(jobs):06d}", groups, JobClass.BATCH, j.priority, j.mode))
        cpu += sum(g.count * g.request[0] for g in groups)
    return machines, jobs


def _wait_threads(runner: ThreadRunner, backend_name: str, n_jobs: int, t0: float, deadline: float) -> bool:
    """Until the schedulers' own placed + parked counts cover every job (nothing here frees
    capacity, so no parked job is retried and counted twice)."""
    last_print = t0
    while time.perf_counter() < deadline and not runner.errors:
        m = [s.raw_metrics for s in runner.schedulers]
        if sum(x.jobs_placed + x.jobs_parked for x in m) >= n_jobs:
            return True
        if time.perf_counter() - last_print > 10:
            last_print = time.perf_counter()
            print(f"  whole cell {backend_name}: {sum(x.jobs_placed for x in m)} jobs placed, "
                  f"{sum(x.jobs_parked for x in m)} parked ({last_print - t0:.0f}s)", file=sys.stderr, flush=True)
        time.sleep(0.01)
    return False


def _wait_drained(drain: QueueDrain, backend_name: str, t0: float, deadline: float) -> bool:
    """Ray actors are out of reach: until every job's queue entry is deleted (placing the
    job's last task deletes it in the same txn; so does parking it)."""
    while time.perf_counter() < deadline:
        if drain.wait(min(10.0, deadline - time.perf_counter())):
            return True
        print(f"  whole cell {backend_name}: {len(drain.pending)} jobs still queued "
              f"({time.perf_counter() - t0:.0f}s)", file=sys.stderr, flush=True)
    return False


def _run(backend, machines: list[Machine], jobs: list[Job], schedulers: int, runner_name: str,
         timeout_s: float) -> dict:
    admin = backend.connect()
    keys = CellKeys("whole")
    add_machines(admin, keys, machines)
    settings = [BATCH.with_(seed=BATCH.seed + i, home=i, homes=schedulers, idle_poll_s=0.01)
                for i in range(schedulers)]
    # Built (snapshots of the machines taken) and idle before the clock; Ray actors loop from here.
    runner = RUNNERS[runner_name](backend, "whole", settings)
    runner.start()
    drain = None if isinstance(runner, ThreadRunner) else \
        QueueDrain(admin, keys, [j.id for j in jobs], admin.current_revision() + 1)
    try:
        t0 = time.perf_counter()
        sub = submit_jobs(admin, keys, jobs, now=time.time())
        submit_s = time.perf_counter() - t0
        if sub.rejected:
            raise BenchmarkError(f"whole cell: submission refused {len(sub.rejected)} jobs: "
                                 f"{list(sub.rejected.items())[:3]}")
        if isinstance(runner, ThreadRunner):
            done = _wait_threads(runner, backend.name, len(jobs), t0, t0 + timeout_s)
        else:
            assert drain is not None
            done = _wait_drained(drain, backend.name, t0, t0 + timeout_s)
        elapsed = time.perf_counter() - t0
    finally:
        if drain is not None:
            drain.close()
        metrics, errors = runner.stop()
    rep = check_store(admin, keys, [j.id for j in jobs])
    kvs, _ = admin.get_prefix(keys.jobs_prefix)
    states = Counter(codec.decode_job(kv.key, kv.value).status.value for kv in kvs)
    if backend.memory is None:
        admin.close()
    return {"backend": backend.name, "runner": runner_name, "schedulers": schedulers, "completed": done,
            "whole_cell_s": round(elapsed, 2), "submit_s": round(submit_s, 2),
            "target_s": TARGETS_S.get(backend.name), "jobs": len(jobs),
            "tasks": sum(j.task_count for j in jobs),
            "tasks_placed": int(sum(m["tasks_placed"] for m in metrics)),
            "jobs_placed": int(sum(m["jobs_placed"] for m in metrics)),
            "jobs_parked": int(sum(m["jobs_parked"] for m in metrics)),
            "failed_txns": int(sum(m["failed_txns"] for m in metrics)),
            "job_states": dict(sorted(states.items())), "bound_tasks": rep.bound_tasks,
            "check_store_ok": rep.ok, "violations": len(rep.violations), "violations_first": rep.violations[:5],
            "errors": errors}


def whole_cell_case(args) -> dict:
    trace_dir, max_machines, fill = shared_trace_dir(), None, 0.6
    if args.quick:
        trace_dir, max_machines = sample_trace_dir(), 40
    if not (trace_dir / "task_events").is_dir() or not (trace_dir / "machine_events").is_dir():
        return {"skipped": f"the Google 2011 trace is not at {trace_dir} (task_events/, machine_events/): "
                           "set CELLSCHED_SHARED_DATA to the folder holding google2011/"}
    t0 = time.perf_counter()
    machines, jobs = whole_cell_workload(trace_dir, fill, max_machines=max_machines)
    cpu = sum(m.capacity[0] for m in machines)
    out: dict = {"trace": str(trace_dir), "machines": len(machines), "fill_cpu": fill, "jobs": len(jobs),
                 "tasks": sum(j.task_count for j in jobs),
                 "requested_cpu_fraction": round(sum(g.count * g.request[0] for j in jobs for g in j.groups) / cpu, 4),
                 "requested_memory_fraction": round(sum(g.count * g.request[1] for j in jobs for g in j.groups)
                                                    / sum(m.capacity[1] for m in machines), 4),
                 "workload_read_s": round(time.perf_counter() - t0, 1), "schedulers": args.whole_cell_schedulers,
                 "rows": [], "skipped": []}
    print(f"  whole cell: {out['jobs']} jobs, {out['tasks']} tasks on {len(machines)} machines",
          file=sys.stderr, flush=True)
    runners = ["threads", "ray"] if args.whole_cell_runner == "both" else [args.whole_cell_runner]
    for name in args.whole_cell_backends.split(","):
        if name != "memory" and not etcd_available():
            out["skipped"].append(f"{name}: etcd is not installed")
            continue
        for runner in runners:
            # Ray actors on memory: the store hosted in its own actor, as `make demo` runs it.
            opened = hosted_memory() if runner == "ray" and name == "memory" else open_backend(name, args.clients)
            with opened as backend:
                row = _run(backend, machines, jobs, args.whole_cell_schedulers, runner, args.whole_cell_timeout)
            out["rows"].append(row)
            print(f"  whole cell {name} {runner}: {row['whole_cell_s']:.1f}s, {row['jobs_placed']} jobs placed, "
                  f"{row['jobs_parked']} parked, check ok {row['check_store_ok']}", file=sys.stderr, flush=True)
            # The headline figure per backend: the faster runner's, among the completed runs.
            tag = f"whole_cell_{name.replace('-', '')}"
            if row["completed"] and (out.get(f"{tag}_s") is None or row["whole_cell_s"] < out[f"{tag}_s"]):
                out[f"{tag}_s"], out[f"{tag}_runner"] = row["whole_cell_s"], runner
                for key in ("tasks_placed", "jobs_parked", "violations"):
                    out[f"{tag}_{key}"] = row[key]
            elif f"{tag}_s" not in out:
                out[f"{tag}_s"] = None
                for key in ("tasks_placed", "jobs_parked", "violations"):
                    out[f"{tag}_{key}"] = row[key]
    return out
