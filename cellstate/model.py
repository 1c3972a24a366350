"""The cell's data model: machines, jobs with task groups, allocation records, claims.

Plain dataclasses with validation at construction, so bad input is refused before it
can reach the store. Enums, not strings, for every mode.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from enum import Enum

from . import resources as res
from .errors import InvalidInputError, InvalidJobError, InvalidResourceError

_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")
_IDS = re.compile(r"(?:[A-Za-z0-9][A-Za-z0-9._:-]{0,127}\n)*[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")  # newline-joined ids
_LABEL_KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,62}$")

# Limits that keep one job record well inside etcd's 1.5 MiB request limit.
MAX_TASKS_PER_JOB = 20_000
MAX_GROUPS_PER_JOB = 64
MAX_LABELS = 32
PRIORITY_MIN, PRIORITY_MAX = 0, 11  # Google's scale; 9-11 are production
# The machine label naming its GPU model; a task group's `gpu.model` label lists the
# models it accepts, comma-separated ("A100,H100").
GPU_MODEL_LABEL = "gpu.model"


class MachineState(Enum):
    UP = "up"
    DRAINING = "draining"  # keeps its tasks, takes no new ones
    DOWN = "down"  # its tasks must be rescheduled


_STATES = {s.value: s for s in MachineState}


class JobClass(Enum):
    BATCH = "batch"
    SERVICE = "service"
    GPU = "gpu"


class ConflictMode(Enum):
    """Omega §5.2 conflict detection."""

    SEQUENCE = "sequence"  # any change to a touched machine since the snapshot conflicts
    RESOURCE_FIT = "resource_fit"  # conflict only if the claim no longer fits


class TransactionMode(Enum):
    INCREMENTAL = "incremental"  # commit every claim that fits
    ALL_OR_NOTHING = "all_or_nothing"  # gang: every claim of the job or none


class JobStatus(Enum):
    PENDING = "pending"  # in the queue, waiting for a scheduler (possibly claimed)
    PARKED = "parked"  # in the queue, tried and could not be placed now; has a reason
    PLACED = "placed"  # every task bound
    FINISHED = "finished"  # done; resources released
    FAILED = "failed"  # more task failures than its retry policy allows; not rescheduled
    CANCELLED = "cancelled"


TERMINAL_STATUSES = frozenset({JobStatus.FINISHED, JobStatus.FAILED, JobStatus.CANCELLED})


class TaskOutcome(Enum):
    """Why a task leaves its machine."""

    FINISHED = "finished"  # ran to completion
    FAILED = "failed"  # the task failed: rescheduled while the job's retry policy allows
    EVICTED = "evicted"  # its machine died or is draining: rescheduled, not held against the job


def check_id(kind: str, value: object) -> str:
    if not isinstance(value, str) or not _ID.match(value):
        raise InvalidJobError(
            f"{kind} id {value!r} must be 1-128 characters of letters, digits, '.', '_', ':' or '-'"
        )
    return value


# (key, value) label pairs that passed check_labels. A cell's machines share few distinct
# pairs (zones, racks, architectures), and a snapshot of 100,000 machines validates each
# machine's labels again: a set lookup per pair instead of a regex. Bounded: cleared when full.
_GOOD_LABELS: set[tuple[str, str]] = set()
_GOOD_LABELS_MAX = 65_536


def check_labels(where: str, labels: Mapping[str, str] | None) -> dict[str, str]:
    labels = dict(labels or {})
    if len(labels) > MAX_LABELS:
        raise InvalidJobError(f"{where}: at most {MAX_LABELS} labels")
    good = _GOOD_LABELS
    for pair in labels.items():
        k, v = pair
        if type(k) is str and type(v) is str and pair in good:  # types first: a list is unhashable
            continue
        if not isinstance(k, str) or not _LABEL_KEY.match(k):
            raise InvalidJobError(f"{where}: bad label key {k!r}")
        if not isinstance(v, str) or len(v) > 63:
            raise InvalidJobError(f"{where}: label {k!r} must be a string of at most 63 characters")
        if type(k) is str and type(v) is str:  # plain strings only: a subclass may compare otherwise
            if len(good) >= _GOOD_LABELS_MAX:
                good.clear()
            good.add(pair)
    return labels


@dataclass(frozen=True, slots=True)
class Machine:
    id: str
    capacity: res.Vector
    labels: dict[str, str] = field(default_factory=dict)
    state: MachineState = MachineState.UP
    # Who set `state`: "monitor" (liveness; it may undo its own DOWN), "operator", or "" (unknown).
    state_by: str = ""

    def __post_init__(self) -> None:
        check_id("machine", self.id)
        if self.state_by not in ("", "monitor", "operator"):
            raise InvalidInputError(f"machine {self.id}: state_by {self.state_by!r} is not monitor or operator")
        object.__setattr__(self, "capacity", res.check_vector(self.capacity, f"machine {self.id}.capacity"))
        object.__setattr__(self, "labels", check_labels(f"machine {self.id}", self.labels))

    @property
    def schedulable(self) -> bool:
        return self.state is MachineState.UP


_MACHINE_SLOTS = tuple(Machine.__dict__[f].__set__ for f in ("id", "capacity", "labels", "state", "state_by"))
_STATE_BY = frozenset({"", "monitor", "operator"})


def machines_checked_in_bulk(fields: list[tuple]) -> list[Machine] | None:
    """Machines from (id, capacity, labels, state value, state_by) tuples as decoded from
    the store, validated together instead of one __post_init__ each: one regex over every
    id, the remembered label pairs, plain type checks. A 100,000-machine snapshot spends a
    third of its decode in per-machine validation otherwise. None when any field is not as
    Machine() would accept it: the caller then builds them one by one, so the error names
    the record."""
    ids = [f[0] for f in fields]
    if not all(type(i) is str for i in ids):
        return None
    joined = "\n".join(ids)
    if ids and (joined.count("\n") != len(ids) - 1 or not _IDS.fullmatch(joined)):  # no id holds a newline
        return None
    states = _STATES
    new, (set_id, set_cap, set_labels, set_state, set_by) = object.__new__, _MACHINE_SLOTS
    out = []
    for mid, cap, labels, state, by in fields:
        st = states.get(state) if type(state) is str else None
        if st is None or type(by) is not str or by not in _STATE_BY or type(labels) is not dict:
            return None
        try:
            cap = res.check_vector(cap, "")  # the fast path for a well-formed tuple
            labels = check_labels(f"machine {mid}", labels)
        except InvalidInputError:
            return None
        m = new(Machine)
        set_id(m, mid)
        set_cap(m, cap)
        set_labels(m, labels)
        set_state(m, st)
        set_by(m, by)
        out.append(m)
    return out


@dataclass(frozen=True, slots=True)
class TaskGroup:
    """`count` identical tasks. Constraints: required labels, and different-machines."""

    name: str
    count: int
    request: res.Vector
    labels: dict[str, str] = field(default_factory=dict)
    different_machines: bool = False
    duration_s: float | None = None  # for replays: release this long after placement

    def __post_init__(self) -> None:
        if not isinstance(self.count, int) or isinstance(self.count, bool) or self.count < 1:
            raise InvalidJobError(f"task group {self.name!r}: count must be a positive integer, got {self.count!r}")
        object.__setattr__(self, "request", res.check_vector(self.request, f"task group {self.name!r}.request"))
        if not any(self.request):
            raise InvalidResourceError(f"task group {self.name!r}.request: a task must request some resource")
        object.__setattr__(self, "labels", check_labels(f"task group {self.name!r}", self.labels))


@dataclass(frozen=True, slots=True)
class Job:
    id: str
    groups: tuple[TaskGroup, ...]
    job_class: JobClass = JobClass.BATCH
    priority: int = 0
    mode: TransactionMode = TransactionMode.INCREMENTAL
    traceparent: str | None = None
    max_failures: int = 3  # task failures tolerated (rescheduled) before the job fails
    # sum of the groups' counts, worked out once: commits and chunking ask for it per claim
    _task_count: int = field(default=0, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        check_id("job", self.id)
        if not isinstance(self.max_failures, int) or isinstance(self.max_failures, bool) or self.max_failures < 0:
            raise InvalidJobError(f"job {self.id}: max_failures must be a non-negative integer")
        object.__setattr__(self, "groups", tuple(self.groups))
        if not self.groups:
            raise InvalidJobError(f"job {self.id}: a job needs at least one task group")
        if len(self.groups) > MAX_GROUPS_PER_JOB:
            raise InvalidJobError(f"job {self.id}: at most {MAX_GROUPS_PER_JOB} task groups")
        total = sum(g.count for g in self.groups)
        object.__setattr__(self, "_task_count", total)
        if total > MAX_TASKS_PER_JOB:
            raise InvalidJobError(f"job {self.id}: {total} tasks exceeds the limit of {MAX_TASKS_PER_JOB}")
        if not (PRIORITY_MIN <= self.priority <= PRIORITY_MAX) or isinstance(self.priority, bool):
            raise InvalidJobError(f"job {self.id}: priority must be in {PRIORITY_MIN}..{PRIORITY_MAX}")

    @property
    def task_count(self) -> int:
        return self._task_count

    def tasks(self) -> Iterator[tuple[str, int, TaskGroup]]:
        """(task id, group index, group) for every task, in a stable order."""
        for gi, g in enumerate(self.groups):
            for i in range(g.count):
                yield task_id(self.id, gi, i), gi, g


def submission_seq(now: float) -> str:
    """The queue's order within a priority: microseconds since the epoch, fixed width."""
    return f"{max(0, int(now * 1_000_000)):017d}"


