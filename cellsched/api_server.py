"""`cellsched api`: serve the REST API with uvicorn (uvloop, httptools).

With no arguments it serves a first-try cell: the embedded memory store, in this
process, with one scheduler loop per class and the machine monitor on threads, on
127.0.0.1:8080, and an operator token it writes to ~/.cellsched/token (mode 0600, never
printed) for the client commands. With --etcd it serves a cell on etcd; schedulers
then run elsewhere (`cellsched up`), unless --schedulers on. With --ray-address it serves
the embedded store hosted in its Ray actor on that Ray cluster (as `make demo` and
`cellsched up` host it), its schedulers being that cluster's actors. Any number of API
processes can serve one etcd cell: they share nothing but the store.
"""

from __future__ import annotations

import argparse
import gc
import logging
import os
import secrets
import socket
import sys
import threading
from pathlib import Path

from cellsched.arg_types import PORT, cell_name, int_at_least, positive_float

DEFAULT_TOKEN_FILE = Path.home() / ".cellsched" / "token"
DEFAULT_PORT = 8080


def _first_try_tokens(path: Path):
    """An operator token for the embedded first try, kept in a private file."""
    from cellsched.api import Role, TokenTable

    path.parent.mkdir(parents=True, exist_ok=True)
    secret = path.read_text().strip() if path.exists() else ""
    if len(secret) < 16:
        secret = secrets.token_urlsafe(32)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secret + "\n")
    table = TokenTable()
    table.add(Role.OPERATOR, "local-operator", secret)
    return table


class HostedSchedulers:
    """Scheduler loops (one per class) and the machine monitor, on threads of this process."""

    def __init__(self, store, keys, machine_liveness: bool):
        from cellsched.cellstate.clock import RealClock
        from cellsched.cellstate.machine_health import MachineMonitor
        from cellsched.schedulers import PRESETS, CpuBaton, Scheduler
        from cellsched.schedulers.shared_cache import cache_for_loops

        self.stop = threading.Event()
        # The loops share this interpreter: they step one at a time (schedulers/cpu_baton.py), and on
        # the embedded store one copy of the cell (schedulers/shared_cache.py).
        baton = CpuBaton()
        settings = {c: s.with_(idle_poll_s=0.05) for c, s in PRESETS.items()}
        self.cache = cache_for_loops(store, keys, list(settings.values()), baton)
        self.schedulers = [Scheduler(f"{keys.cell}-{c.value}-0", store, keys, s, RealClock(), baton=baton,
                                     cache=self.cache) for c, s in settings.items()]
        self.monitor = MachineMonitor(store, keys, RealClock(), liveness_required=machine_liveness)
        self.threads = [threading.Thread(target=s.run, args=(self.stop,), name=s.name, daemon=True)
                        for s in self.schedulers]
        self.threads.append(threading.Thread(target=self._monitor_loop, name="monitor", daemon=True))

    def _monitor_loop(self) -> None:
        log = logging.getLogger("cellsched.monitor")
        while not self.stop.wait(1.0):
            try:
                self.monitor.tick()
            except Exception as exc:  # a tick's failure is retried next tick
                log.warning("machine monitor tick failed: %s", exc)

    def start(self) -> None:
        for t in self.threads:
            t.start()

    def alive(self) -> int:
        return sum(1 for t in self.threads[:-1] if t.is_alive())

    def close(self) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(timeout=5)
        for s in self.schedulers:
            s.close()
        if self.cache is not None:
            self.cache.close()


def add_arguments(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--etcd", default=None, help="host:port[,host:port...]; default: the embedded store")
    ap.add_argument("--ray-address", default=None,
                    help="the Ray cluster whose named store actor (cellsched up, make demo) holds the embedded "
                         "store; its schedulers are that cluster's actors")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=PORT, default=DEFAULT_PORT, help="0: a free port (the one bound is printed)")
    ap.add_argument("--cell", type=cell_name, default="cell")
    ap.add_argument("--tokens", default=None,
                    help="file of role:name:secret lines (default: CELLSCHED_API_TOKENS; embedded: a local "
                         f"operator token in {DEFAULT_TOKEN_FILE})")
    ap.add_argument("--schedulers", choices=("auto", "on", "off"), default="auto",
                    help="host scheduler loops in this process (auto: on for the embedded store)")
    ap.add_argument("--machine-liveness", action="store_true",
                    help="machines must heartbeat (POST /v1/machines/ID/heartbeat) or go DOWN")
    ap.add_argument("--rate", type=positive_float, default=1000.0, help="requests per second per token")
    ap.add_argument("--burst", type=int_at_least(1), default=2000, help="burst per token")
    ap.add_argument("--max-body-bytes", type=int_at_least(1), default=None)
    ap.add_argument("--access-log", action="store_true", help="log each request (paths only, never headers)")
    ap.add_argument("--audit-chains", type=int_at_least(0), default=8,
                    help="audit chains this process writes (one mutation at a time each); 0: no audit records")


