"""End-to-end scheduler throughput: schedulers claim, decide and commit jobs through one store.

    python -m loadtests.bench_schedulers                        # every case
    python -m loadtests.bench_schedulers --case k8s --runner both --json
    python -m loadtests.bench_schedulers --case scaling
    python -m loadtests.bench_schedulers --quick --json         # tiny sizes (the smoke test)

Cases:
  k8s      Kubernetes scheduler_perf SchedulingBasic/5000Nodes_10000Pods through a 3-member
           etcd: 5,000 nodes of 4 CPU / 32 GiB, 1,000 initial pods placed first (not
           measured), then 10,000 measured single-pod jobs of 100m / 500 MiB. Shape and
           upstream's minimum throughput come from ../shared/data/k8s_scheduler_perf
           (cases.csv, templates.csv); built-in copies are used, with a note, without it.
           Reports k8s_basic_pods_per_s beside upstream's minimum.
  scaling  tasks/s for 1, 2, 4 and 8 schedulers (threads of one process) on the memory store,
           a 1-member and a 3-member etcd, in both conflict modes, with Omega's conflict
           fraction (conflicted claims per successful txn) and the fraction of failed txns.
           The schedulers run the BATCH preset unchanged (claim_batch 128, txns one by one).

Method:
  - Machines and jobs are written in bulk before the measured phase (submission is timed
    on its own), as scheduler_perf creates its pods before measuring.
  - The measured phase runs from the start of scheduling until the store holds every
    measured pod bound: threads runner, the schedulers' own count of committed claims
    (each one counted after the store acknowledged its commit txn), polled every 5 ms;
    ray runner, a watch on the queue (a job's last binding deletes its queue entry in the
    same txn). Afterwards the store is checked: check_store(...).ok, every job PLACED,
    bound tasks = initial + measured.
  - Keys written per pod: etcd's own put and delete counters over the measured phase
    (etcd_mvcc_put_total + etcd_mvcc_delete_total); the split by key kind comes from the
    schedulers' store clients (threads runner).
  - `threads`: each Scheduler runs in a thread of this process with its own store client and
    a RealClock, built (snapshot taken) before the measured phase. `ray`: Ray actors
    (schedulers.ray_actors). They loop from construction, so the measured jobs are
    submitted behind a gate: a claim on every job, bound to one benchmark lease. Revoking
    it frees them all in one revision, and that is when the measured phase starts.
  - etcd clients talk to the leader by default (--clients leader): on 2 cores the extra
    hop through a follower, which forwards every write and read to the leader, costs CPU
    that the benchmark would otherwise attribute to the scheduler. --clients any picks a
    random member per client, as a deployment without leader awareness would.
  - The k8s case also measures the store's raw ceiling in the same run (bench_store's raw
    phases) and reports the measured phase's keys/s as a fraction of it.
"""

from __future__ import annotations

import argparse
import cProfile
import csv
import gc
import json
import os
import shutil
import sys
import tempfile
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from cellsched.cellstate import codec
from cellsched.cellstate.clock import RealClock
from cellsched.cellstate.errors import CellError, InvalidInputError
from cellsched.cellstate.invariants import check_store
from cellsched.cellstate.keys import CellKeys
from cellsched.cellstate.machines import add_machines
from cellsched.cellstate.model import ConflictMode, Job, JobClass, JobStatus, Machine, TaskGroup
from cellsched.cellstate.store import DEFAULT_MAX_TXN_OPS, CellStore, EventType, Get, Op, Put, StoreLimits
from cellsched.cellstate.store.memory import MemoryStore
from cellsched.cellstate.submission import submit_jobs
from cellsched.loadtests.bench_store import bench_raw
from cellsched.loadtests.etcd_process import etcd_binary
from cellsched.schedulers.core import Scheduler
from cellsched.schedulers.settings import BATCH, SchedulerSettings


class BenchmarkError(CellError):
    """A benchmark run that could not produce its measurement (refused setup, a timeout)."""


