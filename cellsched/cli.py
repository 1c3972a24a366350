"""The `cellsched` command: the composition root, allowed to import every layer."""

from __future__ import annotations

import argparse
import sys

from cellsched.arg_types import cell_name, int_at_least, positive_float


def cmd_demo(args: argparse.Namespace) -> int:
    from cellsched.demo import run

    return run(horizon_s=args.horizon, seed=args.seed, ray_address=args.ray_address)


def cmd_demo_engine(args: argparse.Namespace) -> int:
    from cellsched.demo_store import run_demo

    return run_demo(max_jobs=args.jobs, seed=args.seed)


def cmd_check(args: argparse.Namespace) -> int:
    from cellsched.cellstate.errors import StoreUnavailableError
    from cellsched.cellstate.invariants import check_store
    from cellsched.cellstate.keys import CellKeys
    from cellsched.cellstate.store.etcd import EtcdStore, parse_endpoints

    try:
        parse_endpoints(args.etcd)
    except ValueError as exc:
        print(f"cellsched check: --etcd: {exc}", file=sys.stderr)
        return 2
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


def cmd_up(args: argparse.Namespace) -> int:
    import time

    from cellsched.cellstate.store.etcd import parse_endpoints
    from cellsched.schedulers import ray_actors
    from cellsched.schedulers.settings import BATCH, GPU, SERVICE

    if args.etcd:
        try:
            parse_endpoints(args.etcd)
        except ValueError as exc:
            print(f"cellsched up: --etcd: {exc}", file=sys.stderr)
            return 2
    counts = {"batch": (args.batch, BATCH), "service": (args.service, SERVICE), "gpu": (args.gpu, GPU)}
    if any(n < 0 for n, _ in counts.values()) or not any(n for n, _ in counts.values()):
        print("cellsched up: ask for at least one scheduler, and no negative counts", file=sys.stderr)
        return 2
    ray_actors.init_ray(args.ray_address)
    detached = bool(args.ray_address)  # on a cluster the actors outlive this command
    if not args.etcd:
        try:
            ray_actors.get_actor(ray_actors.STORE_HOST_NAME)
        except ValueError:
            ray_actors.host_store(detached=detached)
    spec = ray_actors.StoreSpec(etcd=args.etcd)
    actors = []
    for cls, (n, settings) in counts.items():
        for i in range(n):
            name = f"{args.cell}-{cls}-{i}"
            # Disjoint homes (gpu/home.py): the class's schedulers pick disjoint machines, and claim
            # disjoint shares of the queue (cellstate.claims.claim_jobs), first.
            homed = settings.with_(home=i, homes=n)
            actors.append(ray_actors.start_scheduler(name, spec, args.cell, homed, detached=detached))
    ray_actors.start_housekeeper(spec, args.cell, detached=detached, machine_liveness=args.machine_liveness)
    for st in ray_actors.get([a.status.remote() for a in actors], timeout=120):
        print(f"started {st['name']} (pid {st['pid']}, node {st['node_id'][:12]})")
    if detached:
        print(f"{len(actors)} schedulers running on {args.ray_address}; store: {args.etcd or 'embedded (Ray actor)'}")
        return 0
    print("running on a local Ray instance; Ctrl-C to stop", flush=True)
    try:
        while True:
            time.sleep(10)
            for st in ray_actors.get([a.status.remote() for a in actors]):
                m = st["metrics"]
                print(f"{st['name']}: {m['tasks_placed']} tasks placed, busyness {m['busyness']:.1%}", flush=True)
    except KeyboardInterrupt:
        ray_actors.get([a.stop.remote() for a in actors])
        ray_actors.shutdown()
    return 0


