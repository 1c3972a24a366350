"""Pydantic models for machines, the node side (heartbeats, task reports) and the cell summary."""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel, Field

from cellsched.cellstate.job_states import TaskState
from cellsched.cellstate.model import JobStatus, Machine, MachineState

from .models_jobs import ID_PATTERN, Int, Labels, Resources, ResourcesOut, Strict

MAX_MACHINES_PER_REQUEST = 1000
MAX_HEARTBEAT_TTL_S = 300


class MachineIn(Strict):
    id: str = Field(pattern=ID_PATTERN)
    capacity: Resources
    labels: Labels = Field(default_factory=dict)


class MachinesIn(Strict):
    machines: list[MachineIn] = Field(min_length=1, max_length=MAX_MACHINES_PER_REQUEST)

    def to_machines(self) -> list[Machine]:
        return [Machine(m.id, m.capacity.vector(), dict(m.labels)) for m in self.machines]


class MachineOut(BaseModel):
    id: str
    state: MachineState
    state_by: str
    capacity: ResourcesOut
    used: ResourcesOut
    tasks: int
    labels: dict[str, str]
    alive: bool = Field(description="its agent's liveness key exists (a heartbeat within its lease)")


class MachineList(BaseModel):
    items: list[MachineOut]
    next_cursor: str | None = None


class MachineChange(BaseModel):
    id: str
    state: MachineState | None = Field(None, description="null once removed")
    revision: int


class MachinesAdded(BaseModel):
    added: list[str]
    revision: int


class HeartbeatIn(Strict):
    lease_id: Int | None = Field(None, ge=1, le=2**63 - 1, description="the lease of the last heartbeat; "
                                 "omit on the first one")
    ttl_s: Int = Field(10, ge=1, le=MAX_HEARTBEAT_TTL_S)


class HeartbeatOut(BaseModel):
    machine: str
    lease_id: int = Field(description="send it back with the next heartbeat")
    renewed: bool = Field(description="false when a new lease was granted (first beat, or the old one expired)")
    ttl_s: int


class ReportedState(StrEnum):
    RUNNING = "running"
    FINISHED = "finished"
    FAILED = "failed"


class TaskReportIn(Strict):
    state: ReportedState
    machine: str | None = Field(None, pattern=ID_PATTERN,
                                description="where the task runs; when given, a report naming another machine "
                                            "is refused (a stale agent)")


class TaskReportOut(BaseModel):
    task: str
    task_state: TaskState
    job_status: JobStatus
    revision: int


class QueueLengths(BaseModel):
    pending: int
    parked: int


class MachineCounts(BaseModel):
    total: int
    up: int
    draining: int
    down: int


class SchedulersAlive(BaseModel):
    in_process: int = Field(description="scheduler loops this API process hosts that are running")
    holding_claims: int = Field(description="distinct schedulers holding a live claim in the store")


class CellSummary(BaseModel):
    cell: str
    revision: int
    machines: MachineCounts
    capacity: ResourcesOut
    used: ResourcesOut
    queues: dict[str, QueueLengths]
    schedulers: SchedulersAlive


class Health(BaseModel):
    status: str
    revision: int | None = None
    detail: str = ""
