"""The cost of seeing, scheduler half: the k8s case (SchedulingBasic 5000 nodes / 10,000 pods,
loadtests/bench_schedulers) through one in-process scheduler on the memory store, with tracing

    off    no exporter configured (the default): DecisionTracer skips every span call
    noop   OpenTelemetry's no-op tracer: spans built and dropped (what 'off' must not exceed)
    file   CELLSCHED_TRACE_FILE, JSON lines through the batch span processor
    otlp   OTLP/HTTP to a receiver in this process (loadtests/otlp_receiver.py), batched

in one invocation, modes interleaved round after round; pods/s (wall) and pods per CPU-second
of this process (all its threads, the exporter's included: the figure that holds on a machine
shared with other work) are medians of the rounds.
Also the tracer's own cost per batch of 4,096 linked jobs, off vs noop, without the scheduler.
Prints a table, then one JSON line.

    python -m loadtests.bench_tracing [--quick] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from cellsched.cellstate.commit import CommitResult
from cellsched.loadtests.bench_schedulers.backends import open_backend
from cellsched.loadtests.bench_schedulers.measuring import own_cpu_s
from cellsched.loadtests.bench_schedulers.runs import RunSpec, run_once
from cellsched.loadtests.bench_schedulers.workload import BenchmarkError, load_k8s_case
from cellsched.loadtests.otlp_receiver import OtlpReceiver
from cellsched.schedulers import tracing
from cellsched.schedulers.attempts import Attempt, Outcome
from cellsched.schedulers.decision_trace import DecisionTracer
from cellsched.schedulers.settings import BATCH

MODES = ("off", "noop", "file", "otlp")
FILE_COST_TARGET = 0.10  # the issue's bound: the file exporter costs at most 10% of throughput


def _tracing(mode: str, trace_file: Path, receiver: OtlpReceiver) -> tracing.Tracing:
    if mode == "off":
        return tracing.Tracing.off()
    if mode == "noop":
        return tracing.Tracing.noop()
    if mode == "file":
        return tracing.from_env({tracing.TRACE_FILE_VAR: str(trace_file)})
    return tracing.from_env({"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": receiver.endpoint})


def run_mode(mode: str, case, settings, rnd: int, trace_file: Path, receiver: OtlpReceiver) -> dict:
    """One run. The exporters batch (up to 5 s or 512 spans), so a short run's spans may leave
    only at shutdown: that flush is timed too and added to the run's cost."""
    chosen = _tracing(mode, trace_file, receiver)
    before = tracing.install(chosen)
    lines0, spans0 = _lines(trace_file), receiver.spans_received
    try:
        with open_backend("memory") as backend:
            spec = RunSpec(f"tr-{mode}-{rnd}", case.nodes, case.node_capacity, case.pod_request, case.init_pods,
                           case.measure_pods, 1, 1, settings, "threads")
            r = run_once(backend, spec)
    finally:
        tracing.install(before)
        t0, cpu0 = time.perf_counter(), own_cpu_s()
        chosen.shutdown()  # flushes what is still queued
        flush_s, flush_cpu_s = time.perf_counter() - t0, own_cpu_s() - cpu0
    if not (r.completed and r.check.get("verified")):
        raise BenchmarkError(f"{mode}: run did not complete and verify: {r.errors} {r.check}")
    spans = (_lines(trace_file) - lines0) if mode == "file" else (receiver.spans_received - spans0
                                                                  if mode == "otlp" else 0)
    wall, cpu = r.measured_s + flush_s, r.bench_cpu_s + flush_cpu_s
    return {"mode": mode, "round": rnd, "pods_per_s": r.tasks / wall, "pods_per_cpu_s": r.tasks / cpu,
            "measured_s": round(r.measured_s, 4), "flush_s": round(flush_s, 4), "cpu_s": round(cpu, 4),
            "spans": spans}


def _lines(path: Path) -> int:
    if not path.exists():
        return 0
    with open(path, "rb") as f:
        return sum(1 for _ in f)


class _Columns:
    xp = np

    def __len__(self) -> int:
        return 5000


