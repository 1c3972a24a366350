"""The two cases: Kubernetes' SchedulingBasic (k8s) and schedulers x backends x conflict
modes (scaling)."""

from __future__ import annotations

import itertools
import sys
from dataclasses import dataclass

from cellsched.cellstate.model import ConflictMode
from cellsched.loadtests.bench_store import bench_raw
from cellsched.loadtests.interleave import round_order
from cellsched.schedulers.settings import BATCH

from .backends import etcd_available, open_backend
from .runners import hosted_memory
from .runs import RunSpec, row, run_once
from .workload import K8S_TARGET_PODS_PER_S, NODE, POD, load_k8s_case


def k8s_case(args) -> dict:
    case = load_k8s_case()
    if args.quick:
        case = case.scaled(0.02)
    backend_name = args.k8s_backend if etcd_available() else "memory"
    out = {"case": case.name, "source": case.source, "nodes": case.nodes, "init_pods": case.init_pods,
           "measure_pods": case.measure_pods, "node_capacity": case.node_capacity, "pod_request": case.pod_request,
           "upstream_min_pods_per_s": case.threshold_pods_per_s, "target_pods_per_s": K8S_TARGET_PODS_PER_S,
           "backend": backend_name, "clients": args.clients, "runs": []}
    if backend_name != args.k8s_backend:
        out["note"] = f"etcd is not installed: ran on the memory store, not {args.k8s_backend}"
    settings = BATCH.with_(claim_batch=args.claim_batch, txns_in_flight=args.txns_in_flight,
                           policy_name=args.policy, idle_poll_s=0.01, batch_alike=not args.no_batch_alike)
    for runner in ["threads", "ray"] if args.runner == "both" else [args.runner]:
        with open_backend(backend_name, args.clients) as backend:
            if args.raw_seconds > 0 and backend.memory is None:
                raw_txn, raw_keys = bench_raw(backend.connect, 4, args.raw_seconds)
                out["raw_txn_per_s"], out["raw_batched_keys_per_s"] = round(raw_txn, 1), round(raw_keys, 1)
                out.setdefault("raw_txn_per_s_by_runner", {})[runner] = round(raw_txn, 1)
            spec = RunSpec(f"k8s-{runner}", case.nodes, case.node_capacity, case.pod_request, case.init_pods,
                           case.measure_pods, 1, args.schedulers, settings, runner, homes=args.homes != "off")
            r = run_once(backend, spec)
            out["runs"].append(row(r))
            print(f"  k8s {runner}: {r.tasks_per_s:.0f} pods/s", file=sys.stderr, flush=True)
    for r in out["runs"]:
        if r["keys_written_per_pod"] and out.get("raw_batched_keys_per_s"):
            r["keys_per_s_vs_raw_ceiling"] = round(
                r["keys_written_per_pod"] * r["tasks_per_s"] / out["raw_batched_keys_per_s"], 3)
    best = max(out["runs"], key=lambda r: r["tasks_per_s"])
    out["k8s_basic_pods_per_s"], out["best_runner"] = best["tasks_per_s"], best["runner"]
    out.update(k8s_figures(out["runs"], out.get("raw_txn_per_s_by_runner", {})))
    return out


def k8s_figures(runs: list[dict], raw_txn_per_s: dict[str, float]) -> dict:
    """Issue 9's k8s figures from the case's rows: the Ray actor's pods/s and its ratio to the raw
    one-put txn rate of its own cluster (measured just before it), and keys and bytes written per
    pod (keys from the Ray run's etcd counters when there is one; bytes only from the threads run,
    whose clients the benchmark counts)."""
    by_runner = {r["runner"]: r for r in runs}
    out: dict = {}
    ray = by_runner.get("ray")
    if ray is not None:
        out["k8s_ray_pods_per_s"] = ray["tasks_per_s"]
        if raw_txn_per_s.get("ray"):
            out["k8s_ray_over_raw_txn"] = round(ray["tasks_per_s"] / raw_txn_per_s["ray"], 3)
    counted = [r for r in (ray, by_runner.get("threads")) if r is not None and r["keys_written_per_pod"] is not None]
    if counted:
        out["k8s_keys_written_per_pod"], out["k8s_keys_written_runner"] = (counted[0]["keys_written_per_pod"],
                                                                           counted[0]["runner"])
    sized = [r for r in runs if r.get("bytes_written_per_pod") is not None]
    if sized:
        out["k8s_bytes_written_per_pod"], out["k8s_bytes_written_runner"] = (sized[0]["bytes_written_per_pod"],
                                                                             sized[0]["runner"])
    return out


