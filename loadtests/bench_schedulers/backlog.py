"""The backlog case (issue 9, Must show 3): does a deep queue slow the claim path?

One scheduler (a thread of this process, the BATCH preset, claim_batch 128) places the first
`placements` single-task jobs of a queue holding `placements` jobs, and of one holding 20x
as many, on the same 3-member etcd in the same run. Both cells are written (machines and
queued jobs) before either is measured, so both measurements see the same etcd database.
The clock runs from the scheduler's start (its snapshot is taken before) until its own count
of committed placements (each counted after the store acknowledged the commit) reaches
`placements` (the deep queue's last batch may take it a little past: the rate divides the
placements counted by the time); submission is not measured. Each depth is measured
`repeats` times, interleaved, each on a fresh cell; backlog_ratio = best deep rate / best
shallow rate.
"""

from __future__ import annotations

import sys
import time

from cellsched.cellstate.invariants import check_store
from cellsched.cellstate.keys import CellKeys
from cellsched.cellstate.machines import add_machines
from cellsched.schedulers.settings import BATCH

from .backends import etcd_available, open_backend
from .runners import ThreadRunner
from .workload import NODE, POD, BenchmarkError, make_jobs, make_machines, submit_all

BACKLOG_CLAIM_BATCH = 128
SUBMIT_CHUNK = 2_000  # jobs per submit_jobs call (it packs them many per txn)


def _prepare(admin, cell: str, machines: int, queued: int) -> float:
    keys = CellKeys(cell)
    add_machines(admin, keys, make_machines(machines, NODE))
    jobs = make_jobs("b", queued, 1, POD)
    t0 = time.perf_counter()
    for k in range(0, queued, SUBMIT_CHUNK):
        submit_all(admin, keys, jobs[k:k + SUBMIT_CHUNK])
    return time.perf_counter() - t0


def _measure(backend, admin, cell: str, queued: int, placements: int, timeout_s: float) -> dict:
    settings = BATCH.with_(claim_batch=BACKLOG_CLAIM_BATCH, idle_poll_s=0.01)
    runner = ThreadRunner(backend, cell, [settings])  # snapshot taken here, before the clock
    try:
        t0 = time.perf_counter()
        runner.start()
        done = runner.wait_placed(placements, timeout_s)
        elapsed = time.perf_counter() - t0
        placed = sum(s.raw_metrics.tasks_placed for s in runner.schedulers)
    finally:
        metrics, errors = runner.stop()
    if not done:
        raise BenchmarkError(f"backlog {cell}: {placed} of {placements} placed in {timeout_s:.0f}s; errors {errors}")
    written, txns, _ = runner.store_counts() or ({}, {}, 0)
    rep = check_store(admin, CellKeys(cell))
    return {"queued": queued, "placements": placed, "measured_s": round(elapsed, 3),
            "placements_per_s": round(placed / elapsed, 1), "commit_txns": int(metrics[0]["txns"]),
            "failed_txns": int(metrics[0]["failed_txns"]), "store_txns": txns,
            "check_store_ok": rep.ok, "violations": rep.violations[:5], "errors": errors}


def backlog_case(args) -> dict:
    placements, deep_factor, machines, repeats = 1_000, 20, 1_000, 3
    backend_name = "etcd-3"
    if args.quick:
        placements, machines, repeats, backend_name = 256, 50, 1, "etcd-1"
    if not etcd_available():
        return {"skipped": "etcd is not installed: the backlog case runs on etcd only"}
    depths = (placements, deep_factor * placements)
    out: dict = {"backend": backend_name, "schedulers": 1, "runner": "threads", "claim_batch": BACKLOG_CLAIM_BATCH,
                 "machines": machines, "node_capacity": NODE, "pod_request": POD, "first_placements": placements,
                 "repeats": repeats, "note": "one scheduler (enough: the claim path is per scheduler); "
                 "submission not measured; best of the repeats, shallow and deep interleaved", "rows": []}
    with open_backend(backend_name, args.clients) as backend:
        admin = backend.connect()
        try:
            for rep in range(repeats):
                for q in depths:
                    s = _prepare(admin, f"backlog-{q}-{rep}", machines, q)
                    print(f"  backlog: {q} jobs queued in {s:.1f}s", file=sys.stderr, flush=True)
            for rep in range(repeats):
                for q in depths:
                    r = _measure(backend, admin, f"backlog-{q}-{rep}", q, placements, 300.0)
                    out["rows"].append(r | {"repeat": rep + 1})
                    print(f"  backlog {q:6} queued: {r['placements_per_s']:.0f} placements/s over the first "
                          f"{r['placements']}", file=sys.stderr, flush=True)
        finally:
            admin.close()
    best = {q: max(r["placements_per_s"] for r in out["rows"] if r["queued"] == q) for q in depths}
    out["backlog_1k_placements_per_s"] = best[depths[0]]
    out["backlog_20k_placements_per_s"] = best[depths[1]]
    out["backlog_ratio"] = round(best[depths[1]] / best[depths[0]], 3)
    return out
