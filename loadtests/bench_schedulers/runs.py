"""One run: a fresh cell, its initial jobs placed (not measured), then the measured phase,
and the row of the JSON report that describes it."""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field

from cellsched.cellstate.keys import CellKeys
from cellsched.cellstate.machines import add_machines
from cellsched.cellstate.model import Job
from cellsched.cellstate.store import CellStore
from cellsched.schedulers.settings import SchedulerSettings

from .backends import Backend
from .measuring import QueueDrain, own_cpu_s, wait_settled
from .runners import RUNNERS, ThreadRunner
from .workload import BenchmarkError, hold, make_jobs, make_machines, submit_all, verify


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
    homes: bool = True  # give the N schedulers disjoint homes (gpu/home.py); False: all pick from the whole cell
    traced_jobs: bool = False  # jobs carry a traceparent (workload.make_jobs)


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
    bytes_written: int | None = None  # keys and values put, keys deleted, by the schedulers' clients (threads)
    etcd_cpu_s: float = 0.0  # CPU the etcd members used in the measured phase
    bench_cpu_s: float = 0.0  # CPU this process used (all the schedulers', with threads)
    store_host_cpu_s: float = 0.0  # CPU the memory store's Ray actor used (memory on Ray only)
    scheduler_actors_cpu_s: float | None = None  # CPU the scheduler actors used (Ray runs only)
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
    # Distinct seeds, so parallel schedulers do not probe the same machines in the same order;
    # and, unless turned off, disjoint homes, so their commits touch disjoint machines.
    homes = spec.schedulers if spec.homes else 1
    settings = [spec.settings.with_(seed=spec.settings.seed + i, home=i % homes, homes=homes)
                for i in range(spec.schedulers)]
    runner = RUNNERS[spec.runner](backend, spec.cell, settings)
    drain = None
    try:
        lease = admin.grant_lease(3600) if runner.gate else 0
        from_rev = admin.current_revision() + 1
        t0 = time.perf_counter()
        if runner.gate:
            hold(admin, keys, jobs, lease)
        submit_all(admin, keys, jobs, gated=runner.gate)
        res.submit_s = time.perf_counter() - t0
        if runner.gate:  # the actors are out of reach: watch the queue empty instead
            drain = QueueDrain(admin, keys, [j.id for j in jobs], from_rev)
        writes0, etcd_cpu0, own_cpu0 = backend.writes(), backend.cpu_s(), own_cpu_s()
        host_cpu0, actors_cpu0 = backend.host_cpu_s(), runner.cpu_s()
        t0 = time.perf_counter()
        if runner.gate:
            admin.revoke_lease(lease)  # frees every held job in one revision
        runner.start()
        if drain is not None:
            res.completed = drain.wait(spec.timeout_s)
        elif isinstance(runner, ThreadRunner):  # the only runner without a gate
            res.completed = runner.wait_placed(res.tasks, spec.timeout_s)
        # ... and no queue or claim key of the measured jobs is left (the earlier phases left none)
        res.completed = res.completed and wait_settled(admin, keys, spec.timeout_s)
        res.measured_s = time.perf_counter() - t0
        res.etcd_cpu_s, res.bench_cpu_s = backend.cpu_s() - etcd_cpu0, own_cpu_s() - own_cpu0
        res.store_host_cpu_s = backend.host_cpu_s() - host_cpu0
        actors_cpu1 = runner.cpu_s()
        if actors_cpu0 is not None and actors_cpu1 is not None:
            res.scheduler_actors_cpu_s = actors_cpu1 - actors_cpu0
        writes1 = backend.writes()
    finally:
        if drain is not None:
            drain.close()
        res.metrics, res.errors = runner.stop()
    counts = runner.store_counts()
    if counts is not None:
        res.written, res.txns, res.bytes_written = counts
    if writes0 is not None and writes1 is not None:  # the gate's claim key, deleted by the revoke, is the benchmark's
        res.store_writes = writes1 - writes0 - (1 if runner.gate else 0)
    return res


def run_once(backend: Backend, spec: RunSpec) -> RunResult:
    """A fresh cell: machines, initial jobs placed (not measured), then the measured jobs."""
    admin = backend.connect()
    keys = CellKeys(spec.cell)
    add_machines(admin, keys, make_machines(spec.machines, spec.capacity))
    init = make_jobs("i", spec.init_jobs, spec.tasks_per_job, spec.request, spec.traced_jobs)
    measured = make_jobs("m", spec.measured_jobs, spec.tasks_per_job, spec.request, spec.traced_jobs)
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
        "conflict_mode": s.conflict_mode.value, "policy": s.policy_name,
        "homes_on": r.spec.homes, "homes": r.spec.schedulers if r.spec.homes else 1, "claim_batch": s.claim_batch, "batch_alike": s.batch_alike,
        "txns_in_flight": s.txns_in_flight, "tasks": r.tasks, "completed": r.completed,
        "submit_s": round(r.submit_s, 3),
        "submit_jobs_per_s": round(r.spec.measured_jobs / r.submit_s, 1) if r.submit_s else None,
        "measured_s": round(r.measured_s, 3), "tasks_per_s": round(r.tasks_per_s, 1),
        "conflict_fraction": round(r.conflict_fraction, 4), "failed_txn_fraction": round(r.failed_txn_fraction, 4),
        "commit_txns": int(r.total("txns")), "recommitted_claims": int(r.total("recommitted_claims")),
        "jobs_parked": int(r.total("jobs_parked")),
        "busyness_mean": round(sum(m["busyness"] for m in r.metrics) / len(r.metrics), 3) if r.metrics else 0.0,
        "etcd_cpu_s": round(r.etcd_cpu_s, 2), "bench_process_cpu_s": round(r.bench_cpu_s, 2),
        "store_host_cpu_s": round(r.store_host_cpu_s, 2),
        "scheduler_actors_cpu_s": None if r.scheduler_actors_cpu_s is None else round(r.scheduler_actors_cpu_s, 2),
        "keys_written_per_pod": None if r.keys_per_task is None else round(r.keys_per_task, 3),
        "keys_written_per_pod_by_kind": None if r.written is None else
        {k: round(v / r.tasks, 3) for k, v in sorted(r.written.items())},
        "bytes_written_per_pod": None if r.bytes_written is None or not r.tasks else round(r.bytes_written / r.tasks, 1),
        "store_txns": r.txns, "errors": r.errors, **r.check,
    }
