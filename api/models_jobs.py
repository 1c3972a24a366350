"""Pydantic models for jobs: what a client writes (the API body and job files alike) and reads.

Every field has bounds, so a bad body is a 422 naming the field before anything touches
the store. `JobIn.to_job` maps the human form onto cellstate.model.Job, whose own
checks then run too (a second line, never the first).
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    WithJsonSchema,
    field_validator,
    model_validator,
)
from pydantic_core import to_json

from cellsched.cellstate import codec
from cellsched.cellstate import resources as res
from cellsched.cellstate.errors import InvalidInputError
from cellsched.cellstate.model import (
    GPU_MODEL_LABEL,
    MAX_GROUPS_PER_JOB,
    MAX_LABELS,
    MAX_TASKS_PER_JOB,
    PRIORITY_MAX,
    PRIORITY_MIN,
    Job,
    JobClass,
    JobRecord,
    JobStatus,
    TaskGroup,
    TransactionMode,
)

from . import units

ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$"
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$"
LABEL_KEY_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,62}$"
# The strings the unit parsers take within their bounds (api/units.py), for the OpenAPI
# document: cores with up to 3 decimals or whole milli-CPU; memory with an optional suffix.
CPU_PATTERN = r"^([0-9]{1,6}(\.[0-9]{1,3})?|[0-9]{1,9}m)$"
MEMORY_PATTERN = r"^[0-9]{1,6}(\.[0-9]{1,3})?(Ki|Mi|Gi|Ti|K|k|M|G|T)?$"
MAX_BULK_JOBS = 1000
MAX_FAILURES_LIMIT = 10_000


def _quantity_schema(pattern: str, most: int, example: str) -> WithJsonSchema:
    """A string in units, or a bare number (cores; MiB) up to the parser's bound."""
    return WithJsonSchema({"anyOf": [{"type": "string", "pattern": pattern},
                                     {"type": "number", "minimum": 0, "maximum": most}],
                           "examples": [example]})