REPO_ROOT = Path(__file__).resolve().parents[1]
DATA_ENV = "CELLSCHED_SHARED_DATA"  # overrides ../shared/data, as tests/_shared_data.py does
K8S_CASE = ("SchedulingBasic", "5000Nodes_10000Pods")
K8S_TARGET_PODS_PER_S = 2500  # this project's goal for the case
POD = (100, 500, 0)  # scheduler_perf's pod-default: 100m CPU, 500 MiB
NODE = (4000, 32768, 0)  # node-default: 4 CPU, 32 GiB

# -- the Kubernetes case, from ../shared/data ------------------------------------------------


@dataclass(frozen=True)
class K8sCase:
    name: str
    nodes: int
    init_pods: int
    measure_pods: int
    threshold_pods_per_s: float  # upstream CI's minimum average throughput
    node_capacity: tuple[int, int, int]  # milli-CPU, MiB, GPUs
    pod_request: tuple[int, int, int]
    source: str  # where the numbers came from, printed beside them

    def scaled(self, factor: float) -> K8sCase:
        return K8sCase(f"{self.name} (sizes x{factor:g})", max(1, int(self.nodes * factor)),
                       max(1, int(self.init_pods * factor)), max(1, int(self.measure_pods * factor)),
                       self.threshold_pods_per_s, self.node_capacity, self.pod_request, self.source)


# Only when ../shared/data is missing: the same values, copied from cases.csv and templates.csv.
K8S_FALLBACK = K8sCase("SchedulingBasic/5000Nodes_10000Pods", 5000, 1000, 10000, 680.0, NODE, POD,
                       "built-in constants (../shared/data/k8s_scheduler_perf not found)")


def shared_data_dir() -> Path:
    override = os.environ.get(DATA_ENV)
    return Path(override) if override else REPO_ROOT.parent / "shared" / "data"


def _milli_cpu(text: str) -> int:
    text = text.strip()
    return int(text[:-1]) if text.endswith("m") else int(float(text) * 1000)


def _mib(text: str) -> int:
    text = text.strip()
    for suffix, mult in (("Gi", 1024), ("Mi", 1)):
        if text.endswith(suffix):
            return int(float(text[: -len(suffix)]) * mult)
    raise InvalidInputError(f"memory quantity {text!r}: expected Mi or Gi")


def _node_capacity(other: str) -> tuple[int, int, int]:
    """'status.capacity: pods=110 cpu=4 memory=32Gi; ...' -> (4000, 32768, 0)."""
    fields = dict(tok.split("=", 1) for tok in other.replace(";", " ").split() if "=" in tok)
    return _milli_cpu(fields["cpu"]), _mib(fields["memory"]), 0


def load_k8s_case(data_dir: Path | None = None) -> K8sCase:
    """SchedulingBasic/5000Nodes_10000Pods from cases.csv and templates.csv, or the fallback."""
    folder = (data_dir or shared_data_dir()) / "k8s_scheduler_perf"
    cases, templates = folder / "cases.csv", folder / "templates.csv"
    if not (cases.is_file() and templates.is_file()):
        return K8S_FALLBACK
    with open(cases, newline="") as f:
        row = next(r for r in csv.DictReader(f) if (r["test_case"], r["workload"]) == K8S_CASE)
    with open(templates, newline="") as f:
        tpl = {r["template"]: r for r in csv.DictReader(f)}
    node, pod = tpl[row["node_template"]], tpl[row["measure_pod_template"]]
    return K8sCase(
        f"{row['test_case']}/{row['workload']}", int(row["init_nodes"]), int(row["init_pods"]),
        int(row["measure_pods"]), float(row["threshold_pods_per_s"]), _node_capacity(node["other"]),
        (_milli_cpu(pod["cpu_request"]), _mib(pod["memory_request"]), 0),
        f"{folder / 'cases.csv'} (kubernetes commit {row['source_commit'][:12]})")


# -- backends ---------------------------------------------------------------------------------


