"""Trace replay: a workload (machines + timed job arrivals) and the driver that plays it.

The Google 2011 window shows almost none of the long-running work that loaded the real
cell, so a replay that used every live machine would run a nearly empty cell. Instead the
machine set is a seeded subset sized so that the *peak offered CPU* (the most CPU that
submitted, not-yet-finished tasks ask for at any instant, per the trace's runtimes) is
`target_peak` of its capacity. Time is compressed by a stated factor: submit offsets
and task runtimes are both divided by it.

The driver submits jobs at their (compressed) times and, standing in for the machines'
agents, reports tasks finished after their (compressed) runtimes, releasing resources.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from cellsched.cellstate import codec
from cellsched.cellstate.errors import StoreUnavailableError
from cellsched.cellstate.keys import CellKeys
from cellsched.cellstate.lifecycle import release_tasks
from cellsched.cellstate.model import (
    Job,
    JobClass,
    JobStatus,
    Machine,
    TaskGroup,
    TransactionMode,
    group_of_task,
    job_of_task,
)
from cellsched.cellstate.resources import TRACE_SCALE
from cellsched.cellstate.store import CellStore, Get
from cellsched.cellstate.submission import SubmitResult, submit_jobs
from cellsched.cellstate.views import job_records
from cellsched.loadtests.traces.google2011 import (
    first_task_event_time,
    group_jobs,
    live_machines_at,
    read_task_attempts,
)
from cellsched.loadtests.traces.to_model import trace_job, trace_machine

GPU_MODEL = "h100"


@dataclass
class Workload:
    machines: list[Machine]
    arrivals: list[tuple[float, Job]]  # (seconds after start, job), sorted
    compression: float  # trace seconds per replay second
    description: str
    peak_offered_cpu: float = 0.0  # fraction of the machine set's CPU

    @property
    def jobs(self) -> list[Job]:
        return [j for _, j in self.arrivals]


def peak_offered(attempts, end_us: int) -> int:
    """Most CPU requested at once by submitted, unfinished tasks (trace runtimes)."""
    deltas = []
    for a in attempts:
        start = a.submit_time_us
        stop = start + int(a.runtime_s * 1e6) if a.runtime_s is not None else end_us
        deltas += [(start, a.cpu), (stop, -a.cpu)]
    deltas.sort()
    cur = peak = 0
    for _, d in deltas:
        cur += d
        peak = max(peak, cur)
    return peak


def gpu_machines(n: int) -> list[Machine]:
    """Synthetic 8-GPU machines in the trace's normalised units (1.0 CPU, 1.0 memory)."""
    return [Machine(f"gpu{i:03d}", (TRACE_SCALE, TRACE_SCALE, 8), {"gpu.model": GPU_MODEL}) for i in range(n)]


