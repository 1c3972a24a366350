"""Load-test the REST API with Locust, and measure the bare ceiling in the same run.

    python -m loadtests.bench_api [--json] [--backends memory-ray,etcd-3] [--users 64] [--seconds 20]
                                  [--bulk 500] [--bulk-seconds 10] [--machines 500] [--quick]
    python -m loadtests.bench_api --tracing off,file,otlp [--tracing-rounds 2] [--json]

For each backend it starts a real `cellsched api` in a subprocess on a free loopback port
(uvicorn with uvloop and httptools), with the schedulers running:
- `memory-ray` (the default): the embedded store hosted in its Ray actor, as `make demo`
  runs it. A local Ray instance started here holds the store actor (ray_actors.host_store),
  one scheduler actor per class and the housekeeper; the API is `cellsched api
  --ray-address ...` on that instance.
- `memory-inprocess`: `cellsched api`'s first-try mode, a MemoryStore in the API's own
  process with its scheduler loops on threads there (not how the demo runs it).
- `etcd-3`: a 3-member etcd it starts itself (`cellsched api --etcd ... --schedulers on`).
It registers
machines through the API, then runs Locust headless (`FastHttpUser`, `--users` users, as
a subprocess, loadtests/locust_api.py) for single submissions (about 1 KB, two task
groups) and then bulk submissions of `--bulk` jobs. The bare ceiling is a FastAPI POST
that returns a fixed 201 (loadtests/bare_api.py) under the same uvicorn settings and the
same Locust load. The token's rate limit is set far above the offered load; a 429 would be
counted apart from failures. Every process started here is stopped by its PID.

The last line with --json holds submissions_per_s, p50_ms, p99_ms, failures, rate_limited,
bare_ceiling_per_s, ratio_to_bare, bulk_jobs_per_s and backend for the first backend, and
every backend's figures under "backends" (with the API process's own CPU per submission and per bulk
job, api_cpu_us_per_job, from /proc: the rates swing with other work on shared cores; on memory-ray
also the store actor's and the batch scheduler actor's, store_cpu_us_per_job and
batch_scheduler_cpu_us_per_job, the idle actors' together (the service and gpu schedulers, whose
queues stay empty, and the housekeeper), idle_actors_cpu_us_per_job, and Locust's own,
locust_cpu_us_per_job).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from cellsched.loadtests.bench_schedulers.workload import BenchmarkError
from cellsched.loadtests.etcd_process import etcd_binary, free_ports, start_etcd_cluster
from cellsched.loadtests.interleave import round_order
from cellsched.loadtests.otlp_receiver import OtlpReceiver
from cellsched.loadtests.proc_cpu import processes_cpu_s, thread_cpu_s

TOKEN = "bench-operator-secret-0000000000001"
LOCUSTFILE = Path(__file__).with_name("locust_api.py")
LABELS = {**{f"team-{k}": "x" * 40 + str(k) for k in range(3)}, **{f"zone-{k}": "x" * 40 + str(k) for k in range(3)}}


def _wait_ready(url: str, proc: subprocess.Popen, log: Path, timeout_s: float = 90.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise BenchmarkError(f"server exited with {proc.returncode}:\n{log.read_text()[-2000:]}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise BenchmarkError(f"server at {url} not ready after {timeout_s} s:\n{log.read_text()[-2000:]}")


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=20)


def _start_api(tmp: Path, etcd: str | None, env: dict[str, str] | None = None,
               ray_address: str | None = None) -> tuple[subprocess.Popen, str]:
    port = free_ports(1)[0]
    tokens = tmp / "tokens.txt"
    tokens.write_text(f"operator:bench:{TOKEN}\n")
    log = tmp / f"api-{port}.log"
    cmd = [sys.executable, "-m", "cellsched.cli", "api", "--port", str(port), "--tokens", str(tokens),
           "--cell", "bench", "--rate", "1000000", "--burst", "1000000"]
    if etcd:
        cmd += ["--etcd", etcd, "--schedulers", "on"]
    if ray_address:
        cmd += ["--ray-address", ray_address]
    with log.open("w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})})
    base = f"http://127.0.0.1:{port}"
    _wait_ready(base + "/readyz", proc, log)
    return proc, base


def _start_bare(tmp: Path) -> tuple[subprocess.Popen, str]:
    port = free_ports(1)[0]
    log = tmp / f"bare-{port}.log"
    cmd = [sys.executable, "-m", "uvicorn", "cellsched.loadtests.bare_api:app", "--port", str(port),
           "--loop", "uvloop", "--http", "httptools", "--log-level", "warning", "--no-access-log"]
    with log.open("w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:  # the bare app has no /readyz: any answer means it listens
        try:
            httpx.post(base + "/submit", content=b"{}", timeout=2)
            return proc, base
        except httpx.HTTPError:
            if proc.poll() is not None or time.monotonic() > deadline:
                _stop(proc)
                raise BenchmarkError(f"bare app did not start:\n{log.read_text()[-2000:]}") from None
            time.sleep(0.2)


def _add_machines(base: str, n: int) -> None:
    headers = {"Authorization": f"Bearer {TOKEN}"}
    for start in range(0, n, 500):
        body = {"machines": [{"id": f"m{i:05d}", "capacity": {"cpu": "64", "memory": "256Gi"}, "labels": LABELS}
                             for i in range(start, min(n, start + 500))]}
        r = httpx.post(base + "/v1/machines", json=body, headers=headers, timeout=60)
        if r.status_code != 201:
            raise BenchmarkError(f"adding machines: HTTP {r.status_code}: {r.text[:300]}")


def run_locust(host: str, mode: str, users: int, seconds: float, tmp: Path, bulk: int = 500) -> dict:
    """One headless Locust run; its figures from Locust's CSV (it prints to stderr)."""
    prefix = tmp / f"locust-{mode}-{int(time.time() * 1000)}"
    env = {**os.environ, "BENCH_API_MODE": mode, "BENCH_API_TOKEN": TOKEN, "BENCH_API_BULK": str(bulk)}
    cmd = [sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless", "-u", str(users),
           "-r", str(users), "-t", f"{max(1, int(seconds))}s", "--host", host, "--csv", str(prefix),
           "--only-summary", "--exit-code-on-error", "0", "--stop-timeout", "10"]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=seconds + 120)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    locust_cpu_s = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    stats = Path(f"{prefix}_stats.csv")
    if not stats.exists():
        raise BenchmarkError(f"locust wrote no stats (exit {done.returncode}):\n{done.stderr[-2000:]}")
    rows = {r["Name"]: r for r in csv.DictReader(stats.open())}
    name = {"single": "single", "bulk": "bulk", "bare": "bare"}[mode]
    row = rows.get(name)
    if row is None:
        raise BenchmarkError(f"locust stats have no {name!r} row: {sorted(rows)}\n{done.stderr[-2000:]}")
    limited = rows.get(f"{name} (429)")
    return {"requests": int(row["Request Count"]), "failures": int(row["Failure Count"]),
            "per_s": float(row["Requests/s"]), "p50_ms": float(row["50%"]), "p99_ms": float(row["99%"]),
            "rate_limited": int(limited["Request Count"]) if limited else 0, "locust_cpu_s": round(locust_cpu_s, 3)}