def task_id(job_id: str, group_index: int, index: int) -> str:
    return f"{job_id}/{group_index}/{index}"


# The one parser of task ids (`job/group/index`; a job id has no "/"): nothing else splits them.
def job_of_task(tid: str) -> str:
    return tid.rsplit("/", 2)[0]  # hot (every Claim derives its job), so no validation here


def parse_task_id(tid: str) -> tuple[str, int, int] | None:
    """(job id, group index, index) of a task id, or None when it is not one."""
    parts = tid.rsplit("/", 2)
    if len(parts) != 3 or not parts[1].isdigit() or not parts[2].isdigit():
        return None
    return parts[0], int(parts[1]), int(parts[2])


def group_of_task(tid: str) -> int:
    """The group index of a task id; InvalidInputError when it is not one."""
    parsed = parse_task_id(tid)
    if parsed is None:
        raise InvalidInputError(f"not a task id (job/group/index): {tid!r}")
    return parsed[1]


@dataclass(slots=True)
class JobRecord:
    """What the store holds for a job: its spec plus where it stands."""

    job: Job
    status: JobStatus = JobStatus.PENDING
    bound: dict[str, str] = field(default_factory=dict)  # task id -> machine id, while it holds resources
    done: set[str] = field(default_factory=set)  # tasks that finished and released their resources
    reason: str = ""  # why it is parked, or how it ended
    submitted_at: float = 0.0
    first_attempt_at: float | None = None
    placed_at: float | None = None
    finished_at: float | None = None
    failures: int = 0  # task failures so far, against job.max_failures
    queue_seq: str = ""  # submission sequence: orders the queue first come, first served
    refusal: dict | None = None  # the structured reason beside `reason` (validation.Refusal.to_obj or counts)
    # Sharded jobs (cellstate.shards): the next shard number, the (bound, done) counts the
    # stored record carries, which shard holds each task, and whether bound/done were read.
    next_shard: int = 0
    shard_counts: tuple[int, int] = (0, 0)
    shard_of: dict[str, int] = field(default_factory=dict)
    loaded: bool = True
    # What the schedulers tried, for the explanation (api/, GET /v1/jobs/{id}/explanation):
    # {"attempts": n, "conflicts": [the last 10, each {"at", "machine", "kind", ...}]}. Written
    # only with a placement or park write (schedulers/history.py), never by a write of its own;
    # None while there is nothing to say beyond a first attempt without conflicts.
    history: dict | None = None
    # The id of the queue segment that holds this PENDING job (cellstate/queue_segments.py: one
    # queue entry for the jobs of one submission txn); "" when its queue entry is its own.
    segment: str = ""

    def unbound_tasks(self) -> list[tuple[str, int, TaskGroup]]:
        return [t for t in self.job.tasks() if t[0] not in self.bound and t[0] not in self.done]

    @property
    def fully_bound(self) -> bool:
        return len(self.bound) + len(self.done) >= self.job.task_count

    def copy(self) -> JobRecord:
        return JobRecord(self.job, self.status, dict(self.bound), set(self.done), self.reason, self.submitted_at,
                         self.first_attempt_at, self.placed_at, self.finished_at, self.failures, self.queue_seq,
                         self.refusal, self.next_shard, self.shard_counts, dict(self.shard_of), self.loaded,
                         self.history, self.segment)