def gpu_jobs(n: int, rng: random.Random, horizon_s: float) -> list[tuple[float, Job]]:
    """Synthetic distributed-training gangs: 1-4 workers of 2, 4 or 8 GPUs each."""
    out = []
    for i in range(n):
        gpus = rng.choice([2, 4, 8])
        workers = rng.randint(1, 4)
        group = TaskGroup("worker", workers, (TRACE_SCALE // 10, TRACE_SCALE // 10, gpus),
                          {"gpu.model": GPU_MODEL}, duration_s=rng.uniform(5, 20))
        job = Job(f"gpu-train-{i}", (group,), JobClass.GPU, 9, TransactionMode.ALL_OR_NOTHING)
        out.append((rng.uniform(0, horizon_s * 0.8), job))
    return out


def google_workload(trace_dir: Path, horizon_s: float = 40.0, target_peak: float = 0.9, seed: int = 1,
                    max_jobs: int | None = None, n_gpu_machines: int = 8, n_gpu_jobs: int = 12,
                    first_wave_only: bool = False) -> Workload:
    """Replay waves as jobs. `first_wave_only` keeps one wave per trace job (its first
    submission), which gives one replay job per trace job; `max_jobs` then takes waves
    evenly spaced over the whole window (so a slice draws from every trace part)."""
    rng = random.Random(seed)
    t0 = first_task_event_time(trace_dir)
    attempts = read_task_attempts(trace_dir)
    waves = group_jobs(attempts)
    if first_wave_only:
        waves = [w for w in waves if w.wave == 0]
    if max_jobs is not None and max_jobs < len(waves):
        step = len(waves) / max_jobs
        waves = [waves[int(k * step)] for k in range(max_jobs)]
    used_attempts = [a for w in waves for a in w.attempts]
    end_us = max(a.submit_time_us for a in used_attempts) + 1
    span_s = max(1.0, (end_us - t0) / 1e6)
    compression = span_s / horizon_s
    peak = peak_offered(used_attempts, end_us)
    live = live_machines_at(trace_dir, t0)
    rng.shuffle(live)
    chosen, cap = [], 0
    for m in live:
        if cap * target_peak >= peak:
            break
        chosen.append(m)
        cap += m.cpu
    machines = [trace_machine(m) for m in chosen] + gpu_machines(n_gpu_machines)
    arrivals = []
    for w in waves:
        job = trace_job(w)
        if job is None:
            continue
        groups = tuple(TaskGroup(g.name, g.count, g.request, g.labels, g.different_machines,
                                 None if g.duration_s is None else g.duration_s / compression)
                       for g in job.groups)
        job = Job(job.id, groups, job.job_class, job.priority, job.mode)
        arrivals.append(((w.submit_time_us - t0) / 1e6 / compression, job))
    arrivals += gpu_jobs(n_gpu_jobs, rng, horizon_s)
    arrivals.sort(key=lambda a: a[0])
    desc = (f"{len(arrivals)} jobs ({sum(j.task_count for _, j in arrivals)} tasks) on {len(chosen)} trace "
            f"machines of {len(live)} + {n_gpu_machines} GPU machines; time compressed {compression:.0f}x")
    return Workload(machines, arrivals, compression, desc, peak / cap if cap else 0.0)


@dataclass
class ReplayProgress:
    submitted: int = 0
    placed_jobs: int = 0
    parked_jobs: int = 0
    bound_tasks: int = 0
    finished_tasks: int = 0
    cpu_used: int = 0
    cpu_capacity: int = 0
    elapsed_s: float = 0.0


@dataclass
class ReplayDriver:
    store: CellStore
    keys: CellKeys
    workload: Workload
    scan_every_s: float = 0.5
    releases: dict[str, float] = field(default_factory=dict)  # task -> release time
    progress: ReplayProgress = field(default_factory=ReplayProgress)
    # Remembered across scans: a housekeeper may purge finished jobs from the store.
    placed_ids: set[str] = field(default_factory=set)
    done_per_job: dict[str, int] = field(default_factory=dict)
    # What submission accepted and refused: "every accepted job is accounted for" is
    # checked against `accepted`, not against the workload.
    accepted: list[str] = field(default_factory=list)
    rejected: dict[str, str] = field(default_factory=dict)  # job id -> why
    # How jobs are submitted: into the store (cellstate.submission.submit_jobs) unless given,
    # e.g. over HTTP to the REST API (cellsched/demo_api.py). Raises StoreUnavailableError
    # when the outcome is unknown, so the same jobs are sent again.
    submit: Callable[[list[Job], float], SubmitResult] | None = None

    def run(self, until_s: float, on_progress: Callable[[ReplayProgress], None] | None = None,
            progress_every_s: float = 2.0, settle: bool = True) -> ReplayProgress:
        """Play arrivals and releases until `until_s`, or (settle=True) earlier once every
        job is placed or parked and no release is due."""
        start = time.time()
        pending = list(self.workload.arrivals)
        durations = {j.id: [g.duration_s for g in j.groups] for _, j in pending}
        last_progress = 0.0
        in_doubt: set[str] = set()  # sent in a submission that raised StoreUnavailableError
        while True:
            now = time.time()
            t = now - start
            due = [j for off, j in pending if off <= t]
            if due:
                try:
                    submitted = (self.submit(due, now) if self.submit is not None
                                 else submit_jobs(self.store, self.keys, due, now=now))
                except StoreUnavailableError:
                    # Part of it may be written; submit the same jobs again on the next round.
                    in_doubt.update(j.id for j in due)
                else:
                    pending = pending[len(due):]
                    self.progress.submitted += len(due)
                    self.accepted += submitted.accepted
                    for jid, why in submitted.rejected.items():
                        if jid in in_doubt:  # our own earlier write, whose ack was lost
                            self.accepted.append(jid)
                        else:
                            self.rejected[jid] = why
            try:
                self._scan(now, durations)
                self._release_due(now)
            except StoreUnavailableError:
                pass
            self.progress.elapsed_s = t
            if on_progress and t - last_progress >= progress_every_s:
                on_progress(self.progress)
                last_progress = t
            quiet = not pending and self.progress.placed_jobs + self.progress.parked_jobs >= self.progress.submitted
            if t >= until_s or (settle and quiet and not any(v <= now + 1 for v in self.releases.values())
                                and t > 1):
                return self.progress
            time.sleep(self.scan_every_s)

    def _scan(self, now: float, durations: dict[str, list[float | None]]) -> None:
        reads = self.store.txn([], [Get(self.keys.jobs_prefix, prefix=True),
                                    Get(self.keys.alloc_prefix, prefix=True),
                                    Get(self.keys.bind_root, prefix=True)]).reads
        p = self.progress
        p.parked_jobs = p.bound_tasks = 0
        for rec in job_records(reads[0], reads[2]):
            if rec.status in (JobStatus.PLACED, JobStatus.FINISHED):
                self.placed_ids.add(rec.job.id)
            elif rec.status is JobStatus.PARKED:
                p.parked_jobs += 1
            p.bound_tasks += len(rec.bound)
            self.done_per_job[rec.job.id] = len(rec.done)
            for tid, _ in rec.bound.items():
                if tid not in self.releases:
                    g = group_of_task(tid)
                    d = durations.get(rec.job.id, [None] * (g + 1))[g]
                    self.releases[tid] = now + d if d is not None else float("inf")
        p.placed_jobs = len(self.placed_ids)
        p.finished_tasks = sum(self.done_per_job.values())
        p.cpu_used = sum(codec.decode_alloc(kv.key, kv.value).used[0] for kv in reads[1])
        # The workload's machines are the cell; their capacity does not change in a replay.
        p.cpu_capacity = sum(m.capacity[0] for m in self.workload.machines)

    def _release_due(self, now: float) -> None:
        due: dict[str, list[str]] = {}
        for tid, at in self.releases.items():
            if at <= now:
                due.setdefault(job_of_task(tid), []).append(tid)
        for jid, tids in due.items():
            release_tasks(self.store, self.keys, jid, tids, now=now)
            for tid in tids:
                self.releases[tid] = float("inf")  # released; never again