@dataclass
class Backend:
    name: str  # memory | etcd-1 | etcd-3
    endpoints: str | None = None  # what scheduler clients connect to
    pids: list[int] = field(default_factory=list)  # the etcd members'
    memory: MemoryStore | None = None

    def connect(self) -> CellStore:
        """A new client (etcd), or the one shared embedded store (memory)."""
        if self.memory is not None:
            return self.memory
        from cellsched.cellstate.store.etcd import EtcdStore

        return EtcdStore(self.endpoints)

    def writes(self) -> int | None:
        """Keys put or deleted so far, by etcd's own counters (every member applies every write)."""
        if self.endpoints is None:
            return None
        ep = self.endpoints.split(",")[0]
        with urllib.request.urlopen(f"http://{ep}/metrics", timeout=5) as r:
            text = r.read().decode()
        return sum(int(float(line.split()[1])) for line in text.splitlines()
                   if line.startswith(("etcd_mvcc_put_total ", "etcd_mvcc_delete_total ")))

    def cpu_s(self) -> float:
        """CPU seconds (user + system) the etcd members have used so far."""
        tick = os.sysconf("SC_CLK_TCK")
        total = 0.0
        for pid in self.pids:
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            total += (int(fields[11]) + int(fields[12])) / tick
        return total


@contextmanager
def open_backend(name: str, clients: str = "leader"):
    if name == "memory":
        yield Backend(name, memory=MemoryStore(StoreLimits()))
        return
    from cellsched.loadtests.etcd_process import start_etcd_cluster

    cluster = start_etcd_cluster(int(name.split("-")[1]))
    try:
        endpoints = cluster.leader().endpoint if clients == "leader" else cluster.endpoints
        yield Backend(name, endpoints, [m.process.pid for m in cluster.members])
    finally:
        # SIGKILL, by PID: a SIGTERMed 3-member cluster spends ~5 s on its last member.
        for m in cluster.members:
            cluster.kill(m)
        cluster.stop()


def etcd_available() -> bool:
    return etcd_binary() is not None


# -- workload ---------------------------------------------------------------------------------


def make_machines(n: int, capacity: tuple[int, int, int]) -> list[Machine]:
    return [Machine(f"n{i:05d}", capacity) for i in range(n)]


def make_jobs(prefix: str, n: int, tasks: int, request: tuple[int, int, int]) -> list[Job]:
    return [Job(f"{prefix}{i:06d}", (TaskGroup("pod", tasks, request),), JobClass.BATCH) for i in range(n)]


def submit_all(store: CellStore, keys: CellKeys, jobs: list[Job]) -> None:
    out = submit_jobs(store, keys, jobs, now=time.time())
    if len(out.accepted) != len(jobs):
        raise BenchmarkError(f"submission refused {len(out.rejected)} jobs: {list(out.rejected.items())[:3]}")


def hold(store: CellStore, keys: CellKeys, jobs: list[Job], lease: int) -> None:
    """The gate: a claim on every job, bound to `lease`, written before the jobs exist."""
    value = codec.encode_obj({"owner": "bench-gate"})
    per_txn = store.limits.max_txn_ops
    for start in range(0, len(jobs), per_txn):
        store.txn([], [Put(keys.claim(j.id), value, lease) for j in jobs[start:start + per_txn]])


def verify(store: CellStore, keys: CellKeys, job_ids: list[str], expected_tasks: int) -> dict:
    rep = check_store(store, keys, job_ids)
    kvs, _ = store.get_prefix(keys.jobs_prefix)
    placed = sum(codec.decode_job(kv.key, kv.value).status is JobStatus.PLACED for kv in kvs)
    return {"check_store_ok": rep.ok, "bound_tasks": rep.bound_tasks, "jobs_placed_in_store": placed,
            "verified": rep.ok and rep.bound_tasks == expected_tasks and placed == len(job_ids),
            "violations": rep.violations[:5]}


# -- measuring --------------------------------------------------------------------------------


