"""Packing quality of each scoring policy on the real Google 2011 cell.

    python -m loadtests.packing_quality [--json] [--machines N] [--trace-dir DIR]

The cell is the machine set live at the first task event. It is prefilled to 60% of
its CPU with task shapes drawn from the trace (seeded, Omega's randomised first fit,
the same prefill for every policy, as Omega's simulator does). Then every policy places
the trace's task attempts in trace order, one job wave per ``assign_job`` call, with no
task ever finishing, until the work offered equals the CPU left free by the prefill.

Columns: tasks placed before the first unplaceable one; tasks placed in all; final CPU
and memory utilisation; fragmented machines: machines whose free resources cannot fit
the median task shape while more than 10% of their CPU is free. Omega's randomised first
fit is the baseline row.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np

from cellsched.gpu import PRESETS, RANDOM_FIRST_FIT, Assignment, GroupSpec, MachineColumns, assign_job
from cellsched.loadtests.traces import google2011 as trace

PREFILL = 0.60
FRAGMENT_FREE_CPU = 0.10
POLICIES = [RANDOM_FIRST_FIT, PRESETS["spread"], PRESETS["pack"], PRESETS["tetris"], PRESETS["gpu_pack"]]


def load(trace_dir: Path, machines: int | None, seed: int):
    start = trace.first_task_event_time(trace_dir)
    live = trace.live_machines_at(trace_dir, start)
    if machines and machines < len(live):  # a seeded subset, for quick runs and tests
        pick = np.sort(np.random.default_rng(seed).choice(len(live), size=machines, replace=False))
        live = [live[i] for i in pick]
    attempts = [a for a in trace.read_task_attempts(trace_dir) if a.cpu > 0 or a.memory > 0]
    return live, attempts


def empty_cell(live) -> MachineColumns:
    cap = np.array([(m.cpu, m.memory, 0) for m in live], dtype=np.int64)
    return MachineColumns([m.id for m in live], cap, xp=np)


def place(cols: MachineColumns, result: Assignment) -> None:
    """Write an assignment's placements into the cell. Here the columns are the whole cell
    (no store, no scheduler, no cache to keep in step), so the benchmark writes them itself."""
    if result.used:
        cols.update_rows(list(result.used), list(result.used.values()))


def prefill(cols: MachineColumns, shapes: np.ndarray, seed: int) -> None:
    """Random first fit of shapes drawn from the trace until used CPU >= 60%."""
    rng = np.random.default_rng(seed)
    target = PREFILL * cols.host_capacity[:, 0].sum()
    mean_cpu = max(1.0, float(shapes[:, 0].mean()))
    attempt = 0
    while cols.host_used[:, 0].sum() < target:
        need = target - cols.host_used[:, 0].sum()
        batch = shapes[rng.integers(len(shapes), size=max(1, int(need / mean_cpu / 2)))]
        groups = [GroupSpec((int(c), int(m), 0), count=int(n)) for (c, m), n in Counter(map(tuple, batch)).items()]
        result = assign_job(cols, groups, RANDOM_FIRST_FIT, seed=("prefill", attempt))
        place(cols, result)
        attempt += 1
        if result.placed == 0:
            break


def waves(attempts, offered_cpu: int):
    """Job waves in trace order (cycled) until their CPU reaches ``offered_cpu``."""
    jobs = trace.group_jobs(attempts)
    offered, i = 0, 0
    while offered < offered_cpu:
        job = jobs[i % len(jobs)]
        shapes = Counter((a.cpu, a.memory, a.different_machines) for a in job.attempts)
        groups = [GroupSpec((c, m, 0), count=n, different_machines=d) for (c, m, d), n in shapes.items()]
        offered += sum(c * n for (c, _, _), n in shapes.items())
        yield f"{job.job_id}.{job.wave}.{i // len(jobs)}", groups
        i += 1


def run_policy(cols: MachineColumns, attempts, policy, median: tuple[int, int]) -> dict:
    free_cpu = int(cols.host_free[:, 0].sum())
    placed, before_failure, failed = 0, None, 0
    start = time.perf_counter()
    for job_id, groups in waves(attempts, free_cpu):
        result = assign_job(cols, groups, policy, seed=(job_id, 0))
        if before_failure is None and result.unplaceable:
            first = result.unplaceable[0]
            before_failure = placed + sum(g.count for g in groups[: first.group]) + first.tasks[0]
        placed += result.placed
        failed += sum(len(u.tasks) for u in result.unplaceable)
        place(cols, result)
    cap, free = cols.host_capacity, cols.host_free
    cpu_free_frac = free[:, 0] / np.maximum(cap[:, 0], 1)
    cannot_fit = (free[:, 0] < median[0]) | (free[:, 1] < median[1])
    return {
        "policy": policy.name,
        "placed_before_first_failure": placed if before_failure is None else int(before_failure),
        "placed": placed,
        "failed": failed,
        "cpu_utilisation": float(cols.host_used[:, 0].sum() / cap[:, 0].sum()),
        "memory_utilisation": float(cols.host_used[:, 1].sum() / cap[:, 1].sum()),
        "fragmented_machines": int((cannot_fit & (cpu_free_frac > FRAGMENT_FREE_CPU)).sum()),
        "seconds": time.perf_counter() - start,
    }


def run(trace_dir: Path, machines: int | None = None, seed: int = 2011) -> dict:
    live, attempts = load(trace_dir, machines, seed)
    shapes = np.array([(a.cpu, a.memory) for a in attempts], dtype=np.int64)
    median = (int(np.median(shapes[:, 0])), int(np.median(shapes[:, 1])))
    base = empty_cell(live)
    prefill(base, shapes, seed)
    rows = []
    for policy in POLICIES:
        cols = MachineColumns(base.machine_ids, base.host_capacity, base.host_used, base.labels, xp=np)
        rows.append(run_policy(cols, attempts, policy, median))
    return {
        "trace_dir": str(trace_dir),
        "machines": len(live),
        "prefill_cpu_utilisation": float(base.host_used[:, 0].sum() / base.host_capacity[:, 0].sum()),
        "median_task": {"cpu": median[0], "memory": median[1]},
        "rows": rows,
    }


def print_table(summary: dict) -> None:
    print(
        f"Google 2011: {summary['machines']:,} machines, prefilled to "
        f"{summary['prefill_cpu_utilisation']:.1%} CPU; median task {summary['median_task']}"
    )
    print(f"{'policy':<18} {'before 1st fail':>15} {'placed':>8} {'failed':>7} {'cpu util':>9} {'mem util':>9} {'fragmented':>10} {'time':>7}")
    for r in summary["rows"]:
        print(
            f"{r['policy']:<18} {r['placed_before_first_failure']:>15,} {r['placed']:>8,} {r['failed']:>7,} "
            f"{r['cpu_utilisation']:>9.1%} {r['memory_utilisation']:>9.1%} {r['fragmented_machines']:>10,} {r['seconds']:>6.1f}s"
        )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trace-dir", type=Path, default=None, help="default: ../shared/data/google2011")
    parser.add_argument("--machines", type=int, default=None, help="a seeded subset of the live machines")
    parser.add_argument("--seed", type=int, default=2011)
    parser.add_argument("--json", action="store_true", help="print a JSON object as the last line")
    args = parser.parse_args(argv)
    trace_dir = args.trace_dir or trace.default_trace_dir()
    if not (trace_dir / "task_events").is_dir():
        sys.exit(f"no Google 2011 trace at {trace_dir}")
    summary = run(trace_dir, args.machines, args.seed)
    print_table(summary)
    if args.json:
        print(json.dumps(summary))


if __name__ == "__main__":
    main()