BACKENDS = ("memory-ray", "memory-inprocess", "etcd-3")


class RayCell:
    """The embedded store in its Ray actor with one scheduler actor per class and the
    housekeeper, on a local Ray instance started in this process (as `make demo` runs them)."""

    def __init__(self, cell: str):
        from cellsched.schedulers import ray_actors
        from cellsched.schedulers.settings import PRESETS

        # As the demo sets them (cellsched/demo.py); the API subprocess inherits them.
        os.environ.setdefault("RAY_AUTH_MODE", "disabled")
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        os.environ.setdefault("RAY_TMPDIR", tempfile.mkdtemp(prefix="cellsched-ray-"))
        self.ray = ray_actors
        ray_actors.init_ray(None)
        try:
            self.host = ray_actors.host_store()  # held: an actor whose handles all go is killed
            spec = ray_actors.StoreSpec()
            self.actors = [ray_actors.start_scheduler(f"{cell}-{c.value}-0", spec, cell,
                                                      settings.with_(idle_poll_s=0.05))
                           for c, settings in PRESETS.items()]
            self.keeper = ray_actors.start_housekeeper(spec, cell)
            ray_actors.get([a.status.remote() for a in self.actors], timeout=120)
        except BaseException:
            ray_actors.shutdown()
            raise
        self.address = ray_actors.address()
        # The store actor's and the batch scheduler's processes, for their CPU per job (/proc).
        statuses = ray_actors.get([a.status.remote() for a in self.actors], timeout=60)
        self.pids: dict[str, int | list[int]] = {
            "store": ray_actors.get(self.host.pid.remote(), timeout=60), "batch_scheduler": statuses[0]["pid"],
            # the service and gpu schedulers, whose queues stay empty here, and the housekeeper
            "idle_actors": [st["pid"] for st in statuses[1:]] + [ray_actors.get(self.keeper.status.remote(),
                                                                                 timeout=60)["pid"]]}

    def statuses(self) -> list[dict]:
        return [{"name": st["name"], "alive": st["alive"], "tasks_placed": st["metrics"]["tasks_placed"]}
                for st in self.ray.get([a.status.remote() for a in self.actors], timeout=60)]

    def stop(self) -> None:
        try:
            self.ray.get([a.stop.remote() for a in self.actors], timeout=60)
        finally:
            self.ray.shutdown()  # ends the local instance this process started