class QueueDrain:
    """Counts the watched jobs whose queue entry is deleted: the store's word that they are bound."""

    def __init__(self, store: CellStore, keys: CellKeys, job_ids: list[str], from_revision: int):
        self.pending = set(job_ids)
        self.keys = keys
        self._watch = store.watch(keys.queue_prefix(JobClass.BATCH), from_revision)

    def wait(self, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while self.pending:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            for ev in self._watch.get(min(left, 0.05)):
                if ev.type is EventType.DELETE:
                    self.pending.discard(self.keys.last_segment(ev.key))
        return True

    def close(self) -> None:
        self._watch.close()


def _txn_kind(success: Sequence[Op], keys: CellKeys) -> str:
    if all(type(op) is Get for op in success):
        return "read"
    if any(type(op) is Put and op.lease for op in success):
        return "claim"
    if any(type(op) is Put and op.key.startswith(keys.alloc_prefix) for op in success):
        return "commit"
    return "other"


class CountingStore(CellStore):
    """A store client that logs its txns; counts() classifies them afterwards, so the
    measured path pays one list append per txn."""

    def __init__(self, inner: CellStore, keys: CellKeys):
        self.inner, self.limits, self.keys = inner, inner.limits, keys
        self._log: list[tuple[Sequence[Op], Sequence[Op], bool, float]] = []  # list.append is atomic

    def txn(self, compares, success, failure=()):
        t0 = time.perf_counter()
        result = self.inner.txn(compares, success, failure)
        self._log.append((success, failure, result.succeeded, time.perf_counter() - t0))
        return result

    def counts(self) -> tuple[Counter, Counter, Counter]:
        """(keys written by kind, txns by kind and kind_failed, seconds spent in txns by kind)."""
        kinds = [(self.keys.alloc_prefix, "alloc"), (self.keys.jobs_prefix, "job"),
                 (self.keys.queue_prefix(), "queue"), (self.keys.claims_prefix, "claim"),
                 (self.keys.spec_prefix, "spec")]
        written, txns, wall = Counter(), Counter(), Counter()
        for success, failure, ok, secs in self._log:
            what = _txn_kind(success, self.keys)
            txns[what] += 1
            wall[what] += secs
            if not ok:
                txns[f"{what}_failed"] += 1
            for op in success if ok else failure:
                if type(op) is not Get:
                    where = next((k for p, k in kinds if op.key.startswith(p)), "other")
                    written[f"{where}_{'put' if type(op) is Put else 'delete'}"] += 1
        return written, txns, wall

    def watch(self, prefix, start_revision):
        return self.inner.watch(prefix, start_revision)

    def grant_lease(self, ttl_s):
        return self.inner.grant_lease(ttl_s)

    def refresh_lease(self, lease_id):
        self.inner.refresh_lease(lease_id)

    def revoke_lease(self, lease_id):
        self.inner.revoke_lease(lease_id)

    def compact(self, revision):
        self.inner.compact(revision)

    def close(self):
        if not isinstance(self.inner, MemoryStore):  # the embedded store is shared by every run
            self.inner.close()


def own_cpu_s() -> float:
    t = os.times()
    return t.user + t.system


# -- runners ----------------------------------------------------------------------------------


class ThreadRunner:
    """Schedulers as threads of this process, each with its own store client."""

    name = "threads"
    gate = False  # threads start at the measured phase's start, after submission
    profile_dir: str | None = None  # --profile: one cProfile dump per scheduler thread

    def __init__(self, backend: Backend, cell: str, settings: list[SchedulerSettings]):
        keys = CellKeys(cell)
        self.stores = [CountingStore(backend.connect(), keys) for _ in settings]
        self.schedulers = [Scheduler(f"{cell}-s{i}", store, keys, s, RealClock())
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
            if prof is not None:
                prof.dump_stats(str(Path(self.profile_dir) / f"{s.name}.prof"))

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
        for store in self.stores:
            store.close()
        return metrics, self._errors

    def store_counts(self) -> tuple[Counter, dict] | None:
        written, txns, wall = Counter(), Counter(), Counter()
        for store in self.stores:
            w, t, s = store.counts()
            written, txns, wall = written + w, txns + t, wall + s
        return written, dict(sorted(txns.items())) | {f"{k}_s": round(v, 2) for k, v in sorted(wall.items())}


class RayRunner:
    """Schedulers as Ray actors (schedulers.ray_actors), one process each."""

    name = "ray"
    gate = True  # the actors loop from construction

    def __init__(self, backend: Backend, cell: str, settings: list[SchedulerSettings]):
        if backend.endpoints is None:
            raise InvalidInputError("the ray runner needs an etcd backend")
        from cellsched.schedulers import ray_actors

        self.ra = ray_actors
        start_ray()
        spec = ray_actors.StoreSpec(etcd=backend.endpoints)
        self.actors = [ray_actors.start_scheduler(f"{cell}-s{i}", spec, cell, s, num_cpus=0.01)
                       for i, s in enumerate(settings)]
        ray_actors.get([a.status.remote() for a in self.actors], timeout=120)  # built and looping

    def start(self) -> None:
        pass  # the gate's revoke is the start

    def stop(self) -> tuple[list[dict], list[str]]:
        statuses = self.ra.get([a.stop.remote() for a in self.actors], timeout=120)
        for a in self.actors:
            self.ra.kill_actor(a, no_restart=True)
        return [s["metrics"] for s in statuses], [f"{s['name']}: {s['error']}" for s in statuses if s["error"]]

    def store_counts(self) -> tuple[Counter, dict] | None:
        return None  # the actors' clients are out of reach; etcd's own counters still count


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


RUNNERS = {"threads": ThreadRunner, "ray": RayRunner}


# -- one run ----------------------------------------------------------------------------------


@dataclass
class RunSpec:
    cell: str
    machines: int
    capacity: tuple[int, int, int]
    request: tuple[int, int, int]
    init_jobs: int
    measured_jobs: int
    tasks_per_job: int
    schedulers: int
    settings: SchedulerSettings
    runner: str = "threads"
    timeout_s: float = 300.0


@dataclass
class RunResult:
    spec: RunSpec
    backend: str
    tasks: int = 0
    submit_s: float = 0.0
    measured_s: float = 0.0
    completed: bool = False
    metrics: list[dict] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    store_writes: int | None = None  # etcd's own count of keys put or deleted
    written: Counter | None = None  # the same, by key kind, from the schedulers' clients (threads)
    txns: dict | None = None  # txns by kind, failures, seconds in them (threads)
    etcd_cpu_s: float = 0.0  # CPU the etcd members used in the measured phase
    bench_cpu_s: float = 0.0  # CPU this process used (all the schedulers', with threads)
    check: dict = field(default_factory=dict)

    @property
    def tasks_per_s(self) -> float:
        return self.tasks / self.measured_s if self.completed and self.measured_s > 0 else 0.0

    def total(self, metric: str) -> float:
        return sum(m.get(metric) or 0 for m in self.metrics)

    @property
    def conflict_fraction(self) -> float:
        """Omega's: conflicted claims per successful txn."""
        ok_txns = self.total("txns") - self.total("failed_txns")
        return self.total("conflicted_claims") / ok_txns if ok_txns else 0.0

    @property
    def failed_txn_fraction(self) -> float:
        txns = self.total("txns")
        return self.total("failed_txns") / txns if txns else 0.0

    @property
    def keys_per_task(self) -> float | None:
        total = self.store_writes
        if total is None and self.written is not None:
            total = sum(self.written.values())
        return total / self.tasks if total is not None and self.tasks else None


def run_phase(backend: Backend, admin: CellStore, keys: CellKeys, spec: RunSpec, jobs: list[Job]) -> RunResult:
    """Submit `jobs`, then time fresh schedulers placing them until the store holds them all bound."""
    res = RunResult(spec, backend.name, tasks=sum(j.task_count for j in jobs))
    # Distinct seeds, so parallel schedulers do not probe the same machines in the same order.
    settings = [spec.settings.with_(seed=spec.settings.seed + i) for i in range(spec.schedulers)]
    runner = RUNNERS[spec.runner](backend, spec.cell, settings)
    drain = None
    try:
        lease = admin.grant_lease(3600) if runner.gate else 0
        from_rev = admin.current_revision() + 1
        t0 = time.perf_counter()
        if runner.gate:
            hold(admin, keys, jobs, lease)
        submit_all(admin, keys, jobs)
        res.submit_s = time.perf_counter() - t0
        if runner.gate:  # the actors are out of reach: watch the queue empty instead
            drain = QueueDrain(admin, keys, [j.id for j in jobs], from_rev)
        writes0, etcd_cpu0, own_cpu0 = backend.writes(), backend.cpu_s(), own_cpu_s()
        t0 = time.perf_counter()
        if runner.gate:
            admin.revoke_lease(lease)  # frees every held job in one revision
        runner.start()
        res.completed = drain.wait(spec.timeout_s) if drain else runner.wait_placed(res.tasks, spec.timeout_s)
        res.measured_s = time.perf_counter() - t0
        res.etcd_cpu_s, res.bench_cpu_s = backend.cpu_s() - etcd_cpu0, own_cpu_s() - own_cpu0
        writes1 = backend.writes()
    finally:
        if drain is not None:
            drain.close()
        res.metrics, res.errors = runner.stop()
    counts = runner.store_counts()
    if counts is not None:
        res.written, res.txns = counts
    if writes0 is not None:  # the gate's claims, deleted by the revoke, are the benchmark's
        res.store_writes = writes1 - writes0 - (len(jobs) if runner.gate else 0)
    return res


def run_once(backend: Backend, spec: RunSpec) -> RunResult:
    """A fresh cell: machines, initial jobs placed (not measured), then the measured jobs."""
    admin = backend.connect()
    keys = CellKeys(spec.cell)
    add_machines(admin, keys, make_machines(spec.machines, spec.capacity))
    init = make_jobs("i", spec.init_jobs, spec.tasks_per_job, spec.request)
    measured = make_jobs("m", spec.measured_jobs, spec.tasks_per_job, spec.request)
    if init:
        pre = run_phase(backend, admin, keys, spec, init)
        if not pre.completed:
            raise BenchmarkError(f"{spec.cell}: initial jobs not placed in {spec.timeout_s}s: {pre.errors}")
    res = run_phase(backend, admin, keys, spec, measured)
    res.check = verify(admin, keys, [j.id for j in init + measured],
                       (spec.init_jobs + spec.measured_jobs) * spec.tasks_per_job)
    if backend.memory is None:
        admin.close()
    return res


def row(r: RunResult) -> dict:
    s = r.spec.settings
    return {
        "backend": r.backend, "runner": r.spec.runner, "schedulers": r.spec.schedulers,
        "conflict_mode": s.conflict_mode.value, "policy": s.policy_name, "claim_batch": s.claim_batch,
        "txns_in_flight": s.txns_in_flight, "tasks": r.tasks, "completed": r.completed,
        "submit_s": round(r.submit_s, 3),
        "submit_jobs_per_s": round(r.spec.measured_jobs / r.submit_s, 1) if r.submit_s else None,
        "measured_s": round(r.measured_s, 3), "tasks_per_s": round(r.tasks_per_s, 1),
        "conflict_fraction": round(r.conflict_fraction, 4), "failed_txn_fraction": round(r.failed_txn_fraction, 4),
        "commit_txns": int(r.total("txns")), "recommitted_claims": int(r.total("recommitted_claims")),
        "jobs_parked": int(r.total("jobs_parked")),
        "busyness_mean": round(sum(m["busyness"] for m in r.metrics) / len(r.metrics), 3) if r.metrics else 0.0,
        "etcd_cpu_s": round(r.etcd_cpu_s, 2), "bench_process_cpu_s": round(r.bench_cpu_s, 2),
        "keys_written_per_pod": None if r.keys_per_task is None else round(r.keys_per_task, 3),
        "keys_written_per_pod_by_kind": None if r.written is None else
        {k: round(v / r.tasks, 3) for k, v in sorted(r.written.items())},
        "store_txns": r.txns, "errors": r.errors, **r.check,
    }


# -- cases ------------------------------------------------------------------------------------


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
                           policy_name=args.policy, idle_poll_s=0.01)
    for runner in ["threads", "ray"] if args.runner == "both" else [args.runner]:
        with open_backend(backend_name, args.clients) as backend:
            if args.raw_seconds > 0 and backend.memory is None:
                raw_txn, raw_keys = bench_raw(backend.connect, 4, args.raw_seconds)
                out["raw_txn_per_s"], out["raw_batched_keys_per_s"] = round(raw_txn, 1), round(raw_keys, 1)
            spec = RunSpec(f"k8s-{runner}", case.nodes, case.node_capacity, case.pod_request, case.init_pods,
                           case.measure_pods, 1, args.schedulers, settings, runner)
            r = run_once(backend, spec)
            out["runs"].append(row(r))
            print(f"  k8s {runner}: {r.tasks_per_s:.0f} pods/s", file=sys.stderr, flush=True)
    for r in out["runs"]:
        if r["keys_written_per_pod"] and out.get("raw_batched_keys_per_s"):
            r["keys_per_s_vs_raw_ceiling"] = round(
                r["keys_written_per_pod"] * r["tasks_per_s"] / out["raw_batched_keys_per_s"], 3)
    best = max(out["runs"], key=lambda r: r["tasks_per_s"])
    out["k8s_basic_pods_per_s"], out["best_runner"] = best["tasks_per_s"], best["runner"]
    return out


def scaling_case(args) -> dict:
    backends, counts = ["memory", "etcd-1", "etcd-3"], [1, 2, 4, 8]
    machines, jobs, tasks = args.scaling_machines, args.scaling_jobs, args.scaling_tasks
    if args.quick:
        backends, counts, machines, jobs, tasks = ["memory", "etcd-1"], [1, 2], 50, 40, 5
    rows, skipped = [], []
    for b in backends:
        if b != "memory" and not etcd_available():
            skipped.append(f"{b}: etcd is not installed")
            continue
        with open_backend(b, args.clients) as backend:
            for mode in (ConflictMode.RESOURCE_FIT, ConflictMode.SEQUENCE):
                for n in counts:
                    settings = BATCH.with_(conflict_mode=mode, idle_poll_s=0.01)
                    spec = RunSpec(f"sc-{b}-{mode.value.replace('_', '')}-{n}", machines, NODE, POD, 0, jobs,
                                   tasks, n, settings)
                    r = run_once(backend, spec)
                    rows.append(row(r))
                    print(f"  scaling {b:7} {mode.value:12} n={n}: {r.tasks_per_s:8.0f} tasks/s, "
                          f"conflict fraction {r.conflict_fraction:.3f}", file=sys.stderr, flush=True)
    return {"workload": f"{jobs} jobs x {tasks} tasks of 100m/500Mi on {machines} machines of 4 CPU/32Gi, "
                        f"BATCH preset (claim_batch {BATCH.claim_batch}, {BATCH.policy_name}), threads",
            "rows": rows, "skipped": skipped}


# -- output -----------------------------------------------------------------------------------


def print_tables(result: dict) -> None:
    if "k8s" in result:
        k = result["k8s"]
        print(f"\n== k8s scheduler_perf {k['case']} through {k['backend']} (clients: {k['clients']}) ==")
        print(f"   {k['nodes']} nodes of {k['node_capacity'][0]}m/{k['node_capacity'][1]}Mi; "
              f"{k['init_pods']} initial pods (placed first, not measured); "
              f"{k['measure_pods']} measured single-pod jobs of {k['pod_request'][0]}m/{k['pod_request'][1]}Mi")
        print(f"   source: {k['source']}")
        if k.get("note"):
            print(f"   note: {k['note']}")
        if "raw_txn_per_s" in k:
            print(f"   store ceiling, same cluster: {k['raw_txn_per_s']:.0f} one-put txn/s, "
                  f"{k['raw_batched_keys_per_s']:.0f} keys/s in 100-put txns (4 callers)")
        _table(("runner", "schedulers", "claim_batch", "txns_in_flight", "policy", "submit_s", "measured_s",
                "tasks_per_s", "commit_txns", "failed_txn_fraction", "etcd_cpu_s", "bench_process_cpu_s",
                "keys_written_per_pod", "verified"), k["runs"])
        for r in k["runs"]:
            if r["keys_written_per_pod_by_kind"]:
                print(f"   keys written per pod ({r['runner']}): " + ", ".join(
                    f"{kind} {v}" for kind, v in r["keys_written_per_pod_by_kind"].items()))
            if r["store_txns"]:
                print(f"   store txns ({r['runner']}): " + ", ".join(f"{a} {b}" for a, b in r["store_txns"].items()))
        print(f"   k8s_basic_pods_per_s = {k['k8s_basic_pods_per_s']:.0f} ({k['best_runner']})   "
              f"upstream minimum {k['upstream_min_pods_per_s']:.0f}   target {k['target_pods_per_s']}")
    if "scaling" in result:
        s = result["scaling"]
        rows = s["rows"]
        print(f"\n== scaling: {s['workload']} ==")
        for line in s["skipped"]:
            print(f"   skipped {line}")
        _pivot("tasks/s", rows, "tasks_per_s", "{:.0f}")
        _pivot("conflict fraction (conflicted claims per successful txn)", rows, "conflict_fraction", "{:.3f}")
        _pivot("failed txn fraction", rows, "failed_txn_fraction", "{:.3f}")
        print()
        _table(("backend", "conflict_mode", "schedulers", "tasks_per_s", "conflict_fraction", "failed_txn_fraction",
                "recommitted_claims", "jobs_parked", "busyness_mean", "keys_written_per_pod", "verified"), rows)


def _pivot(title: str, rows: list[dict], metric: str, fmt: str) -> None:
    cols = sorted({(r["backend"], r["conflict_mode"]) for r in rows},
                  key=lambda c: (["memory", "etcd-1", "etcd-3"].index(c[0]), c[1] != "resource_fit"))
    counts = sorted({r["schedulers"] for r in rows})
    table = {(r["backend"], r["conflict_mode"], r["schedulers"]): r[metric] for r in rows}
    header = ("schedulers", *(f"{b}/{m}" for b, m in cols))
    print(f"\n   {title}")
    _table(header, [{"schedulers": n, **{f"{b}/{m}": fmt.format(table[(b, m, n)]) for b, m in cols}}
                    for n in counts])


def _table(header: Sequence[str], rows: list[dict]) -> None:
    cells = [[str(r.get(h, "")) for h in header] for r in rows]
    widths = [max([len(h), *(len(c[i]) for c in cells)]) for i, h in enumerate(header)]
    print("  ".join(h.rjust(w) for h, w in zip(header, widths, strict=True)))
    for c in cells:
        print("  ".join(v.rjust(w) for v, w in zip(c, widths, strict=True)))


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--case", choices=["k8s", "scaling", "all"], default="all")
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
    k8s.add_argument("--k8s-backend", choices=["etcd-3", "etcd-1", "memory"], default="etcd-3")
    k8s.add_argument("--raw-seconds", type=float, default=1.0,
                     help="seconds per raw store phase measured before the run (0: skip)")
    sc = ap.add_argument_group("scaling case")
    sc.add_argument("--scaling-machines", type=int, default=1000)
    sc.add_argument("--scaling-jobs", type=int, default=1000)
    sc.add_argument("--scaling-tasks", type=int, default=10, help="tasks per job")
    tune = ap.add_argument_group("this process")
    tune.add_argument("--gc-threshold", type=int, default=50_000,
                      help="gc.set_threshold(N, 10, 10), as the scheduler actors set it (0: Python's default, 700)")
    tune.add_argument("--profile", metavar="DIR", help="cProfile every scheduler thread into DIR/<name>.prof")
    args = ap.parse_args(argv)
    if args.quick:
        args.raw_seconds = min(args.raw_seconds, 0.2)
    if args.gc_threshold:
        gc.set_threshold(args.gc_threshold, 10, 10)
    if args.profile:
        Path(args.profile).mkdir(parents=True, exist_ok=True)
        ThreadRunner.profile_dir = args.profile

    result: dict = {"cpus": os.cpu_count(), "max_txn_ops": DEFAULT_MAX_TXN_OPS, "quick": args.quick,
                    "gc_threshold": gc.get_threshold()[0]}
    try:
        if args.case in ("k8s", "all"):
            result["k8s"] = k8s_case(args)
            result["k8s_basic_pods_per_s"] = result["k8s"]["k8s_basic_pods_per_s"]
            result["k8s_upstream_min_pods_per_s"] = result["k8s"]["upstream_min_pods_per_s"]
        if args.case in ("scaling", "all"):
            result["scaling"] = scaling_case(args)
    finally:
        stop_ray()
    print_tables(result)
    if args.json:
        print(json.dumps(result))
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