def scaling_case(args) -> dict:
    backends, counts = args.scaling_backends.split(","), [int(c) for c in args.scaling_counts.split(",")]
    modes = [ConflictMode(m) for m in args.scaling_modes.split(",")]
    machines, jobs, tasks = args.scaling_machines, args.scaling_jobs, args.scaling_tasks
    runners = ["threads", "ray"] if args.runner == "both" else [args.runner]
    homes = {"on": [True], "off": [False], "both": [False, True]}[args.homes]
    repeats = max(1, args.scaling_repeats)
    if args.quick:
        backends, counts, machines, jobs, tasks, repeats = ["memory", "etcd-1"], [1, 2], 50, 40, 5, 1
    # A run ends only when every task is placed: the cell must hold them all. Grow it so the
    # workload fills at most SCALING_FILL of the pods a machine takes (40 of 100m on 4 CPU).
    machines = max(machines, fitting_machines(jobs * tasks, NODE, POD, SCALING_FILL))
    skipped: list[str] = []
    rows = _scaling_rows("sc", backends, runners, modes, homes, counts, machines, jobs, tasks, repeats, args, skipped)
    # Issue 9: the same figures with the cell loaded to 90% CPU (RESOURCE_FIT, homes on).
    full = fitting_machines(jobs * tasks, NODE, POD, FULL_FILL)
    full_rows = _scaling_rows("sc90", backends, runners, [ConflictMode.RESOURCE_FIT], [True], counts, full, jobs,
                              tasks, repeats, args, skipped)
    full_figures = scaling_figures(full_rows)
    return {"workload": f"{jobs} jobs x {tasks} tasks of 100m/500Mi on {machines} machines of 4 CPU/32Gi, "
                        f"BATCH preset (claim_batch {BATCH.claim_batch}, {BATCH.policy_name}), "
                        f"runners {'/'.join(runners)}; the 90% load on {full} machines; "
                        f"{repeats} run(s) of each RESOURCE_FIT point, the figures from each N's median",
            "repeats": repeats,
            "rows": rows, "skipped": skipped, **scaling_figures(rows),
            "scaling_90_rows": full_rows,
            "scaling_90_cpu_fill": round(jobs * tasks * POD[0] / (full * NODE[0]), 3),
            "scaling_90_min_ratio": full_figures.get("scaling_min_ratio"),
            "scaling_90_max_failed_txn_fraction": full_figures.get("scaling_max_failed_txn_fraction"),
            "scaling_90_max_failed_txn_fraction_any_run": full_figures.get("scaling_max_failed_txn_fraction_any_run"),
            "scaling_90_series": full_figures["scaling_series"],
            "scaling_90_jobs_parked": sum(r["jobs_parked"] for r in full_rows)}


def _scaling_rows(label, backends, runners, modes, homes, counts, machines, jobs, tasks, repeats, args,
                  skipped: list[str]) -> list[dict]:
    """Every (backend, runner, mode, homes) series over `counts`; a RESOURCE_FIT series (the
    issue's figures) `repeats` times, in rounds of every count, so a slow spell of the
    machine lands on all the counts of one round rather than on one count's every run, and
    every other round backwards, so a steady drift does not favour the count run first."""
    rows = []
    for b in backends:
        if b != "memory" and not etcd_available():
            skipped.append(f"{b}: etcd is not installed")
            continue
        for runner in runners:
            # Ray actors on memory reach the store hosted in its StoreHost actor, as `make demo` runs it.
            opened = hosted_memory() if runner == "ray" and b == "memory" else open_backend(b, args.clients)
            with opened as backend:
                for mode in modes:
                    rounds = repeats if mode is ConflictMode.RESOURCE_FIT else 1
                    # each round's counts forward, the next round's back: the machine drifts (loadtests/interleave.py)
                    order = ((rep, homed, n) for rep, homed in itertools.product(range(rounds), homes)
                             for n in round_order(counts, rep))
                    for rep, homed, n in order:
                        if n == 1 and not homed and True in homes:
                            continue  # one scheduler has the whole cell either way: run it once
                        point = ScalingPoint(label, b, runner, mode, homed, n, rep, rounds)
                        rows.append(_scaling_run(backend, point, machines, jobs, tasks))
    return rows


@dataclass(frozen=True)
class ScalingPoint:
    """Which run of which series: the case label, the backend's and runner's names, the
    conflict mode, homes on or off, the scheduler count, and the repeat of how many."""

    label: str
    backend: str
    runner: str
    mode: ConflictMode
    homed: bool
    schedulers: int
    repeat: int
    repeats: int

    @property
    def name(self) -> str:
        return (f"{self.label}-{self.backend}-{self.runner}-{self.mode.value.replace('_', '')}-{int(self.homed)}"
                f"-{self.schedulers}-r{self.repeat}")


