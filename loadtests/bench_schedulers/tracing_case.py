"""The k8s case with tracing off and with the file exporter, in one invocation (issue 11's cost
of seeing, scheduler half; docs/architecture.md, "Observability").

`--case k8s --tracing off,file` runs, after the plain k8s case, the same workload (nodes, pods,
the settings of cases.k8s_case, the threads runner, --k8s-backend) once per mode and round,
modes interleaved, with the process's tracing installed for the run (tracing.install: the
scheduler threads' DecisionTracers take it when they are built):

    off   no exporter: the DecisionTracer skips every span call
    file  CELLSCHED_TRACE_FILE, JSON lines through the batch span processor

In both modes every job carries a traceparent, as jobs submitted through a traced API do, so
the traced batch spans link every job they decide (a link per pod, the scheduler's real cost).
The batch processor may hold a short run's spans until shutdown: that final flush is timed and
added to the run's wall and CPU time. Reports k8s_tracing_off_pods_per_s,
k8s_tracing_file_pods_per_s and k8s_tracing_file_cost (the fraction of pods/s lost), medians
over rounds, and the same by pods per CPU-second of this process (every thread, the exporter's
included), the figure that holds on a machine shared with other work.
"""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

from cellsched.loadtests.interleave import round_order
from cellsched.schedulers import tracing
from cellsched.schedulers.settings import BATCH

from .backends import etcd_available, open_backend
from .measuring import own_cpu_s
from .runs import RunSpec, run_once
from .workload import BenchmarkError, load_k8s_case

MODES = ("off", "file")


def parse_modes(text: str) -> list[str]:
    modes = [m.strip() for m in text.split(",") if m.strip()]
    if not modes or "off" not in modes or any(m not in MODES for m in modes):
        raise BenchmarkError(f"--tracing: expected a comma list of {', '.join(MODES)} including off; got {text!r}")
    return modes


def _run(mode: str, backend_name: str, spec: RunSpec, trace_file: Path, clients: str) -> dict:
    chosen = tracing.Tracing.off() if mode == "off" else tracing.from_env({tracing.TRACE_FILE_VAR: str(trace_file)})
    before = tracing.install(chosen)
    try:
        with open_backend(backend_name, clients) as backend:
            r = run_once(backend, spec)
    finally:
        tracing.install(before)
        t0, cpu0 = time.perf_counter(), own_cpu_s()
        chosen.shutdown()  # what the batch processor still holds
        flush_s, flush_cpu_s = time.perf_counter() - t0, own_cpu_s() - cpu0
    if not (r.completed and r.check.get("verified") and r.check.get("check_store_ok")):
        raise BenchmarkError(f"k8s tracing {mode}: run did not complete and verify: {r.errors} {r.check}")
    wall, cpu = r.measured_s + flush_s, r.bench_cpu_s + flush_cpu_s
    return {"mode": mode, "pods_per_s": round(r.tasks / wall, 1), "pods_per_cpu_s": round(r.tasks / cpu, 1),
            "measured_s": round(r.measured_s, 3), "flush_s": round(flush_s, 4), "bench_process_cpu_s": round(cpu, 3),
            "etcd_cpu_s": round(r.etcd_cpu_s, 2), "commit_txns": int(r.total("txns")), "verified": True}


def _spans_and_links(path: Path) -> tuple[int, int]:
    """Spans in a trace file, and links over all of them (every pod's, when each batch linked its jobs)."""
    spans = links = 0
    with open(path, encoding="utf-8") as f:
        for line in f:
            spans += 1
            links += len(json.loads(line).get("links", ()))
    return spans, links


def tracing_case(args) -> dict:
    modes = parse_modes(args.tracing)
    case = load_k8s_case()
    if args.quick:
        case = case.scaled(0.02)
    backend_name = args.k8s_backend if etcd_available() else "memory"
    # cases.k8s_case's settings
    settings = BATCH.with_(claim_batch=args.claim_batch, txns_in_flight=args.txns_in_flight,
                           policy_name=args.policy, idle_poll_s=0.01, batch_alike=not args.no_batch_alike)
    rows: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="bench-k8s-tracing-") as tmp:
        for rnd in range(args.tracing_rounds):
            for mode in round_order(modes, rnd):  # forward, then back: the machine drifts
                trace_file = Path(tmp) / f"spans-{rnd}.jsonl"
                spec = RunSpec(f"k8str-{mode}-{rnd}", case.nodes, case.node_capacity, case.pod_request,
                               case.init_pods, case.measure_pods, 1, args.schedulers, settings, "threads",
                               homes=args.homes != "off", traced_jobs=True)
                row = {"round": rnd, **_run(mode, backend_name, spec, trace_file, args.clients)}
                if mode == "file":
                    row["spans"], row["links"] = _spans_and_links(trace_file)
                rows.append(row)
                print(f"  k8s tracing {mode} round {rnd}: {row['pods_per_s']:.0f} pods/s", file=sys.stderr, flush=True)
    out: dict = {"backend": backend_name, "modes": modes, "rounds": args.tracing_rounds, "runs": rows,
                 "pods": case.measure_pods, "init_pods": case.init_pods, "nodes": case.nodes}
    for mode in modes:
        out[f"k8s_tracing_{mode}_pods_per_s"] = statistics.median(r["pods_per_s"] for r in rows if r["mode"] == mode)
        out[f"k8s_tracing_{mode}_pods_per_cpu_s"] = statistics.median(
            r["pods_per_cpu_s"] for r in rows if r["mode"] == mode)
    off, off_cpu = out["k8s_tracing_off_pods_per_s"], out["k8s_tracing_off_pods_per_cpu_s"]
    for mode in modes:
        if mode != "off":
            out[f"k8s_tracing_{mode}_cost"] = round(1 - out[f"k8s_tracing_{mode}_pods_per_s"] / off, 4)
            out[f"k8s_tracing_{mode}_cpu_cost"] = round(1 - out[f"k8s_tracing_{mode}_pods_per_cpu_s"] / off_cpu, 4)
    return out


def print_tracing(t: dict | None) -> None:
    if not t:
        return
    print(f"\n== k8s with tracing ({'/'.join(t['modes'])}), {t['nodes']} nodes, {t['pods']} measured pods, "
          f"{t['backend']}, jobs with traceparents, {t['rounds']} round(s) interleaved; each run's time "
          "includes the exporter's final flush ==")
    print(f"   {'mode':5} {'pods/s':>8} {'pods/CPU-s':>11} {'cost':>7} {'CPU cost':>9}   runs (pods/s)")
    for mode in t["modes"]:
        cost, cpu_cost = t.get(f"k8s_tracing_{mode}_cost"), t.get(f"k8s_tracing_{mode}_cpu_cost")
        each = " ".join(f"{r['pods_per_s']:.0f}" for r in t["runs"] if r["mode"] == mode)
        print(f"   {mode:5} {t[f'k8s_tracing_{mode}_pods_per_s']:8.0f} {t[f'k8s_tracing_{mode}_pods_per_cpu_s']:11.0f} "
              f"{'-' if cost is None else format(cost, '.1%'):>7} {'-' if cpu_cost is None else format(cpu_cost, '.1%'):>9}"
              f"   {each}")
