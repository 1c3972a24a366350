"""Ray at the edge: the only module that imports Ray.

- StoreHost: a named actor that owns the embedded MemoryStore, so schedulers and the
  API in other processes share one cell (the embedded default of `make demo`).
- RemoteStore: the CellStore contract over calls to a StoreHost.
- SchedulerActor: a named, restartable actor wrapping the plain-Python Scheduler. Its
  loop runs in a thread; after a crash Ray restarts it and it resumes from the store
  (claims of the dead incarnation expire with its lease).
"""

from __future__ import annotations

import gc
import logging
import os
import signal
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import ray

from cellsched.cellstate.clock import RealClock
from cellsched.cellstate.errors import StoreUnavailableError
from cellsched.cellstate.faults import AfterSendStore
from cellsched.cellstate.housekeeping import Housekeeper
from cellsched.cellstate.keys import CellKeys
from cellsched.cellstate.machine_health import MachineMonitor
from cellsched.cellstate.store import (
    CellStore,
    ModRevisionIs,
    Op,
    StoreLimits,
    TxnResult,
    Watch,
    WatchEvent,
    wire,
)
from cellsched.cellstate.store.memory import MemoryStore

from . import logs, tracing
from .core import Scheduler
from .ray_start import start_with_retry
from .settings import SchedulerSettings

NAMESPACE = "cellsched"
WATCH_IDLE_S = 60.0  # a live local copy polls its watch every step, far more often
STORE_HOST_NAME = "cellsched-store"
LOCAL_OBJECT_STORE_BYTES = 78_643_200  # Ray's minimum: the actors pass small objects only


class StoreHost:
    """Owns one MemoryStore; every method is one store call."""

    def __init__(self, limits: StoreLimits | None = None):
        self.store = MemoryStore(limits or StoreLimits())
        self.watches: dict[int, Watch] = {}
        self.last_read: dict[int, float] = {}
        self.next_watch = 0

    def limits(self) -> StoreLimits:
        return self.store.limits

    def pid(self) -> int:
        """The host's process (the benchmarks read its CPU from /proc)."""
        return os.getpid()

    def txn_sequence(self, packed: bytes) -> bytes:
        """CellStore.txn_sequence in one call, packed both ways (cellstate/store/wire.py)."""
        return wire.pack_results(self.store.txn_sequence_packed(wire.unpack_packed(packed)))

    def watch_open(self, prefix: str, start_revision: int) -> int:
        self._close_idle_watches()
        self.next_watch += 1
        self.watches[self.next_watch] = self.store.watch(prefix, start_revision)
        self.last_read[self.next_watch] = time.monotonic()
        return self.next_watch

    def watch_get(self, watch_id: int) -> list[WatchEvent]:
        w = self.watches.get(watch_id)
        if w is None:  # closed as idle: the reader reopens from its last revision
            raise StoreUnavailableError(f"watch {watch_id} was closed after {WATCH_IDLE_S:.0f} s unread")
        self.last_read[watch_id] = time.monotonic()
        return w.get(0.0)

    def watch_close(self, watch_id: int) -> None:
        w = self.watches.pop(watch_id, None)
        self.last_read.pop(watch_id, None)
        if w is not None:
            w.close()

    def _close_idle_watches(self) -> None:
        """A scheduler incarnation that died never closes its watch; its queue would grow
        with every write for ever. Watches unread for WATCH_IDLE_S are closed."""
        now = time.monotonic()
        for wid in [w for w, t in self.last_read.items() if now - t > WATCH_IDLE_S]:
            self.watch_close(wid)

    def grant_lease(self, ttl_s: int) -> int:
        return self.store.grant_lease(ttl_s)

    def refresh_lease(self, lease_id: int) -> None:
        self.store.refresh_lease(lease_id)

    def revoke_lease(self, lease_id: int) -> None:
        self.store.revoke_lease(lease_id)

    def compact(self, revision: int) -> None:
        self.store.compact(revision)


