"""Omega §5-style sweeps in simulated time: schedulers x think time x conflict mode x
transaction mode, with the same decision code, on the embedded store.

    python -m loadtests.omega_sweep [--quick] [--json]

Every run is a deterministic discrete-event simulation (SimClock): the think-time model
sets how long a decision takes (t_job + t_task x tasks), so busyness and conflicts depend
on the modelled cost, not on this machine's speed. A batch workload of Poisson arrivals
loads a cell of identical machines; gang runs make every job all-or-nothing.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from typing import Any

from cellsched.cellstate.model import ConflictMode, Machine, TransactionMode
from cellsched.schedulers.settings import BATCH, ThinkTime
from cellsched.schedulers.simulation import build_simulation, synthetic_workload


def run_one(n_sched: int, think_job_s: float, cmode: ConflictMode, tmode: TransactionMode, machines: int,
            jobs: int, interarrival_s: float, seed: int) -> dict:
    fleet = [Machine(f"m{i:04d}", (4000, 16384, 0)) for i in range(machines)]
    arrivals = synthetic_workload(seed, jobs, mean_interarrival_s=interarrival_s, max_tasks=8,
                                  gang_fraction=1.0 if tmode is TransactionMode.ALL_OR_NOTHING else 0.0)
    settings = BATCH.with_(think_time=ThinkTime(think_job_s, 0.005), conflict_mode=cmode, claim_batch=1,
                           parked_retry_s=5.0)
    sim = build_simulation(fleet, [(f"s{k}", settings) for k in range(n_sched)], arrivals, seed=seed)
    result = sim.run(until=10_000.0)
    ms = list(result.metrics.values())
    waits = sorted(w for m in ms for w in [m["wait_placed_p50_s"]] if w is not None)
    return {
        "schedulers": n_sched, "think_job_s": think_job_s, "conflict_mode": cmode.value,
        "txn_mode": tmode.value, "jobs": jobs, "unplaced": len(result.unplaced),
        "busyness": sum(m["busyness"] for m in ms) / len(ms),
        "conflict_fraction": sum(m["conflict_fraction"] for m in ms) / len(ms),
        "failed_txn_fraction": sum(m["failed_txn_fraction"] for m in ms) / len(ms),
        "wait_p50_s": waits[len(waits) // 2] if waits else None,
        "wait_p99_s": max((m["wait_placed_p99_s"] or 0.0) for m in ms),
        "sim_end_s": result.end_time,
    }


def main(argv: list[str] | None = None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="a small sweep that runs in seconds")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    grid: dict[str, Any]
    if args.quick:
        grid = dict(n=[1, 2], think=[0.1], machines=40, jobs=60, gap=0.05)
    else:
        grid = dict(n=[1, 2, 4], think=[0.01, 0.1, 1.0], machines=200, jobs=400, gap=0.02)
    rows = []
    t0 = time.perf_counter()
    for n, think, cmode, tmode in itertools.product(grid["n"], grid["think"], ConflictMode, TransactionMode):
        rows.append(run_one(n, think, cmode, tmode, grid["machines"], grid["jobs"], grid["gap"], args.seed))
    print(f"{grid['jobs']} batch jobs (1-8 tasks), Poisson arrivals every {grid['gap']} s on average, "
          f"{grid['machines']} machines of 4 CPU / 16 GiB; t_task = 5 ms; simulated time")
    print(f"{'sched':>5} {'t_job s':>7} {'conflict':>12} {'txn':>14} {'busy':>6} {'confl/commit':>12} "
          f"{'failed txn':>10} {'wait p50':>8} {'wait p99':>8} {'unplaced':>8}")
    for r in rows:
        print(f"{r['schedulers']:5d} {r['think_job_s']:7.2f} {r['conflict_mode']:>12} {r['txn_mode']:>14} "
              f"{r['busyness']:6.1%} {r['conflict_fraction']:12.3f} {r['failed_txn_fraction']:10.3f} "
              f"{r['wait_p50_s'] or 0:8.2f} {r['wait_p99_s']:8.2f} {r['unplaced']:8d}")
    print(f"({len(rows)} simulations in {time.perf_counter() - t0:.1f} s wall)")
    if args.json:
        print(json.dumps({"rows": rows}))
    return rows


if __name__ == "__main__":
    main(sys.argv[1:])