def tracer_cost_us(chosen: tracing.Tracing, jobs: int, repeats: int) -> float:
    """Microseconds per batch of the tracer's calls alone (start, sync, begin with `jobs` links,
    scoring, settled, end), as core.Scheduler makes them."""
    sched = SimpleNamespace(name="bench", settings=BATCH, cache=SimpleNamespace(columns=_Columns()), engine=None)
    tp = "00-" + "ab" * 16 + "-" + "cd" * 8 + "-01"
    held = {f"j{i}": SimpleNamespace(view=SimpleNamespace(record=SimpleNamespace(job=SimpleNamespace(traceparent=tp))))
            for i in range(jobs)}
    t = DecisionTracer(sched, chosen)
    attempt, result, out = Attempt(0.0, 0.0, 1), CommitResult(), Outcome()
    t0 = time.perf_counter()
    for _ in range(repeats):
        t.start()
        with t.sync():
            pass
        t.begin(held)  # type: ignore[arg-type]
        with t.scoring(attempt):
            pass
        t.settled(attempt, result, out)
        t.end()
    return (time.perf_counter() - t0) / repeats * 1e6


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="sizes x0.02, for the smoke test")
    ap.add_argument("--rounds", type=int, default=3, help="rounds of all modes, interleaved")
    ap.add_argument("--modes", default=",".join(MODES), help=f"comma-separated, of {','.join(MODES)}")
    ap.add_argument("--claim-batch", type=int, default=4096)
    ap.add_argument("--txns-in-flight", type=int, default=4)
    args = ap.parse_args(argv)
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    unknown = sorted(set(modes) - set(MODES))
    if unknown or "off" not in modes or args.rounds < 1:
        ap.error(f"--modes must include off and name only {MODES} (unknown: {unknown}); --rounds >= 1")
    case = load_k8s_case()
    if args.quick:
        case = case.scaled(0.02)
    settings = BATCH.with_(claim_batch=args.claim_batch, txns_in_flight=args.txns_in_flight, idle_poll_s=0.01)
    rows: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="bench-tracing-") as tmp, OtlpReceiver() as receiver:
        receiver.count_only = True
        trace_file = Path(tmp) / "spans.jsonl"
        for rnd in range(args.rounds):
            for mode in modes:
                rows.append(run_mode(mode, case, settings, rnd, trace_file, receiver))
        jobs, repeats = args.claim_batch, 20 if args.quick else 200
        micro = {"off": tracer_cost_us(tracing.Tracing.off(), jobs, repeats),
                 "noop": tracer_cost_us(tracing.Tracing.noop(), jobs, repeats)}
    pods = {m: statistics.median(r["pods_per_s"] for r in rows if r["mode"] == m) for m in modes}
    per_cpu = {m: statistics.median(r["pods_per_cpu_s"] for r in rows if r["mode"] == m) for m in modes}
    ratio = {m: pods[m] / pods["off"] for m in modes}
    cpu_ratio = {m: per_cpu[m] / per_cpu["off"] for m in modes}
    print(f"{case.name}: {case.nodes} nodes, {case.init_pods} + {case.measure_pods} pods, memory store, "
          f"1 scheduler, claim_batch {args.claim_batch}, {args.rounds} rounds; each run's time includes "
          "the exporter's final flush")
    print(f"{'mode':6} {'pods/s':>8} {'vs off':>7} {'pods/CPU-s':>11} {'vs off':>7} {'spans/run':>10}   pods/s of each round")
    for m in modes:
        each = " ".join(f"{r['pods_per_s']:.0f}" for r in rows if r["mode"] == m)
        spans = statistics.median(r["spans"] for r in rows if r["mode"] == m)
        print(f"{m:6} {pods[m]:8.0f} {ratio[m]:7.3f} {per_cpu[m]:11.0f} {cpu_ratio[m]:7.3f} {spans:10.0f}   {each}")
    print(f"tracer alone, per batch of {jobs} linked jobs: off {micro['off']:.2f} us, noop {micro['noop']:.1f} us")
    result = {"case": case.name, "quick": args.quick, "rounds": args.rounds, "claim_batch": args.claim_batch,
              "pods_per_s": {m: round(v, 1) for m, v in pods.items()},
              "ratio_to_off": {m: round(v, 4) for m, v in ratio.items()},
              "pods_per_cpu_s": {m: round(v, 1) for m, v in per_cpu.items()},
              "cpu_ratio_to_off": {m: round(v, 4) for m, v in cpu_ratio.items()},
              "tracer_us_per_batch": {m: round(v, 2) for m, v in micro.items()},
              "file_cost_fraction": round(1 - ratio["file"], 4) if "file" in ratio else None,
              "file_cpu_cost_fraction": round(1 - cpu_ratio["file"], 4) if "file" in cpu_ratio else None,
              "file_cost_target_max": FILE_COST_TARGET, "runs": rows}
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
