"""The Google 2011 trace's records as the reader (google2011.py) yields them: machine
events, live machines and task attempts, with the trace's event codes."""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum


class MachineEventType(IntEnum):
    ADD = 0
    REMOVE = 1
    UPDATE = 2


class TaskEventType(IntEnum):
    SUBMIT = 0
    SCHEDULE = 1
    EVICT = 2
    FAIL = 3
    FINISH = 4
    KILL = 5
    LOST = 6
    UPDATE_PENDING = 7
    UPDATE_RUNNING = 8


def is_service(priority: int, scheduling_class: int) -> bool:
    """The Omega paper's split: production priority and a latency-sensitive class."""
    return priority >= 9 and scheduling_class >= 2


@dataclass(frozen=True, slots=True)
class MachineEvent:
    """One machine_events row. cpu/memory are None where the trace leaves them blank."""

    time_us: int
    machine_id: str
    kind: MachineEventType
    platform: str
    cpu: int | None
    memory: int | None


@dataclass(frozen=True, slots=True)
class TraceMachine:
    id: str
    cpu: int
    memory: int
    platform: str


@dataclass(frozen=True, slots=True)
class TaskAttempt:
    job_id: int
    index: int
    attempt: int
    submit_time_us: int
    cpu: int
    memory: int
    priority: int
    scheduling_class: int
    different_machines: bool
    runtime_s: float | None

    @property
    def is_service(self) -> bool:
        return is_service(self.priority, self.scheduling_class)
