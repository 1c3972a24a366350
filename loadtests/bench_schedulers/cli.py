"""The command line: `python -m loadtests.bench_schedulers` (its help is the package docstring)."""

from __future__ import annotations

import argparse
import gc
import importlib
import json
import os
from pathlib import Path

from cellsched.cellstate.store import DEFAULT_MAX_TXN_OPS

from .backlog import backlog_case
from .cases import k8s_case, scaling_case
from .report import print_tables
from .runners import ThreadRunner, stop_ray
from .sync import sync_case
from .tracing_case import parse_modes, print_tracing, tracing_case
from .whole_cell import whole_cell_case
from .workload import BenchmarkError

CASES = ["k8s", "scaling", "backlog", "sync", "whole-cell"]


# A case's figures are copied to the top level of the report (its JSON line) by prefix.
_KEY_PREFIX = {"backlog": "backlog_", "sync": "sync_100k_", "whole-cell": "whole_cell_"}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=importlib.import_module(__package__).__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--case", choices=[*CASES, "all"], default="all")
    ap.add_argument("--quick", action="store_true", help="tiny sizes, for the smoke test")
    ap.add_argument("--json", action="store_true", help="print the results as one JSON object, the last line")
    ap.add_argument("--clients", choices=["leader", "any"], default="leader",
                    help="etcd clients connect to the leader, or each to a random member")
    k8s = ap.add_argument_group("k8s case")
    k8s.add_argument("--runner", choices=["threads", "ray", "both"], default="threads")
    k8s.add_argument("--schedulers", type=int, default=1)
    k8s.add_argument("--claim-batch", type=int, default=4096, help="jobs claimed, decided and committed together")
    k8s.add_argument("--txns-in-flight", type=int, default=4, help="claim and commit txns in flight per scheduler")
    k8s.add_argument("--policy", default="random_first_fit", help="the BATCH preset's scoring policy by default")
    k8s.add_argument("--no-batch-alike", action="store_true",
                     help="decide every pod on its own (default: alike one-task jobs in one pass, gpu/alike.py)")
    k8s.add_argument("--k8s-backend", choices=["etcd-3", "etcd-1", "memory"], default="etcd-3")
    k8s.add_argument("--raw-seconds", type=float, default=1.0,
                     help="seconds per raw store phase measured before the run (0: skip)")
    k8s.add_argument("--tracing", default="", help="comma-separated off, file: instead of the plain run, the k8s "
                     "case once per tracing mode (tracing_case.py)")
    k8s.add_argument("--tracing-rounds", type=int, default=1, help="rounds of every --tracing mode, interleaved")
    sc = ap.add_argument_group("scaling case")
    sc.add_argument("--scaling-machines", type=int, default=1000)
    sc.add_argument("--scaling-jobs", type=int, default=5000,
                    help="jobs; the cell grows past --scaling-machines if they would not fit at 80%%")
    sc.add_argument("--scaling-tasks", type=int, default=10, help="tasks per job")
    sc.add_argument("--scaling-backends", default="memory,etcd-1,etcd-3", help="comma-separated: memory, etcd-1, etcd-3")
    sc.add_argument("--scaling-modes", default="resource_fit,sequence", help="comma-separated conflict modes")
    sc.add_argument("--scaling-counts", default="1,2,4,8", help="comma-separated scheduler counts")
    sc.add_argument("--scaling-repeats", type=int, default=5,
                    help="runs of every RESOURCE_FIT series, rounds of N = 1, 2, 4, 8 interleaved; the figures "
                         "take each N's median run (--quick: 1)")
    ap.add_argument("--homes", choices=["on", "off", "both"], default="on",
                    help="N schedulers get disjoint homes (gpu/home.py); both: every scaling run twice, off then on")
    sy = ap.add_argument_group("sync case")
    sy.add_argument("--sync-machines", type=int, default=100_000, help="machines in the synced cell")
    wc = ap.add_argument_group("whole-cell case")
    wc.add_argument("--whole-cell-backends", default="memory,etcd-3", help="comma-separated: memory, etcd-1, etcd-3")
    wc.add_argument("--whole-cell-runner", choices=["threads", "ray", "both"], default="threads",
                    help="schedulers as threads of this process or Ray actors (etcd backends only)")
    wc.add_argument("--whole-cell-schedulers", type=int, default=3, help="scheduler threads, each with its own home")
    wc.add_argument("--whole-cell-timeout", type=float, default=900.0, help="seconds before a run is given up")
    tune = ap.add_argument_group("this process")
    tune.add_argument("--gc-threshold", type=int, default=50_000,
                      help="gc.set_threshold(N, 10, 10), as the scheduler actors set it (0: Python's default, 700)")
    tune.add_argument("--profile", metavar="DIR", help="cProfile every scheduler thread into DIR/<name>.prof")
    tune.add_argument("--no-baton", action="store_true",
                      help="scheduler threads without the CPU baton (schedulers/cpu_baton.py), to measure what it buys")
    tune.add_argument("--own-caches", action="store_true",
                      help="every scheduler thread keeps its own copy of the cell, even on the memory store "
                           "(schedulers/shared_cache.py), to measure what sharing one buys")
    args = ap.parse_args(argv)
    if args.tracing:
        try:
            parse_modes(args.tracing)
        except BenchmarkError as exc:
            ap.error(str(exc))
    if args.quick:
        args.raw_seconds = min(args.raw_seconds, 0.2)
    if args.gc_threshold:
        gc.set_threshold(args.gc_threshold, 10, 10)
    ThreadRunner.use_baton = not args.no_baton
    ThreadRunner.share_cache = not args.own_caches
    if args.profile:
        Path(args.profile).mkdir(parents=True, exist_ok=True)
        ThreadRunner.profile_dir = args.profile

    result: dict = {"cpus": os.cpu_count(), "max_txn_ops": DEFAULT_MAX_TXN_OPS, "quick": args.quick,
                    "gc_threshold": gc.get_threshold()[0], "cpu_baton": not args.no_baton}
    try:
        if args.case in ("k8s", "all") and args.tracing:
            result["k8s_tracing"] = tracing_case(args)
            result.update({k: v for k, v in result["k8s_tracing"].items() if k.startswith("k8s_tracing_")})
        elif args.case in ("k8s", "all"):
            result["k8s"] = k8s_case(args)
            result["k8s_basic_pods_per_s"] = result["k8s"]["k8s_basic_pods_per_s"]
            result["k8s_upstream_min_pods_per_s"] = result["k8s"]["upstream_min_pods_per_s"]
            result.update({k: v for k, v in result["k8s"].items() if k.startswith("k8s_") and not k.endswith("_runner")
                           and k != "k8s_basic_pods_per_s"})
        if args.case in ("scaling", "all"):
            result["scaling"] = scaling_case(args)
            for key, value in result["scaling"].items():
                if key.startswith("scaling_") and key != "scaling_series":
                    result[key] = value
        for name, case in (("backlog", backlog_case), ("sync", sync_case), ("whole-cell", whole_cell_case)):
            if args.case in (name, "all"):
                section = result[name.replace("-", "_")] = case(args)
                result.update({k: v for k, v in section.items() if k.startswith(_KEY_PREFIX[name])})
    finally:
        stop_ray()
    print_tables(result)
    print_tracing(result.get("k8s_tracing"))
    if args.json:
        print(json.dumps(result))
    return result