class _RemoteWatch(Watch):
    def __init__(self, host, watch_id: int):
        self.host, self.watch_id = host, watch_id

    def get(self, timeout: float = 0.0) -> list[WatchEvent]:
        deadline = time.monotonic() + timeout
        while True:
            events = ray.get(self.host.watch_get.remote(self.watch_id))
            if events or time.monotonic() >= deadline:
                return events
            time.sleep(min(0.02, max(0.0, deadline - time.monotonic())))

    def close(self) -> None:
        self.host.watch_close.remote(self.watch_id)


class RemoteStore(CellStore):
    """CellStore over a StoreHost actor. Errors raised in the host re-raise here with
    their own types (Ray's task errors subclass the original exception)."""

    def __init__(self, host):
        self.host = host
        self.limits = ray.get(host.limits.remote())

    def txn(self, compares: Sequence[ModRevisionIs], success: Sequence[Op], failure: Sequence[Op] = ()) -> TxnResult:
        return self.txn_sequence([(compares, success, failure)])[0]

    def txn_sequence(self, steps) -> list[TxnResult]:
        return wire.unpack_results(ray.get(self.host.txn_sequence.remote(wire.pack_txns(steps))))

    def watch(self, prefix: str, start_revision: int) -> Watch:
        return _RemoteWatch(self.host, ray.get(self.host.watch_open.remote(prefix, start_revision)))

    def grant_lease(self, ttl_s: int) -> int:
        return ray.get(self.host.grant_lease.remote(ttl_s))

    def refresh_lease(self, lease_id: int) -> None:
        ray.get(self.host.refresh_lease.remote(lease_id))

    def revoke_lease(self, lease_id: int) -> None:
        ray.get(self.host.revoke_lease.remote(lease_id))

    def compact(self, revision: int) -> None:
        ray.get(self.host.compact.remote(revision))

    def close(self) -> None:
        pass


@dataclass(frozen=True)
class StoreSpec:
    """Where a process finds the cell: an etcd cluster, or the named StoreHost actor."""

    etcd: str | None = None  # "host:port,host:port"
    host_name: str = STORE_HOST_NAME

    def connect(self) -> CellStore:
        if self.etcd:
            from cellsched.cellstate.store.etcd import EtcdStore

            return EtcdStore(self.etcd)
        return RemoteStore(ray.get_actor(self.host_name, namespace=NAMESPACE))


# A scheduler process allocates many short-lived objects per decision; Python's default
# gen-0 threshold (700) runs a collection every few hundred allocations. 50,000 measured
# about +5% pods/s in loadtests.bench_schedulers (docs/benchmarks.md).
SCHEDULER_GC_THRESHOLD = 50_000
LOOP_DIED_EXIT_CODE = 70
SIGTERM_GRACE_S = 2.0


def _start_scheduler(name: str, store: CellStore, keys: CellKeys, settings: SchedulerSettings,
                     patience_s: float = 60.0) -> Scheduler:
    """Build the scheduler, waiting out a store outage (a leader election while actors start):
    Ray restarts an actor whose process dies, but not one whose constructor raised."""
    deadline = time.monotonic() + patience_s
    delay = 0.1
    while True:
        try:
            return Scheduler(name, store, keys, settings, RealClock())
        except StoreUnavailableError:
            if time.monotonic() >= deadline:
                os._exit(LOOP_DIED_EXIT_CODE)  # let Ray restart us rather than leave a dead actor
            time.sleep(delay)
            delay = min(2 * delay, 2.0)