def _scaling_run(backend, point: ScalingPoint, machines: int, jobs: int, tasks: int) -> dict:
    """One point of a scaling series, printed as it ends."""
    settings = BATCH.with_(conflict_mode=point.mode, idle_poll_s=0.01)
    spec = RunSpec(point.name, machines, NODE, POD, 0, jobs, tasks, point.schedulers, settings, point.runner,
                   homes=point.homed)
    r = run_once(backend, spec)
    print(f"  {point.label:7} {point.backend:7} {point.runner:7} {point.mode.value:12} "
          f"homes={'on' if point.homed else 'off'} n={point.schedulers} run {point.repeat + 1}/{point.repeats}"
          f" on {machines} machines: {r.tasks_per_s:8.0f} tasks/s, failed txn fraction {r.failed_txn_fraction:.3f},"
          f" parked {int(r.total('jobs_parked'))}", file=sys.stderr, flush=True)
    return row(r) | {"repeat": point.repeat}


SCALING_FILL = 0.8
FULL_FILL = 0.9  # issue 9: "a workload that loads the cell to 90% CPU"


def fitting_machines(pods: int, node: tuple[int, int, int], pod: tuple[int, int, int], fill: float) -> int:
    """Machines of `node` that hold `pods` of `pod` at `fill` of their room (the scarcest resource)."""
    per_machine = min(n // p for n, p in zip(node, pod, strict=True) if p)
    return -(-pods // max(1, int(per_machine * fill)))


def scaling_figures(rows: list[dict]) -> dict:
    """Issue 9's figures over the RESOURCE_FIT rows: per (backend, runner, homes) series and N,
    the median of its runs' tasks/s and, apart, of their failed txn fractions; then per
    series the lowest median tasks/s with N >= 2 over the median with 1, and the highest
    median failed txn fraction with N >= 2; then the worst over the series with homes (and,
    if run, without). One run per point: its own figures."""
    runs: dict[tuple, dict[int, list[dict]]] = {}
    for r in rows:
        if r["conflict_mode"] == ConflictMode.RESOURCE_FIT.value:
            runs.setdefault((r["backend"], r["runner"], r["homes_on"]), {}).setdefault(r["schedulers"], []).append(r)
    series = {key: {n: _median_point(point) for n, point in by_n.items()} for key, by_n in runs.items()}
    singles = {(b, r): by_n[1] for (b, r, _), by_n in series.items() if 1 in by_n}
    figures = []
    for (backend, runner, homed), by_n in sorted(series.items(), key=str):
        one, many = singles.get((backend, runner)), [by_n[n] for n in sorted(by_n) if n >= 2]
        if one is None or not many or not one["tasks_per_s"]:
            continue
        figures.append({"backend": backend, "runner": runner, "homes": homed,
                        "single_tasks_per_s": one["tasks_per_s"],
                        "median_tasks_per_s_by_n": {n: by_n[n]["tasks_per_s"] for n in sorted(by_n)},
                        "runs_tasks_per_s_by_n": {n: [r["tasks_per_s"] for r in runs[(backend, runner, homed)][n]]
                                                  for n in sorted(by_n)},
                        "min_ratio": round(min(r["tasks_per_s"] for r in many) / one["tasks_per_s"], 3),
                        "max_failed_txn_fraction": max(r["failed_txn_fraction"] for r in many),
                        "max_failed_txn_fraction_any_run": max(r["failed_txn_fraction"]
                                                               for n, point in runs[(backend, runner, homed)].items()
                                                               if n >= 2 for r in point)})
    out: dict = {"scaling_series": figures}
    for homed, suffix in ((True, ""), (False, "_without_homes")):
        chosen = [f for f in figures if f["homes"] is homed]
        if chosen:
            out[f"scaling_min_ratio{suffix}"] = min(f["min_ratio"] for f in chosen)
            out[f"scaling_max_failed_txn_fraction{suffix}"] = max(f["max_failed_txn_fraction"] for f in chosen)
            out[f"scaling_max_failed_txn_fraction_any_run{suffix}"] = max(f["max_failed_txn_fraction_any_run"]
                                                                          for f in chosen)
    return out


def _median_point(point: list[dict]) -> dict:
    """One N's runs as one point: the median tasks/s and, apart, the median failed txn fraction
    (the lower middle of an even count)."""
    def mid(values):
        return sorted(values)[(len(values) - 1) // 2]
    return {"tasks_per_s": mid([r["tasks_per_s"] for r in point]),
            "failed_txn_fraction": mid([r["failed_txn_fraction"] for r in point])}
