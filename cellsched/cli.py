"""The `cellsched` command: the composition root, allowed to import every layer."""

from __future__ import annotations

import argparse
import sys


def cmd_demo(args: argparse.Namespace) -> int:
    from cellsched.demo import run

    return run(horizon_s=args.horizon, seed=args.seed, ray_address=args.ray_address)


def cmd_demo_engine(args: argparse.Namespace) -> int:
    from cellsched.demo_store import run_demo

    return run_demo(max_jobs=args.jobs, seed=args.seed)


def cmd_check(args: argparse.Namespace) -> int:
    from cellsched.cellstate.errors import StoreUnavailableError
    from cellsched.cellstate.etcd_store import parse_endpoints
    from cellsched.cellstate.invariants import check_store
    from cellsched.cellstate.keys import CellKeys

    try:
        parse_endpoints(args.etcd)
    except ValueError as exc:
        print(f"cellsched check: --etcd: {exc}", file=sys.stderr)
        return 2
    from cellsched.cellstate.etcd_store import EtcdStore

    store = EtcdStore(args.etcd)
    try:
        report = check_store(store, CellKeys(args.cell))
    except StoreUnavailableError as exc:
        print(f"cellsched check: cannot read the store: {exc}", file=sys.stderr)
        return 2
    finally:
        store.close()
    print(f"revision {report.revision}: {report.machines} machines, {report.jobs} jobs, "
          f"{report.bound_tasks} bound tasks")
    for v in report.violations:
        print(f"VIOLATION: {v}")
    print("ok" if report.ok else f"{len(report.violations)} violations")
    return 0 if report.ok else 1


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="cellsched", description=__doc__)
    sub = ap.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="4 scheduler actors replay the shipped Google 2011 sample (embedded store)")
    demo.add_argument("--horizon", type=float, default=40.0, help="replay length in seconds (sets the compression)")
    demo.add_argument("--seed", type=int, default=1)
    demo.add_argument("--ray-address", default=None, help="an existing Ray cluster; default: a local instance")
    demo.set_defaults(fn=cmd_demo)
    engine = sub.add_parser("demo-engine", help="commit a Google 2011 slice through the commit engine, no Ray")
    engine.add_argument("--jobs", type=int, default=3000, help="trace jobs (submission waves) to replay")
    engine.add_argument("--seed", type=int, default=1)
    engine.set_defaults(fn=cmd_demo_engine)
    check = sub.add_parser("check", help="verify the cell invariants on an etcd store")
    check.add_argument("--etcd", required=True, help="host:port[,host:port...]")
    check.add_argument("--cell", default="cell")
    check.set_defaults(fn=cmd_check)
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.fn(args)


if __name__ == "__main__":
    sys.exit(main())