def bench_backend(backend: str, args, tmp: Path) -> dict:
    cluster = start_etcd_cluster(3) if backend == "etcd-3" else None
    ray_cell = RayCell("bench") if backend == "memory-ray" else None
    proc = None
    actors: list[dict] = []
    try:
        proc, base = _start_api(tmp, cluster.endpoints if cluster else None,
                                ray_address=ray_cell.address if ray_cell else None)
        _add_machines(base, args.machines)
        # The API process's own CPU per submission and per bulk job (every thread): with 2 shared
        # cores the rates swing with other work, the CPU a request costs far less.
        pids = {"api": proc.pid, **(ray_cell.pids if ray_cell else {})}
        cpu0 = _cpu_of(pids)
        single = run_locust(base, "single", args.users, args.seconds, tmp)
        cpu1 = _cpu_of(pids)
        bulk = run_locust(base, "bulk", args.users, args.bulk_seconds, tmp, bulk=args.bulk)
        cpu2 = _cpu_of(pids)
        for phase, jobs, (a, b) in ((single, single["requests"], (cpu0, cpu1)),
                                    (bulk, bulk["requests"] * args.bulk, (cpu1, cpu2))):
            for name in pids:  # api_, store_, batch_scheduler_ and idle_actors_cpu_us_per_job
                phase[f"{name}_cpu_us_per_job"] = round((b[name] - a[name]) / max(jobs, 1) * 1e6, 1)
            phase["locust_cpu_us_per_job"] = round(phase["locust_cpu_s"] / max(jobs, 1) * 1e6, 1)
        summary = httpx.get(base + "/v1/cell", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30).json()
        if ray_cell is not None:
            actors = ray_cell.statuses()
    finally:
        if proc is not None:
            _stop(proc)
        if cluster is not None:
            cluster.stop()
        if ray_cell is not None:
            ray_cell.stop()
    out = {"backend": backend, "single": single, "bulk": bulk, "bulk_jobs_per_s": bulk["per_s"] * args.bulk,
           "cell": {k: summary.get(k) for k in ("queues", "schedulers", "used")}}
    if ray_cell is not None:
        out["scheduler_actors"] = actors
    return out


TRACING_MODES = ("off", "file", "otlp")


def _cpu_of(pids: dict[str, int | list[int]]) -> dict[str, float]:
    return {name: processes_cpu_s(pid if isinstance(pid, list) else [pid])
            for name, pid in pids.items()}


def _tracing_env(mode: str, tmp: Path, receiver: OtlpReceiver) -> dict[str, str]:
    """The API process's tracing (schedulers/tracing.py reads these): none, a JSON-lines
    file, or OTLP/HTTP to the receiver in this process."""
    off = {"OTEL_TRACES_EXPORTER": "none", "CELLSCHED_TRACE_FILE": ""}
    if mode == "file":
        return {**off, "CELLSCHED_TRACE_FILE": str(tmp / f"trace-{time.time_ns()}.jsonl")}
    if mode == "otlp":
        return {**off, "OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": receiver.endpoint}
    return off


