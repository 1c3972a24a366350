"""A deterministic discrete-event driver: several schedulers, one MemoryStore, a SimClock.

The schedulers run the same code as in production (``Scheduler.prepare``/``complete``
and the same decision pipeline); only time is simulated. As in Omega's simulator
(§4), a scheduler reads the cell when it starts deciding and commits ``think`` seconds
later, so schedulers that decide concurrently conflict the way real ones do.

Events, in time order, ties in the order they were scheduled:
    arrive   a job is submitted; idle schedulers of its class wake
    wake     an idle scheduler tries to start an attempt (prepare)
    commit   a busy scheduler's think time is over (complete); it wakes again at once
    release  tasks with a duration finish; every idle scheduler wakes (capacity freed)

Nothing here reads the wall clock or an unseeded random source, and every collection
that is iterated is ordered, so a run is a pure function of (cell, workload, settings,
seed): the determinism tests compare whole task -> machine maps across runs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from cellsched.cellstate.clock import SimClock
from cellsched.cellstate.keys import CellKeys
from cellsched.cellstate.lifecycle import release_tasks
from cellsched.cellstate.machines import add_machines
from cellsched.cellstate.model import Job, JobClass, Machine, TaskGroup, TransactionMode, group_of_task
from cellsched.cellstate.store import StoreLimits
from cellsched.cellstate.store.memory import MemoryStore
from cellsched.cellstate.submission import submit_jobs

from .attempts import Attempt
from .core import Scheduler
from .decide import DecideFn
from .settings import SchedulerSettings


@dataclass(frozen=True, slots=True)
class Arrival:
    at: float
    job: Job


@dataclass
class SimulationResult:
    placements: dict[str, str]  # task id -> machine id, as first bound
    placed_at: dict[str, float]  # job id -> when it became fully placed
    unplaced: list[str]  # accepted jobs not fully placed when the run ended
    metrics: dict[str, dict]  # scheduler name -> Scheduler.metrics()
    end_time: float
    events: int


@dataclass
class _State:
    busy: bool = False
    token: int = 0  # a wake carrying an older token is stale and ignored


@dataclass
class Simulation:
    store: MemoryStore
    keys: CellKeys
    clock: SimClock
    schedulers: Sequence[Scheduler]
    arrivals: Sequence[Arrival] = ()
    _states: dict[str, _State] = field(default_factory=dict)
    _jobs: dict[str, Job] = field(default_factory=dict)
    _accepted: list[str] = field(default_factory=list)
    _placements: dict[str, str] = field(default_factory=dict)
    _placed_at: dict[str, float] = field(default_factory=dict)
    _arrived: int = 0

    def run(self, until: float) -> SimulationResult:
        """Run until every job is placed and nothing is in flight, or until `until`."""
        self._states = {s.name: _State() for s in self.schedulers}
        by_name = {s.name: s for s in self.schedulers}
        for a in sorted(self.arrivals, key=lambda a: a.at):  # stable: equal times keep workload order
            self.clock.push_timer(a.at, ("arrive", a))
        for s in self.schedulers:
            self._wake(s, self.clock.now())
        events = 0
        while not self._finished():
            ev = self.clock.pop_due()
            if ev is None or ev[0] > until:
                break
            events += 1
            item = ev[1]
            kind = item[0]
            if kind == "arrive":
                self._arrive(item[1])
            elif kind == "wake":
                self._on_wake(by_name[item[1]], item[2])
            elif kind == "commit":
                self._on_commit(by_name[item[1]], item[2])
            else:
                self._release(item[1], item[2])
        placed = set(self._placed_at)
        return SimulationResult(
            placements=dict(self._placements), placed_at=dict(self._placed_at),
            unplaced=[j for j in self._accepted if j not in placed],
            metrics={s.name: s.metrics() for s in self.schedulers},
            end_time=min(self.clock.now(), until), events=events)

    # -- events -----------------------------------------------------------------------

    def _finished(self) -> bool:
        return (self._arrived == len(self.arrivals)
                and not any(st.busy for st in self._states.values())
                and len(self._placed_at) == len(self._accepted))

    def _arrive(self, arrival: Arrival) -> None:
        self._arrived += 1
        result = submit_jobs(self.store, self.keys, [arrival.job], now=self.clock.now())
        for jid in result.accepted:
            self._jobs[jid] = arrival.job
            self._accepted.append(jid)
        for s in self.schedulers:
            if s.settings.job_class is arrival.job.job_class:
                self._wake(s, self.clock.now())

    def _wake(self, s: Scheduler, at: float) -> None:
        st = self._states[s.name]
        if st.busy:
            return
        st.token += 1
        self.clock.push_timer(at, ("wake", s.name, st.token))

    def _on_wake(self, s: Scheduler, token: int) -> None:
        st = self._states[s.name]
        if st.busy or token != st.token:
            return
        attempt = s.prepare()
        if attempt is None:  # idle: look again later (parked jobs retry on a period)
            self._wake(s, self.clock.now() + s.settings.idle_poll_s)
            return
        st.busy = True
        self.clock.push_timer(self.clock.now() + attempt.think_s, ("commit", s.name, attempt))

    def _on_commit(self, s: Scheduler, attempt: Attempt) -> None:
        out = s.complete(attempt)
        self._states[s.name].busy = False
        now = self.clock.now()
        releases: dict[tuple[str, float], list[str]] = {}
        for c in out.committed:
            self._placements.setdefault(c.task_id, c.machine_id)
            group = self._jobs[c.job_id].groups[group_of_task(c.task_id)]
            if group.duration_s is not None:
                releases.setdefault((c.job_id, now + group.duration_s), []).append(c.task_id)
        for (jid, at), tids in releases.items():
            self.clock.push_timer(at, ("release", jid, tuple(tids)))
        for jid in out.placed:
            self._placed_at.setdefault(jid, now)
        self._wake(s, now)

    def _release(self, job_id: str, task_ids: tuple[str, ...]) -> None:
        release_tasks(self.store, self.keys, job_id, task_ids, self.clock.now())
        for s in self.schedulers:
            self._wake(s, self.clock.now())


def build_simulation(machines: Sequence[Machine], schedulers: Sequence[tuple[str, SchedulerSettings]],
                     arrivals: Sequence[Arrival], seed: int = 0, limits: StoreLimits | None = None,
                     decide_fn: DecideFn | None = None, cell: str = "sim") -> Simulation:
    """A fresh simulated cell: store, clock, machines and schedulers seeded with `seed`."""
    clock = SimClock()
    store = MemoryStore(limits or StoreLimits(), clock=clock)
    keys = CellKeys(cell)
    add_machines(store, keys, list(machines))
    scheds = [Scheduler(name, store, keys, st.with_(seed=seed), clock, decide_fn) for name, st in schedulers]
    return Simulation(store, keys, clock, scheds, list(arrivals))


def synthetic_workload(seed: int, n_jobs: int, job_class: JobClass = JobClass.BATCH,
                       mean_interarrival_s: float = 0.5, max_tasks: int = 8,
                       cpu: tuple[int, int] = (250, 2000), mem: tuple[int, int] = (256, 4096),
                       duration_s: tuple[float, float] | None = (5.0, 60.0), gang_fraction: float = 0.0,
                       prefix: str = "job") -> list[Arrival]:
    """Poisson arrivals of jobs with uniform task counts, requests and durations (seeded)."""
    rng = np.random.default_rng(seed)
    t = 0.0
    out = []
    for i in range(n_jobs):
        t += float(rng.exponential(mean_interarrival_s))
        count = int(rng.integers(1, max_tasks + 1))
        request = (int(rng.integers(cpu[0], cpu[1] + 1)), int(rng.integers(mem[0], mem[1] + 1)), 0)
        duration = float(rng.uniform(*duration_s)) if duration_s else None
        gang = bool(rng.random() < gang_fraction)
        mode = TransactionMode.ALL_OR_NOTHING if gang else TransactionMode.INCREMENTAL
        job = Job(f"{prefix}-{i:05d}", (TaskGroup("main", count, request, duration_s=duration),), job_class,
                  int(rng.integers(0, 12)), mode)
        out.append(Arrival(t, job))
    return out


__all__ = ["Arrival", "Simulation", "SimulationResult", "build_simulation", "synthetic_workload"]