def cmd_audit_verify(args: argparse.Namespace) -> int:
    """Verify the audit chains: on etcd directly, or through an API (the embedded store)."""
    if args.etcd:
        from cellsched.cellstate.audit import verify
        from cellsched.cellstate.keys import CellKeys
        from cellsched.cellstate.store.etcd import EtcdStore, parse_endpoints

        try:
            parse_endpoints(args.etcd)
        except ValueError as exc:
            print(f"cellsched audit verify: --etcd: {exc}", file=sys.stderr)
            return 2
        store = EtcdStore(args.etcd)
        try:
            rep = verify(store, CellKeys(args.cell))
        finally:
            store.close()
        ok, chains, records, problems = rep.ok, rep.chains, rep.records, rep.problems
    else:
        from cellsched import client

        try:
            out = client.call(args, "GET", "/v1/audit/verify")
        except client.ClientError as exc:
            print(f"cellsched audit verify: {exc}", file=sys.stderr)
            return 2
        ok, chains, records, problems = out["ok"], out["chains"], out["records"], out["problems"]
    for p in problems:
        print(f"TAMPERED: {p}")
    print(f"{chains} chains, {records} records: " + ("ok" if ok else f"{len(problems)} problems"))
    return 0 if ok else 1


def cmd_api(args: argparse.Namespace) -> int:
    from cellsched.api_server import serve

    return serve(args)


def build_parser() -> argparse.ArgumentParser:
    from cellsched import api_server, client

    ap = argparse.ArgumentParser(prog="cellsched", description=__doc__)
    sub = ap.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="4 scheduler actors replay the shipped Google 2011 sample (embedded store)")
    demo.add_argument("--horizon", type=positive_float, default=40.0, help="replay length in seconds (sets the compression)")
    demo.add_argument("--seed", type=int, default=1)
    demo.add_argument("--ray-address", default=None, help="an existing Ray cluster; default: a local instance")
    demo.set_defaults(fn=cmd_demo)
    engine = sub.add_parser("demo-engine", help="commit a Google 2011 slice through the commit engine, no Ray")
    engine.add_argument("--jobs", type=int_at_least(1), default=3000, help="trace jobs (submission waves) to replay")
    engine.add_argument("--seed", type=int, default=1)
    engine.set_defaults(fn=cmd_demo_engine)
    up = sub.add_parser("up", help="start scheduler actors on local Ray or an existing Ray cluster")
    up.add_argument("--ray-address", default=None, help="e.g. auto or ray://head:10001; default: local Ray")
    up.add_argument("--etcd", default=None, help="host:port[,host:port...]; default: the embedded store actor")
    up.add_argument("--cell", type=cell_name, default="cell")
    up.add_argument("--batch", type=int_at_least(0), default=2)
    up.add_argument("--service", type=int_at_least(0), default=1)
    up.add_argument("--gpu", type=int_at_least(0), default=1)
    up.add_argument("--machine-liveness", action="store_true",
                    help="machines run agents that heartbeat; a machine whose lease expires goes DOWN")
    up.set_defaults(fn=cmd_up)
    check = sub.add_parser("check", help="verify the cell invariants on an etcd store")
    check.add_argument("--etcd", required=True, help="host:port[,host:port...]")
    check.add_argument("--cell", type=cell_name, default="cell")
    check.set_defaults(fn=cmd_check)
    api = sub.add_parser("api", help="serve the REST API (default: the embedded store with its schedulers)")
    api_server.add_arguments(api)
    api.set_defaults(fn=cmd_api)
    client.add_commands(sub)
    audit = sub.add_parser("audit", help="the audit chains").add_subparsers(dest="audit_command", required=True)
    av = audit.add_parser("verify", help="check every chain: edited, deleted or missing records; exit 1 if any")
    av.add_argument("--etcd", default=None, help="read the chains from etcd (default: ask the API)")
    av.add_argument("--cell", type=cell_name, default="cell")
    av.add_argument("--api", default=None)
    av.add_argument("--token", default=None)
    av.set_defaults(fn=cmd_audit_verify)
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from cellsched.schedulers import logs

    logs.configure()  # the CLI's own log lines, and those of the schedulers it runs in process
    return args.fn(args)


if __name__ == "__main__":
    sys.exit(main())
