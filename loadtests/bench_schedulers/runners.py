"""The two ways schedulers run: threads of this process (ThreadRunner) or Ray actors
(RayRunner, through schedulers.ray_actors)."""

from __future__ import annotations

import cProfile
import os
import shutil
import tempfile
import threading
import time
from collections import Counter, defaultdict
from contextlib import contextmanager
from pathlib import Path

from cellsched.cellstate.clock import RealClock
from cellsched.cellstate.errors import InvalidInputError
from cellsched.cellstate.keys import CellKeys
from cellsched.loadtests.proc_cpu import processes_cpu_s
from cellsched.schedulers.core import Scheduler
from cellsched.schedulers.cpu_baton import CpuBaton
from cellsched.schedulers.settings import SchedulerSettings
from cellsched.schedulers.shared_cache import cache_for_loops

from .backends import Backend
from .measuring import CountingStore


class ThreadRunner:
    """Schedulers as threads of this process, each with its own store client."""

    name = "threads"
    gate = False  # threads start at the measured phase's start, after submission
    profile_dir: str | None = None  # --profile: one cProfile dump per scheduler thread
    use_baton = True  # --no-baton: the loops fight for the GIL, as before schedulers/cpu_baton.py
    share_cache = True  # --own-caches: every loop keeps its own copy of the cell, as before schedulers/shared_cache.py

    def __init__(self, backend: Backend, cell: str, settings: list[SchedulerSettings]):
        keys = CellKeys(cell)
        self.stores = [CountingStore(backend.connect(), keys) for _ in settings]
        # One baton for the loops of this process, as `cellsched api` hosts them (schedulers/cpu_baton.py).
        self.baton = CpuBaton() if self.use_baton else None
        # On a store in this process the loops share one copy of the cell (schedulers/shared_cache.py).
        self.cache = cache_for_loops(self.stores[0], keys, settings, self.baton) if self.share_cache else None
        self.schedulers = [Scheduler(f"{cell}-s{i}", store, keys, s, RealClock(), baton=self.baton, cache=self.cache)
                           for i, (store, s) in enumerate(zip(self.stores, settings, strict=True))]
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._errors: list[str] = []

    def start(self) -> None:
        self._threads = [threading.Thread(target=self._loop, args=(s,), name=s.name, daemon=True)
                         for s in self.schedulers]
        for t in self._threads:
            t.start()

    def _loop(self, s: Scheduler) -> None:
        prof = cProfile.Profile() if self.profile_dir else None
        try:
            if prof is None:
                s.run(self._stop)
            else:
                prof.runcall(s.run, self._stop)
        except Exception as exc:  # reported with the results, never swallowed
            self._errors.append(f"{s.name}: {exc!r}")
        finally:
            if prof is not None and self.profile_dir:
                prof.dump_stats(str(Path(self.profile_dir) / f"{s.name}.prof"))

    @property
    def errors(self) -> list[str]:
        """What the scheduler threads raised so far (a loop that raised has stopped)."""
        return list(self._errors)

    def wait_placed(self, tasks: int, timeout_s: float) -> bool:
        """Until the schedulers' committed claims reach `tasks`. Each is counted after the store
        acknowledged its commit txn, so this is when the store holds them all bound."""
        deadline = time.monotonic() + timeout_s
        while sum(s.raw_metrics.tasks_placed for s in self.schedulers) < tasks:
            if time.monotonic() > deadline or self._errors:
                return False
            time.sleep(0.005)
        return True

    def stop(self) -> tuple[list[dict], list[str]]:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=60)
        metrics = [s.metrics() for s in self.schedulers]
        for s in self.schedulers:
            s.close()
        if self.cache is not None:
            self.cache.close()
        for store in self.stores:
            store.close()
        return metrics, self._errors

    def cpu_s(self) -> float | None:
        return None  # the loops' CPU is this process's (bench_process_cpu_s)

    def store_counts(self) -> tuple[Counter, dict, int] | None:
        """(keys written by kind, txns by kind with their seconds, bytes written) over every client."""
        written: Counter[str] = Counter()
        txns: Counter[str] = Counter()
        wall: defaultdict[str, float] = defaultdict(float)  # seconds in txns, by kind
        nbytes = 0
        for store in self.stores:
            w, t, s, b = store.counts()
            written.update(w)
            txns.update(t)
            nbytes += b
            for kind, secs in s.items():
                wall[kind] += secs
        return written, dict(sorted(txns.items())) | {f"{k}_s": round(v, 2) for k, v in sorted(wall.items())}, nbytes


class RayRunner:
    """Schedulers as Ray actors (schedulers.ray_actors), one process each."""

    name = "ray"
    gate = True  # the actors loop from construction

    def __init__(self, backend: Backend, cell: str, settings: list[SchedulerSettings]):
        if backend.endpoints is None and backend.host_name is None:
            raise InvalidInputError("the ray runner needs an etcd backend or the memory store in its Ray actor")
        from cellsched.schedulers import ray_actors

        self.ra = ray_actors
        start_ray()
        spec = ray_actors.StoreSpec(etcd=backend.endpoints) if backend.endpoints else \
            ray_actors.StoreSpec(host_name=backend.host_name or ray_actors.STORE_HOST_NAME)
        self.actors = [ray_actors.start_scheduler(f"{cell}-s{i}", spec, cell, s, num_cpus=0.01)
                       for i, s in enumerate(settings)]
        statuses = ray_actors.get([a.status.remote() for a in self.actors], timeout=120)  # built and looping
        self.pids = [st["pid"] for st in statuses]

    def cpu_s(self) -> float:
        """CPU seconds the scheduler actors' processes have used so far."""
        return processes_cpu_s(self.pids)

    def start(self) -> None:
        pass  # the gate's revoke is the start

    def stop(self) -> tuple[list[dict], list[str]]:
        statuses = self.ra.get([a.stop.remote() for a in self.actors], timeout=120)
        for a in self.actors:
            self.ra.kill_actor(a, no_restart=True)
        return [s["metrics"] for s in statuses], [f"{s['name']}: {s['error']}" for s in statuses if s["error"]]

    def store_counts(self) -> tuple[Counter, dict, int] | None:
        return None  # the actors' clients are out of reach; etcd's own counters still count keys


@contextmanager
def hosted_memory(host_name: str = "bench-memory-store"):
    """A memory backend whose store lives in its Ray actor (StoreHost), as `make demo` runs
    it: every client, this process's and the actors', reaches it through RemoteStore."""
    from cellsched.schedulers import ray_actors

    start_ray()
    host = ray_actors.host_store(name=host_name)
    try:
        yield Backend("memory", host_name=host_name, host_pids=[ray_actors.get(host.pid.remote())])
    finally:
        ray_actors.kill_actor(host, no_restart=True)


_ray_tmp: str | None = None


def start_ray() -> None:
    global _ray_tmp
    if _ray_tmp is not None:
        return
    _ray_tmp = tempfile.mkdtemp(prefix="bench-sched-ray-")
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("RAY_TMPDIR", _ray_tmp)
    from cellsched.schedulers import ray_actors

    ray_actors.init_ray(num_cpus=2)


def stop_ray() -> None:
    global _ray_tmp
    if _ray_tmp is None:
        return
    from cellsched.schedulers import ray_actors

    ray_actors.shutdown()  # stops the processes this ray.init started, by PID
    shutil.rmtree(_ray_tmp, ignore_errors=True)
    _ray_tmp = None


RUNNERS: dict[str, type[ThreadRunner] | type[RayRunner]] = {"threads": ThreadRunner, "ray": RayRunner}