@dataclass(slots=True)
class AllocationRecord:
    """One per machine: the used vector and every task bound there with its request.

    Its key's mod_revision is the machine's sequence number for conflict detection.
    """

    used: res.Vector = res.ZERO
    tasks: dict[str, res.Vector] = field(default_factory=dict)
    # The codec's encoded form of `tasks`, kept by codec.alloc_with_tasks so a commit
    # encodes only the tasks it adds; None means "not known, encode from tasks".
    encoded_tasks: str | None = field(default=None, compare=False, repr=False)

    def with_tasks(self, added: Mapping[str, res.Vector]) -> AllocationRecord:
        tasks = self.tasks.copy()
        tasks.update(added)
        if len(added) == 1:  # the common case of a commit: one task more on a machine
            (req,) = added.values()
            return AllocationRecord(tuple(map(operator.add, self.used, req)), tasks)
        return AllocationRecord(tuple(map(sum, zip(self.used, *added.values(), strict=True))), tasks)

    def without_tasks(self, removed: list[str]) -> AllocationRecord:
        used = list(self.used)
        tasks = dict(self.tasks)
        for tid in removed:
            req = tasks.pop(tid, None)
            if req is not None:
                for k, r in enumerate(req):
                    used[k] -= r
        return AllocationRecord(tuple(used), tasks)


@dataclass(frozen=True, slots=True)
class Claim:
    """One task placed on one machine in a plan."""

    task_id: str
    machine_id: str
    request: res.Vector
    job_id: str = ""  # derived from task_id when empty; cached because the engine asks often

    def __post_init__(self) -> None:
        if not self.job_id:
            object.__setattr__(self, "job_id", job_of_task(self.task_id))
