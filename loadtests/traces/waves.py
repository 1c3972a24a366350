"""Jobs for a replay: a trace job's task attempts grouped into submission waves, each
one Job of the cell's model (loadtests/traces/to_model.py turns them into Jobs)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from cellsched.cellstate.model import MAX_TASKS_PER_JOB

from .records import TaskAttempt, is_service

# SUBMIT rows of one job cluster tightly: on the two real parts, windows of 10 ms and
# 100 ms give 19,953 and 19,950 waves, while 1 ms splits batches (25,697) and 1 s merges
# separate resubmissions (14,638). 100 ms sits on that plateau.
DEFAULT_WAVE_WINDOW_US = 100_000


@dataclass(frozen=True, slots=True)
class TraceTaskGroup:
    """Attempts of one wave with the same shape: a replay's TaskGroup, count = len(attempts).

    Runtimes differ task by task; the replay chooses how to map them onto its groups.
    """

    cpu: int
    memory: int
    different_machines: bool
    attempts: tuple[TaskAttempt, ...]

    @property
    def count(self) -> int:
        return len(self.attempts)


@dataclass(frozen=True, slots=True)
class TraceJob:
    """One submission wave of a trace job: what a replay submits as one Job."""

    job_id: int
    wave: int  # 0, 1, ... per trace job, in time order
    submit_time_us: int  # the wave's first SUBMIT
    priority: int
    scheduling_class: int
    attempts: tuple[TaskAttempt, ...]

    @property
    def name(self) -> str:
        """A store-safe id, unique per wave."""
        return f"g{self.job_id}.w{self.wave}"

    @property
    def is_service(self) -> bool:
        return is_service(self.priority, self.scheduling_class)

    def groups(self) -> tuple[TraceTaskGroup, ...]:
        """Attempts grouped by (cpu, memory, different machines), in first-seen order."""
        shapes: dict[tuple[int, int, bool], list[TaskAttempt]] = {}
        for a in self.attempts:
            shapes.setdefault((a.cpu, a.memory, a.different_machines), []).append(a)
        return tuple(TraceTaskGroup(*shape, tuple(group)) for shape, group in shapes.items())


def group_jobs(attempts: Iterable[TaskAttempt], window_us: int = DEFAULT_WAVE_WINDOW_US) -> list[TraceJob]:
    """Group attempts into submission waves, sorted by (submit time, job id, wave).

    A wave is the SUBMITs of one job, with one priority and scheduling class (the model's
    Job has one of each), that fall within `window_us` of the wave's first SUBMIT. A wave
    also closes before a task would appear twice (two attempts of one task never run
    together) and at the model's MAX_TASKS_PER_JOB. The window bounds how much earlier a
    replay submits a task than the trace did.
    """
    open_waves: dict[tuple[int, int, int], list[TaskAttempt]] = {}
    indices: dict[tuple[int, int, int], set[int]] = {}
    closed: list[list[TaskAttempt]] = []
    for a in sorted(attempts, key=lambda a: a.submit_time_us):
        key = (a.job_id, a.priority, a.scheduling_class)
        wave = open_waves.get(key)
        if (
            wave is None
            or a.submit_time_us - wave[0].submit_time_us > window_us
            or a.index in indices[key]
            or len(wave) >= MAX_TASKS_PER_JOB
        ):
            if wave is not None:
                closed.append(wave)
            wave = open_waves[key] = []
            indices[key] = set()
        wave.append(a)
        indices[key].add(a.index)
    closed.extend(open_waves.values())
    closed.sort(key=lambda w: (w[0].submit_time_us, w[0].job_id))
    numbering: dict[int, int] = {}
    jobs = []
    for wave in closed:
        first = wave[0]
        number = numbering.get(first.job_id, 0)
        numbering[first.job_id] = number + 1
        jobs.append(
            TraceJob(
                first.job_id,
                number,
                first.submit_time_us,
                first.priority,
                first.scheduling_class,
                tuple(wave),
            )
        )
    return jobs