API_GC_THRESHOLD = 50_000


def serve(args: argparse.Namespace) -> int:
    from cellsched.api import RateLimiter, TokenTable
    from cellsched.schedulers import tracing

    try:
        if args.tokens or os.environ.get("CELLSCHED_API_TOKENS") or args.etcd or args.ray_address:
            tokens = TokenTable.load(args.tokens)
        else:
            tokens = _first_try_tokens(DEFAULT_TOKEN_FILE)
            print(f"cellsched api: an operator token is in {DEFAULT_TOKEN_FILE}", file=sys.stderr)
        limiter = RateLimiter(args.rate, args.burst)
        # OTEL_* (schedulers/tracing.py): the request spans, and those of schedulers hosted here.
        traced = tracing.from_env(service="cellsched-api")
    except (OSError, ValueError) as exc:
        print(f"cellsched api: {exc}", file=sys.stderr)
        return 2
    try:
        sock = listen(args.host, args.port)
    except OSError as exc:
        print(f"cellsched api: cannot listen on {args.host}:{args.port}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    try:
        return _serve_on(sock, args, tokens, limiter, traced)
    finally:
        sock.close()


def listen(host: str, port: int) -> socket.socket:
    """The listening socket, bound before any store or scheduler starts: a host or port that
    cannot be had is a clear error at once, and the address printed is the one bound (port 0
    picks a free one)."""
    family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                                         flags=socket.AI_PASSIVE)[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
    except OSError:
        sock.close()
        raise
    return sock


def _serve_on(sock: socket.socket, args: argparse.Namespace, tokens, limiter, traced) -> int:
    import uvicorn

    from cellsched.api import ApiContext, create_app
    from cellsched.api.context import DEFAULT_MAX_BODY_BYTES
    from cellsched.cellstate.audit import AuditLog
    from cellsched.cellstate.keys import CellKeys
    from cellsched.cellstate.store import CellStore
    from cellsched.schedulers import tracing

    store: CellStore
    if args.etcd:
        from cellsched.cellstate.store.etcd import EtcdStore, parse_endpoints

        try:
            parse_endpoints(args.etcd)
        except ValueError as exc:
            print(f"cellsched api: --etcd: {exc}", file=sys.stderr)
            return 2
        store = EtcdStore(args.etcd)
    elif args.ray_address:
        from cellsched.schedulers import ray_actors

        ray_actors.init_ray(args.ray_address)
        try:
            store = ray_actors.RemoteStore(ray_actors.get_actor(ray_actors.STORE_HOST_NAME))
        except ValueError:
            print(f"cellsched api: no store actor {ray_actors.STORE_HOST_NAME!r} on {args.ray_address} "
                  "(start one with `cellsched up --ray-address ...`)", file=sys.stderr)
            return 2
    else:
        from cellsched.cellstate.store.memory import MemoryStore

        store = MemoryStore()
    keys = CellKeys(args.cell)
    tracing.install(traced)
    hosted = None
    if args.schedulers == "on" or (args.schedulers == "auto" and not args.etcd and not args.ray_address):
        hosted = HostedSchedulers(store, keys, args.machine_liveness)
        hosted.start()
    audit = AuditLog.open(store, keys, args.audit_chains) if args.audit_chains > 0 else None
    ctx = ApiContext(store, keys, tokens, limiter, max_body_bytes=args.max_body_bytes or DEFAULT_MAX_BODY_BYTES,
                     schedulers_in_process=hosted.alive if hosted else (lambda: 0), audit=audit,
                     tracing=traced)
    where = f"http://{args.host}:{sock.getsockname()[1]}"
    print(f"cellsched api: serving cell {args.cell!r} on {where} "
          f"(store: {args.etcd or ('embedded, Ray actor' if args.ray_address else 'embedded')}, schedulers here: {len(hosted.schedulers) if hosted else 0}); "
          f"dashboard at {where}/ui (it asks for a reader token)",
          file=sys.stderr, flush=True)
    app = create_app(ctx)
    # A 500-job bulk allocates some 25,000 objects: with Python's default gen-0 threshold
    # (700) that is dozens of collections per request, and the older generations' passes walk
    # every module, schema and Ray object loaded at start. Those are frozen out of the
    # collector, and gen 0 runs every 50,000 allocations as in the scheduler actors (about a
    # third of a bulk's CPU in process; docs/architecture.md, "The REST API").
    gc.freeze()
    gc.set_threshold(API_GC_THRESHOLD, 10, 10)
    try:
        config = uvicorn.Config(app, host=args.host, port=args.port, loop="uvloop", http="httptools",
                                log_level="warning", access_log=args.access_log)
        uvicorn.Server(config).run(sockets=[sock])
    finally:
        if hosted:
            hosted.close()
        traced.shutdown()  # flushes the batch processor: the last requests' spans are sent
        store.close()
    return 0
