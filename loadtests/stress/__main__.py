"""CLI: python -m loadtests.stress --schedulers 8 --seconds 120 [--seed N] [--backend memory|etcd] [--ray] [--json]

Prints a per-scheduler table and a summary, then (with --json) the whole result as the
last line. Exit status 1 when the run found invariant violations or lost jobs.
"""

from __future__ import annotations

import argparse
import json
import sys

from .harness import run_stress
from .ray_run import run_ray_stress


def _ray_table(out: dict) -> str:
    lines = [
        f"seed {out['seed']}  {out['variant']} on {out['backend']}  schedulers {out['schedulers']}  {out['seconds']} s",
        f"commits {out['commits']}  conflicts {out['conflicts']} (conflicted txns {out['conflicted_txns']})  "
        f"tasks placed {out['tasks_placed']}  jobs {out['jobs']}  incarnations {out['incarnations']}",
        f"kills {out['kills']}  restarts seen {out['restarts_seen']}  unknown outcomes {out['unknown_outcomes']}",
        f"chaos: {json.dumps(out['chaos'])}",
        f"invariant checks {out['checks']}, violating {out['violating_checks']}; "
        f"distinct violations {out['violation_count']}; jobs lost {out['jobs_lost']}",
    ]
    for kind, n in out["violation_kinds"].items():
        lines.append(f"  {n:5d} x {kind}")
    for v in out["violations_first_seen"][:10]:
        lines.append(f"  first: {v['message']}  [seen by the {v['after_write_by']} check]")
    if out["harness_errors"]:
        lines.append(f"errors {out['harness_errors']}: {out['harness_error_messages'][:3]}")
    return "\n".join(lines)


def _table(out: dict) -> str:
    cols = ("scheduler", "txns", "failed_txns", "committed_claims", "conflicted_claims", "recommitted_claims",
            "unknown_outcomes", "store_errors", "jobs_placed", "jobs_parked")
    rows = [cols] + [tuple(str(r[c]) for c in cols) for r in out["per_scheduler"]]
    widths = [max(len(r[i]) for r in rows) for i in range(len(cols))]
    lines = ["  ".join(v.rjust(w) for v, w in zip(r, widths, strict=True)) for r in rows]
    f = out["faults_injected"]
    t = out["thresholds"]
    lines += [
        "",
        f"seed {out['seed']}  backend {out['backend']}  schedulers {out['schedulers']}  {out['seconds']} s",
        f"commits {out['commits']}  conflicts {out['conflicts']} (conflicted txns {out['conflicted_txns']})  "
        f"tasks placed {out['tasks_placed']}  jobs {out['jobs']} (placed {out['jobs_placed']})",
        f"faults injected: unavailable {f['unavailable']}  lost_ack {f['lost_ack']}  delay {f['delay']}  "
        f"(total {f['total']} of {out['write_txns']} write txns)",
        f"chaos: {json.dumps({k: v for k, v in out['chaos'].items() if k != 'error_messages'})}",
        f"thresholds (>= {t['min_conflicts']} conflicts, >= {t['min_each_fault']} of each fault): "
        f"{'met' if t['met'] else 'NOT met'}",
        f"invariant checks {out['checks']}, violating {out['violating_checks']}; "
        f"distinct violations {out['violation_count']} (onsets {out['violation_onsets']}); "
        f"jobs lost {out['jobs_lost']}",
    ]
    for kind, n in out["violation_kinds"].items():
        lines.append(f"  {n:5d} x {kind}")
    for path, n in out["overcommit_paths"].items():
        lines.append(f"  overcommitting txns {n:4d}: {path}")
    for v in out["violations_first_seen"][:10]:
        lines.append(f"  first: {v['message']}  [after a write by {v['after_write_by']}: {v['write']}; "
                     f"its faults in the last 2 s {v['writer_recent_faults']}, "
                     f"others' {v['others_recent_faults']}]")
    if out["harness_errors"]:
        lines.append(f"scheduler/submitter errors {out['harness_errors']}: {out['harness_error_messages'][:3]}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(prog="python -m loadtests.stress", description=__doc__.splitlines()[0])
    ap.add_argument("--schedulers", type=int, default=8)
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--backend", choices=("memory", "etcd"), default="memory")
    ap.add_argument("--etcd-members", type=int, default=None,
                    help="members of the etcd cluster it starts (default 1; 3 with --ray)")
    ap.add_argument("--ray", action="store_true",
                    help="scheduler actors (Ray) on etcd, killed and restarted, instead of threads")
    ap.add_argument("--json", action="store_true", help="print the whole result as JSON on the last line")
    args = ap.parse_args(argv)
    if args.etcd_members is None:
        args.etcd_members = 3 if args.ray else 1

    def progress(p: dict) -> None:
        print(f"  {p['elapsed_s']:6.1f}s commits {p['commits']} conflicts {p['conflicts']} "
              f"faults {p['faults_injected']['total']}", file=sys.stderr, flush=True)

    if args.ray:
        out = run_ray_stress(args.seed, args.schedulers, args.seconds, etcd_members=args.etcd_members,
                             progress=lambda p: print(f"  {p['elapsed_s']:6.1f}s commits {p['commits']} "
                                                      f"conflicts {p['conflicts']} kills {p['kills']}",
                                                      file=sys.stderr, flush=True))
        print(_ray_table(out))
    else:
        out = run_stress(args.seed, args.schedulers, args.seconds, args.backend, etcd_members=args.etcd_members,
                         progress=progress)
        print(_table(out))
    if args.json:
        print(json.dumps(out, sort_keys=True))
    return out


if __name__ == "__main__":
    result = main()
    sys.exit(1 if result["violation_count"] or result["jobs_lost"] else 0)