def bench_tracing(modes: list[str], args, tmp: Path) -> dict:
    """Single submissions on the embedded store with each tracing mode, rounds interleaved
    (mode after mode, then back: loadtests/interleave.py), so the modes share the machine's
    noise and drift; medians."""
    runs: dict[str, list[dict]] = {m: [] for m in modes}
    with OtlpReceiver() as receiver:
        receiver.count_only = True
        for rnd in range(args.tracing_rounds):
            for mode in round_order(modes, rnd):
                proc, base = _start_api(tmp, None, _tracing_env(mode, tmp, receiver))
                try:
                    _add_machines(base, args.machines)
                    cpu0, loop0 = processes_cpu_s([proc.pid]), thread_cpu_s(proc.pid)
                    run = run_locust(base, "single", args.users, args.seconds, tmp)
                    loop_s = thread_cpu_s(proc.pid) - loop0
                    # The API process's CPU per submission: with 2 shared cores the rate swings with
                    # other work, the CPU a request costs far less (docs/benchmarks.md).
                    run["api_cpu_us_per_request"] = round(
                        (processes_cpu_s([proc.pid]) - cpu0) / max(run["requests"], 1) * 1e6, 1)
                    # the event loop's share (the request span is made there); the rest is the
                    # hosted schedulers' threads and the span processor's
                    run["api_loop_cpu_us_per_request"] = round(loop_s / max(run["requests"], 1) * 1e6, 1)
                    runs[mode].append(run)
                finally:
                    _stop(proc)
        spans = receiver.spans_received
    out: dict = {"rounds": args.tracing_rounds, "otlp_spans_received": spans, "modes": {}}
    for mode, rs in runs.items():
        out["modes"][mode] = {"submissions_per_s": round(statistics.median(r["per_s"] for r in rs), 1),
                              "p99_ms": statistics.median(r["p99_ms"] for r in rs),
                              "api_cpu_us_per_request": statistics.median(r["api_cpu_us_per_request"] for r in rs),
                              "api_loop_cpu_us_per_request": statistics.median(
                                  r["api_loop_cpu_us_per_request"] for r in rs),
                              "failures": sum(r["failures"] for r in rs), "runs": rs}
    base_rate = out["modes"].get("off", {}).get("submissions_per_s")
    for mode in modes:
        if mode != "off" and base_rate:
            out[f"tracing_{mode}_cost"] = round(1 - out["modes"][mode]["submissions_per_s"] / base_rate, 3)
            out[f"tracing_{mode}_cpu_cost"] = round(
                1 - out["modes"]["off"]["api_cpu_us_per_request"] / out["modes"][mode]["api_cpu_us_per_request"], 3)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--backends", default="memory-ray,etcd-3", help=f"comma-separated: {', '.join(BACKENDS)}")
    ap.add_argument("--users", type=int, default=64)
    ap.add_argument("--seconds", type=float, default=20.0, help="length of the single-submission and bare phases")
    ap.add_argument("--bulk", type=int, default=500, help="jobs per bulk request")
    ap.add_argument("--bulk-seconds", type=float, default=10.0)
    ap.add_argument("--machines", type=int, default=500)
    ap.add_argument("--quick", action="store_true", help="tiny sizes, for the smoke test")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--tracing", default="",
                    help="comma-separated off, file, otlp: instead of the backends, the cost of tracing "
                         "(single submissions on the embedded store per mode)")
    ap.add_argument("--tracing-rounds", type=int, default=2, help="rounds of every --tracing mode, interleaved")
    args = ap.parse_args(argv)
    if args.quick:
        # 4 s, not 2: on a loaded 2-core machine a 2 s Locust run could end before its first
        # answer came back (no stats row for the mode; the smoke test then failed)
        args.users, args.seconds, args.bulk, args.bulk_seconds, args.machines = 8, 4, 20, 2, 20
    if args.tracing:
        modes = [m.strip() for m in args.tracing.split(",") if m.strip()]
        if not modes or any(m not in TRACING_MODES for m in modes) or args.tracing_rounds < 1:
            print(f"bench_api: --tracing: expected a comma list of {', '.join(TRACING_MODES)} and "
                  f"--tracing-rounds >= 1; got {args.tracing!r}", file=sys.stderr)
            return 2
        with tempfile.TemporaryDirectory(prefix="cellsched-bench-api-") as d:
            result = bench_tracing(modes, args, Path(d))
        print(f"{'tracing':8} {'subm/s':>8} {'p99 ms':>7} {'fail':>5} {'cost':>6} {'API CPU us/req':>14} "
              f"{'CPU cost':>8} {'loop us/req':>11}")
        for mode, m in result["modes"].items():
            cost, cpu_cost = result.get(f"tracing_{mode}_cost"), result.get(f"tracing_{mode}_cpu_cost")
            print(f"{mode:8} {m['submissions_per_s']:8.0f} {m['p99_ms']:7.0f} {m['failures']:5d} "
                  f"{'-' if cost is None else format(cost, '6.1%'):>6} {m['api_cpu_us_per_request']:14.0f} "
                  f"{'-' if cpu_cost is None else format(cpu_cost, '.1%'):>8} {m['api_loop_cpu_us_per_request']:11.0f}")
        print(f"(medians of {result['rounds']} interleaved rounds; {args.users} users; OTLP spans received: "
              f"{result['otlp_spans_received']})")
        if args.json:
            print(json.dumps(result))
        return 0
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    bad = [b for b in backends if b not in BACKENDS]
    if bad or not backends:
        print(f"bench_api: --backends: unknown {bad or 'empty list'}; expected some of {', '.join(BACKENDS)}",
              file=sys.stderr)
        return 2
    if "etcd-3" in backends and etcd_binary() is None:
        print("bench_api: etcd is not installed (Debian: apt-get install etcd-server)", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="cellsched-bench-api-") as d:
        tmp = Path(d)
        bare_proc, bare_base = _start_bare(tmp)
        try:
            bare = run_locust(bare_base, "bare", args.users, args.seconds, tmp)
        finally:
            _stop(bare_proc)
        results = [bench_backend(b, args, tmp) for b in backends]
    print(f"{'backend':16} {'users':>5} {'subm/s':>8} {'p50 ms':>7} {'p99 ms':>7} {'fail':>5} {'429':>5} "
          f"{'vs bare':>7} {'bulk jobs/s':>11} {'API us/subm':>11} {'API us/bulk job':>15}")
    for r in results:
        s = r["single"]
        print(f"{r['backend']:16} {args.users:5d} {s['per_s']:8.0f} {s['p50_ms']:7.0f} {s['p99_ms']:7.0f} "
              f"{s['failures'] + r['bulk']['failures']:5d} {s['rate_limited']:5d} "
              f"{s['per_s'] / max(bare['per_s'], 1e-9):7.2f} {r['bulk_jobs_per_s']:11.0f} "
              f"{s['api_cpu_us_per_job']:11.0f} {r['bulk']['api_cpu_us_per_job']:15.0f}")
    print(f"bare ceiling: {bare['per_s']:.0f} req/s, p50 {bare['p50_ms']:.0f} ms, p99 {bare['p99_ms']:.0f} ms "
          f"(a fixed 201, same uvicorn settings and load)")
    first = results[0]
    out = {"backend": first["backend"], "submissions_per_s": round(first["single"]["per_s"], 1),
           "p50_ms": first["single"]["p50_ms"], "p99_ms": first["single"]["p99_ms"],
           "failures": first["single"]["failures"] + first["bulk"]["failures"],
           "rate_limited": first["single"]["rate_limited"] + first["bulk"]["rate_limited"],
           "bare_ceiling_per_s": round(bare["per_s"], 1),
           "ratio_to_bare": round(first["single"]["per_s"] / max(bare["per_s"], 1e-9), 3),
           "bulk_jobs_per_s": round(first["bulk_jobs_per_s"], 1), "users": args.users, "quick": args.quick,
           "bare": bare, "backends": results}
    if args.json:
        print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