class SchedulerActor:
    def __init__(self, name: str, spec: StoreSpec, cell: str, settings: SchedulerSettings):
        gc.set_threshold(SCHEDULER_GC_THRESHOLD, 10, 10)
        logs.configure()  # JSON lines with the batch span's ids (schedulers/logs.py)
        self.name = name
        self._crash_after_send = 0
        store = AfterSendStore(spec.connect(), self._after_send)
        self.scheduler = _start_scheduler(name, store, CellKeys(cell), settings)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=f"{name}-loop", daemon=True)
        self._error: str | None = None
        self._thread.start()  # a restarted incarnation resumes at once
        try:
            signal.signal(signal.SIGTERM, self._on_sigterm)
        except ValueError:  # not the main thread: Ray's own shutdown path then applies
            pass

    def _loop(self) -> None:
        try:
            self.scheduler.run(self._stop)
        except BaseException as exc:
            # run() survives anything one job or one outage can throw; reaching here means the
            # loop itself is broken. A live process with a dead loop would never be restarted,
            # so release the claims (revoking the lease) and exit: Ray restarts the actor.
            self._error = repr(exc)
            logging.getLogger("cellsched.scheduler").exception("scheduler loop died", extra={"scheduler": self.name})
            self._close_quietly()
            os._exit(LOOP_DIED_EXIT_CODE)

    def _close_quietly(self) -> None:
        try:
            self.scheduler.close()
        except Exception:  # the store may be what broke; the lease then expires on its own
            pass
        tracing.current().flush()  # the exits below skip atexit, where the SDK would flush

    def _on_sigterm(self, _signum, _frame) -> None:
        """A rolling restart: stop, release our claims at once (not after the lease TTL), exit."""
        self._stop.set()
        self._thread.join(timeout=SIGTERM_GRACE_S)  # a step mid-think may not notice in time
        self._close_quietly()  # revoking the lease fences whatever that step still commits
        os._exit(0)

    def _after_send(self, success, _result) -> None:
        if self._crash_after_send and any("/node/alloc/" in op.key for op in success):
            # The commit reached the store; die before the scheduler learns the outcome.
            os.kill(os.getpid(), signal.SIGKILL)

    def arm_crash_after_send(self) -> None:
        self._crash_after_send = 1

    def status(self) -> dict:
        ctx = ray.get_runtime_context()
        return {"name": self.name, "pid": os.getpid(), "node_id": ctx.get_node_id(),
                "alive": self._thread.is_alive(), "error": self._error, "metrics": self.scheduler.metrics()}

    def stop(self) -> dict:
        """Stop the loop and release every claim (the lease is revoked), so the jobs it held
        are claimable at once."""
        self._stop.set()
        self._thread.join(timeout=30)
        status = self.status()
        self._close_quietly()
        return status


class HousekeeperActor:
    """Runs one cell's upkeep on a schedule: the Housekeeper (retention purge, history
    compaction) and the MachineMonitor (evict tasks from draining, down or dead machines)."""

    def __init__(self, spec: StoreSpec, cell: str, retention_s: float, every_s: float, keep_revisions: int,
                 machine_liveness: bool = False):
        store = spec.connect()
        self.keeper = Housekeeper(store, CellKeys(cell), RealClock(), retention_s, every_s, keep_revisions)
        self.monitor = MachineMonitor(store, CellKeys(cell), RealClock(), machine_liveness)
        self.evicted = 0
        self._stop = threading.Event()
        self._error: str | None = None
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(min(5.0, self.keeper.every_s)):
            for step in (self._monitor_tick, self.keeper.tick):  # one failing never skips the other
                try:
                    step()
                except Exception as exc:  # keep running; the next tick retries
                    self._error = repr(exc)

    def _monitor_tick(self) -> None:
        self.evicted += self.monitor.tick().evicted_tasks

    def status(self) -> dict:
        return {"purged": self.keeper.purged, "compactions": self.keeper.compactions, "evicted": self.evicted,
                "error": self._error, "pid": os.getpid(),
                "recently_purged": list(self.keeper.recently_purged)}

    def stop(self) -> dict:
        """Stop, after the tick in progress: its purges must be in the status it returns,
        or a purge landing after the status would look like a lost job."""
        self._stop.set()
        self._thread.join(timeout=60)
        return self.status()