Int = Annotated[int, BeforeValidator(units.no_bool)]
Cpu = Annotated[int, BeforeValidator(units.cpu_milli), _quantity_schema(CPU_PATTERN, units.MAX_CPU_MILLI // 1000, "500m")]
Memory = Annotated[int, BeforeValidator(units.memory_mib), _quantity_schema(MEMORY_PATTERN, units.MAX_MEMORY_MIB, "2Gi")]
Gpus = Annotated[int, BeforeValidator(units.gpus),
                 WithJsonSchema({"type": "integer", "minimum": 0, "maximum": units.MAX_GPUS})]
Labels = Annotated[dict[Annotated[str, Field(pattern=LABEL_KEY_PATTERN)], Annotated[str, Field(max_length=63)]],
                   Field(max_length=MAX_LABELS),
                   # Pydantic's own schema leaves keys outside its patternProperties allowed.
                   WithJsonSchema({"type": "object", "maxProperties": MAX_LABELS,
                                   "propertyNames": {"pattern": LABEL_KEY_PATTERN},
                                   "additionalProperties": {"type": "string", "maxLength": 63}})]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", str_max_length=256, populate_by_name=True)


class Resources(Strict):
    """A request or a capacity in human units: cpu in cores or milli-CPU ("500m"), memory
    in Ki/Mi/Gi/Ti or K/M/G/T (a bare number is MiB), gpu whole. A task group's request
    must be non-zero in some dimension."""

    # The document says "at least one of them"; "non-zero" it cannot say for quantity strings.
    model_config = ConfigDict(extra="forbid", json_schema_extra={
        "anyOf": [{"required": ["cpu"]}, {"required": ["memory"]}, {"required": ["gpu"]}]})

    cpu: Cpu = 0
    memory: Memory = 0
    gpu: Gpus = 0

    @model_validator(mode="after")
    def _names_a_resource(self) -> Resources:
        if not self.model_fields_set:
            raise InvalidInputError("give at least one of cpu, memory, gpu")
        return self

    def vector(self) -> res.Vector:
        return (self.cpu, self.memory, self.gpu)


# Non-zero spellings of the same quantities, so the document can say what a request needs:
# some dimension above zero (leading zeros allowed, bounds as above).
_NONZERO_NUMBER = r"(0{0,5}[1-9][0-9]{0,5}(\.[0-9]{1,3})?|0{0,6}\.([1-9][0-9]{0,2}|0[1-9][0-9]?|00[1-9]))"
CPU_NONZERO = rf"^({_NONZERO_NUMBER}|0{{0,8}}[1-9][0-9]{{0,8}}m)$"
MEMORY_NONZERO = rf"^{_NONZERO_NUMBER}(Ki|Mi|Gi|Ti|K|k|M|G|T)?$"


def _some(name: str, pattern: str, most: int) -> dict:
    return {"required": [name], "properties": {name: {"anyOf": [
        {"type": "string", "pattern": pattern}, {"type": "number", "exclusiveMinimum": 0, "maximum": most}]}}}


class Request(Resources):
    """A task's request: Resources with some dimension above zero."""

    model_config = ConfigDict(json_schema_extra={"anyOf": [
        _some("cpu", CPU_NONZERO, units.MAX_CPU_MILLI // 1000), _some("memory", MEMORY_NONZERO, units.MAX_MEMORY_MIB),
        {"required": ["gpu"], "properties": {"gpu": {"type": "integer", "minimum": 1}}}]})

    @model_validator(mode="after")
    def _above_zero(self) -> Request:
        if not any(self.vector()):
            raise InvalidInputError("a task must request some cpu, memory or gpu")
        return self


class ResourcesOut(BaseModel):
    """Base units: cpu in milli-CPU, memory in MiB, gpu whole; `human` is the same in units."""

    cpu: int
    memory: int
    gpu: int
    human: dict[str, str]

    @classmethod
    def of(cls, v: res.Vector) -> ResourcesOut:
        cpu, mem, gpu = v
        return cls(cpu=cpu, memory=mem, gpu=gpu,
                   human={"cpu": units.format_cpu(cpu), "memory": units.format_memory(mem), "gpu": str(gpu)})


class JobMode(StrEnum):
    INCREMENTAL = "incremental"  # place what fits now, the rest later
    GANG = "gang"  # every task or none (all-or-nothing, one txn)


class TaskGroupIn(Strict):
    name: str = Field(pattern=NAME_PATTERN, description="unique within the job")
    count: Int = Field(1, ge=1, le=MAX_TASKS_PER_JOB)
    resources: Request
    labels: Labels = Field(default_factory=dict, description="labels a machine must carry (constraints)")
    gpu_models: list[Annotated[str, Field(pattern=NAME_PATTERN)]] = Field(
        default_factory=list, max_length=16, description="GPU models accepted; empty: any")
    different_machines: bool = Field(False, strict=True, description="no two tasks of this group on one machine")

    @model_validator(mode="after")
    def _one_gpu_spelling(self) -> TaskGroupIn:
        if self.gpu_models and GPU_MODEL_LABEL in self.labels:
            raise InvalidInputError(f"give gpu_models or the label {GPU_MODEL_LABEL!r}, not both")
        return self

    def to_group(self) -> TaskGroup:
        labels = dict(self.labels)
        if self.gpu_models:
            labels[GPU_MODEL_LABEL] = ",".join(self.gpu_models)
        return TaskGroup(self.name, self.count, self.resources.vector(), labels, self.different_machines)


class JobIn(Strict):
    """One job: task groups, class, priority, gang or incremental."""

    id: str | None = Field(None, pattern=ID_PATTERN, description="omit to let the API name it")
    job_class: JobClass = Field(JobClass.BATCH, alias="class")
    priority: Int = Field(0, ge=PRIORITY_MIN, le=PRIORITY_MAX)
    mode: JobMode = JobMode.INCREMENTAL
    max_failures: Int = Field(3, ge=0, le=MAX_FAILURES_LIMIT)
    groups: list[TaskGroupIn] = Field(min_length=1, max_length=MAX_GROUPS_PER_JOB)

    @field_validator("groups")
    @classmethod
    def _groups_are_consistent(cls, groups: list[TaskGroupIn]) -> list[TaskGroupIn]:
        names = [g.name for g in groups]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise InvalidInputError(f"task group names must be unique; repeated: {dup}")
        total = sum(g.count for g in groups)
        if total > MAX_TASKS_PER_JOB:
            raise InvalidInputError(f"{total} tasks in all; a job holds at most {MAX_TASKS_PER_JOB}")
        return groups

    def to_job(self, job_id: str, traceparent: str | None = None, groups: tuple[TaskGroup, ...] | None = None) -> Job:
        """`traceparent` given here, not replaced after: Job's own checks then run once.
        `groups`: this spec's groups already built (GroupsMemo), else built here."""
        mode = TransactionMode.ALL_OR_NOTHING if self.mode is JobMode.GANG else TransactionMode.INCREMENTAL
        return Job(job_id, groups if groups is not None else tuple(g.to_group() for g in self.groups),
                   self.job_class, self.priority, mode, traceparent=traceparent, max_failures=self.max_failures)


class GroupsMemo:
    """For one bulk: each distinct spelling of a job's task groups built into TaskGroups (their
    own checks included) and encoded (codec.encode_groups) once, not once per job: the jobs of
    a bulk mostly repeat a few shapes. The TaskGroups are shared by those jobs (frozen; their
    label dicts are read, never changed). Bounded by the body: at most one entry per job."""

    def __init__(self) -> None:
        self._built: dict[tuple, tuple[tuple[TaskGroup, ...], bytes]] = {}

    def groups(self, spec: JobIn) -> tuple[tuple[TaskGroup, ...], bytes]:
        key = tuple((g.name, g.count, g.resources.cpu, g.resources.memory, g.resources.gpu, tuple(g.labels.items()),
                     tuple(g.gpu_models), g.different_machines) for g in spec.groups)
        got = self._built.get(key)
        if got is None:
            built = tuple(g.to_group() for g in spec.groups)
            got = self._built[key] = (built, codec.encode_groups(built))
        return got


class BulkIn(Strict):
    jobs: list[JobIn] = Field(min_length=1, max_length=MAX_BULK_JOBS)


class TaskCounts(BaseModel):
    total: int
    bound: int
    done: int


class GroupOut(BaseModel):
    name: str
    count: int
    request: ResourcesOut
    labels: dict[str, str]
    different_machines: bool


class JobOut(BaseModel):
    id: str
    job_class: JobClass = Field(serialization_alias="class")
    priority: int
    mode: JobMode
    status: JobStatus
    reason: str
    tasks: TaskCounts
    groups: list[GroupOut]
    submitted_at: float
    first_attempt_at: float | None
    placed_at: float | None
    finished_at: float | None
    failures: int
    bindings: dict[str, str] | None = Field(None, description="task id -> machine, for jobs of up to 64 tasks")

    @classmethod
    def of(cls, rec: JobRecord) -> JobOut:
        job = rec.job
        bound, done = (len(rec.bound), len(rec.done)) if rec.loaded else rec.shard_counts
        return cls(id=job.id, job_class=job.job_class, priority=job.priority,
                   mode=JobMode.GANG if job.mode is TransactionMode.ALL_OR_NOTHING else JobMode.INCREMENTAL,
                   status=rec.status, reason=rec.reason, tasks=TaskCounts(total=job.task_count, bound=bound, done=done),
                   groups=[GroupOut(name=g.name, count=g.count, request=ResourcesOut.of(g.request), labels=g.labels,
                                    different_machines=g.different_machines) for g in job.groups],
                   submitted_at=rec.submitted_at, first_attempt_at=rec.first_attempt_at, placed_at=rec.placed_at,
                   finished_at=rec.finished_at, failures=rec.failures,
                   bindings=dict(rec.bound) if rec.loaded and job.task_count <= 64 else None)


def job_out_json(rec: JobRecord) -> bytes:
    """JobOut.of(rec).model_dump_json(by_alias=True), the same bytes, without building and
    validating the six models of a two-group job: a submission's 201 answers with what it
    has just written (docs/architecture.md, "The REST API"; tests/test_api_job_out.py
    compares the two)."""
    job = rec.job
    bound, done = (len(rec.bound), len(rec.done)) if rec.loaded else rec.shard_counts
    groups = []
    for g in job.groups:
        cpu, mem, gpu = g.request
        groups.append({"name": g.name, "count": g.count,
                       "request": {"cpu": cpu, "memory": mem, "gpu": gpu,
                                   "human": {"cpu": units.format_cpu(cpu), "memory": units.format_memory(mem),
                                             "gpu": str(gpu)}},
                       "labels": g.labels, "different_machines": g.different_machines})
    return to_json({
        "id": job.id, "class": job.job_class.value, "priority": job.priority,
        "mode": (JobMode.GANG if job.mode is TransactionMode.ALL_OR_NOTHING else JobMode.INCREMENTAL).value,
        "status": rec.status.value, "reason": rec.reason,
        "tasks": {"total": job.task_count, "bound": bound, "done": done}, "groups": groups,
        "submitted_at": rec.submitted_at, "first_attempt_at": rec.first_attempt_at, "placed_at": rec.placed_at,
        "finished_at": rec.finished_at, "failures": rec.failures,
        "bindings": dict(rec.bound) if rec.loaded and job.task_count <= 64 else None})


class JobList(BaseModel):
    items: list[JobOut]
    next_cursor: str | None = Field(None, description="pass as `cursor` for the next page; null at the end")


class BulkOutcome(BaseModel):
    index: int
    id: str
    created: bool
    reason: str = ""


class BulkOut(BaseModel):
    created: int
    refused: int
    results: list[BulkOutcome]
    revision: int


class CancelOut(BaseModel):
    id: str
    status: JobStatus
    already_cancelled: bool
    released_tasks: int
    revision: int


class Explanation(BaseModel):
    """Why a job stands where it stands, from what its record carries (written with the
    park or placement it describes)."""

    id: str
    status: JobStatus
    reason: str
    refusal: dict[str, Any] | None = Field(None, description="the structured reason the scheduler stored")
    unplaceable_groups: list[dict[str, Any]] = Field(
        default_factory=list, description="per group left short: machines evaluated, rejected per filter or resource, "
                                          "and the closest machines (every filter but the resources passes; the "
                                          "most of the request covered) with their free room")
    tasks: TaskCounts
    failures: int
    first_attempt_at: float | None
    placed_at: float | None
    attempts: int = Field(description="scheduling attempts so far, by every scheduler that held the job")
    conflicts: list[dict[str, Any]] = Field(
        default_factory=list, description="the last 10 refused claims, newest last: when (at), machine, "
                                          "and the structured reason (kind, resource, requested, free, ...)")
    not_recorded: list[str] = Field(description="what the explanation cannot say: not kept on the job record yet")