# -- deployment helpers used by the CLI and tests ---------------------------------


def start_housekeeper(spec: StoreSpec, cell: str, retention_s: float = 3600.0, every_s: float = 60.0,
                      keep_revisions: int = 10_000, detached: bool = False, machine_liveness: bool = False):
    opts = dict(name=f"{cell}-housekeeper", namespace=NAMESPACE, num_cpus=0.1, max_restarts=-1,
                max_task_retries=-1, max_concurrency=2)
    if detached:
        opts["lifetime"] = "detached"
    return ray.remote(HousekeeperActor).options(**opts).remote(spec, cell, retention_s, every_s, keep_revisions,
                                                               machine_liveness)


def init_ray(address: str | None = None, num_cpus: int | None = 2, **kwargs) -> None:
    """Connect to a cluster (`address`), or start a small local instance, retried once on a
    failed start with the cause logged (schedulers/ray_start.py says why starts fail)."""
    if ray.is_initialized():
        return
    if address:
        ray.init(address=address, namespace=NAMESPACE, **kwargs)
        return

    def start() -> None:
        try:
            ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, namespace=NAMESPACE,
                     object_store_memory=LOCAL_OBJECT_STORE_BYTES, **kwargs)
        except Exception:
            ray.shutdown()  # whatever the failed init set up in this process
            raise

    start_with_retry(start, "local Ray start")


def local_cluster(num_cpus: int = 2, **head_node_args):
    """A ray.cluster_utils.Cluster with its head node started (tests add and remove worker
    nodes on it), retried once like init_ray. Stop it with cluster.shutdown() (by PID)."""
    from ray.cluster_utils import Cluster

    args = {"num_cpus": num_cpus, "object_store_memory": LOCAL_OBJECT_STORE_BYTES, "include_dashboard": False,
            **head_node_args}
    return start_with_retry(lambda: Cluster(initialize_head=True, head_node_args=args), "local Ray cluster start")


def host_store(limits: StoreLimits | None = None, name: str = STORE_HOST_NAME, detached: bool = False):
    opts = dict(name=name, namespace=NAMESPACE, num_cpus=0.25, max_concurrency=1)
    if detached:
        opts["lifetime"] = "detached"
    # Ray types a handle as its class, whose methods have no .remote: the handle is untyped here.
    actor: Any = ray.remote(StoreHost).options(**opts).remote(limits)
    ray.get(actor.limits.remote())
    return actor


def start_scheduler(name: str, spec: StoreSpec, cell: str, settings: SchedulerSettings, num_cpus: float = 0.25,
                    max_restarts: int = -1, detached: bool = False, scheduling_strategy=None,
                    env: dict[str, str] | None = None):
    """`env`: variables for the actor's process, e.g. its OTEL_* tracing (schedulers/tracing.py)."""
    opts: dict[str, Any] = dict(name=name, namespace=NAMESPACE, num_cpus=num_cpus, max_restarts=max_restarts,
                                max_task_retries=-1, max_concurrency=4)
    if env:
        opts["runtime_env"] = {"env_vars": dict(env)}
    if detached:
        opts["lifetime"] = "detached"
    if scheduling_strategy is not None:
        opts["scheduling_strategy"] = scheduling_strategy
    return ray.remote(SchedulerActor).options(**opts).remote(name, spec, cell, settings)


def address() -> str:
    """The connected cluster's address (its GCS), for another process's init_ray."""
    return ray.get_runtime_context().gcs_address


def get_actor(name: str):
    """The named actor; raises ValueError when there is none."""
    return ray.get_actor(name, namespace=NAMESPACE)


def get(refs, timeout: float | None = None):
    return ray.get(refs, timeout=timeout)


def kill_actor(actor, no_restart: bool = False) -> None:
    ray.kill(actor, no_restart=no_restart)


def shutdown() -> None:
    if ray.is_initialized():
        ray.shutdown()
