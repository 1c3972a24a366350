"""The shared validation rule: may these claims be written against these views?

The commit engine runs `validate_claims` before it sends ANY txn, first round or retry,
against the exact machine and job views that txn compares (docs/architecture.md,
"The commit protocol"). A decide function can be wrong, a view can have been refreshed
by an earlier chunk's failure reads; the store must never be wrong. So every claim is
checked here, in exact integers:

- the job is still schedulable (pending or parked), the task is one of its tasks with
  its group's request, and it is neither bound already nor done;
- the machine exists and is UP, and has the labels and GPU model the task's group needs;
- different-machines: no two tasks of such a group on one machine, counting the job's
  bindings and the rest of the plan;
- the machine's task limit and the cumulative fit of every claim on it in this txn.

A refused claim carries a `Refusal`: a kind and the fields that explain it (resource,
requested, free, capacity), never only a sentence. The RESOURCE_FIT re-check after a
conflict is this same function on the fresh views.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import Enum

from . import resources as res
from .errors import PartialRecordError
from .model import (
    GPU_MODEL_LABEL,
    Claim,
    JobRecord,
    JobStatus,
    Machine,
    MachineState,
    TaskGroup,
    TransactionMode,
    group_of_task,
    parse_task_id,
)
from .views import JobView, MachineView

# A machine holds at most this many tasks (Kubernetes' default is 110 pods per node; a
# cell of batch tasks packs more). It also bounds one allocation record's size:
# 512 entries of 128-character ids stay far below etcd's 1.5 MiB request limit.
DEFAULT_MAX_TASKS_PER_MACHINE = 512

SCHEDULABLE_STATUSES = frozenset({JobStatus.PENDING, JobStatus.PARKED})


class RefusalKind(Enum):
    """Why a claim was not written. Each says what the scheduler does next."""

    JOB_NOT_SCHEDULABLE = "job_not_schedulable"  # placed, finished or cancelled meanwhile: drop the job
    UNKNOWN_TASK = "unknown_task"  # not a task of the job, or not its group's request: a decide bug
    TASK_ALREADY_BOUND = "task_already_bound"  # another commit bound it: decide the rest again
    TASK_DONE = "task_done"  # it finished meanwhile: nothing to place
    UNKNOWN_MACHINE = "unknown_machine"  # removed meanwhile: decide again on the fresh copy
    MACHINE_NOT_UP = "machine_not_up"  # draining or down: decide again
    LABEL_MISMATCH = "label_mismatch"  # relabelled, or a wrong pick: decide again
    DIFFERENT_MACHINES = "different_machines"  # a sibling of the group holds the machine
    TASK_LIMIT = "task_limit"  # the machine holds its maximum number of tasks
    INSUFFICIENT_RESOURCE = "insufficient_resource"  # does not fit: decide again
    MACHINE_CHANGED = "machine_changed"  # SEQUENCE mode: the machine changed since the decision
    GANG_DROPPED = "gang_dropped"  # all-or-nothing: another task of the gang was refused
    GAVE_UP = "gave_up"  # too many rounds of conflicts on one chunk
    CLAIM_LOST = "claim_lost"  # this scheduler no longer holds the job's claim


@dataclass(frozen=True, slots=True)
class Refusal:
    kind: RefusalKind
    machine_id: str = ""
    resource: str = ""
    requested: int = 0
    free: int = 0
    capacity: int = 0
    detail: str = ""

    def __str__(self) -> str:
        k = self.kind
        on = f" on {self.machine_id}" if self.machine_id else ""
        if k is RefusalKind.INSUFFICIENT_RESOURCE:
            return (f"insufficient {self.resource}{on}: requested {self.requested}, free {self.free}, "
                    f"capacity {self.capacity}")
        if k is RefusalKind.TASK_LIMIT:
            return f"machine{on} already holds its limit of {self.capacity} tasks"
        text = k.value.replace("_", " ") + on
        return f"{text}: {self.detail}" if self.detail else text

    def to_obj(self) -> dict:
        obj = {"kind": self.kind.value}
        for name in ("machine_id", "resource", "requested", "free", "capacity", "detail"):
            value = getattr(self, name)
            if value:
                obj[name] = value
        return obj

    @classmethod
    def from_obj(cls, obj: Mapping) -> Refusal:
        return cls(RefusalKind(obj["kind"]), obj.get("machine_id", ""), obj.get("resource", ""),
                   obj.get("requested", 0), obj.get("free", 0), obj.get("capacity", 0), obj.get("detail", ""))


def labels_match(group: TaskGroup, machine: Machine) -> str | None:
    """The first label of `group` that `machine` lacks, or None. `gpu.model` lists allowed models."""
    for key, want in group.labels.items():
        have = machine.labels.get(key)
        if key == GPU_MODEL_LABEL:
            allowed = {m.strip() for m in want.split(",") if m.strip()}
            if allowed and have not in allowed:
                return key
        elif have != want:
            return key
    return None


def machine_refusal(group: TaskGroup, view: MachineView, extra_used: Sequence[int] = res.ZERO,
                    extra_tasks: int = 0, max_tasks: int = DEFAULT_MAX_TASKS_PER_MACHINE) -> Refusal | None:
    """Whether one more task of `group` may go on the machine of `view`, on top of
    `extra_used` / `extra_tasks` already accepted for it in the same txn."""
    m = view.machine
    if m.state is not MachineState.UP:
        return Refusal(RefusalKind.MACHINE_NOT_UP, m.id, detail=m.state.value)
    label = labels_match(group, m)
    if label is not None:
        return Refusal(RefusalKind.LABEL_MISMATCH, m.id, detail=f"needs label {label}={group.labels[label]!r}")
    if len(view.alloc.tasks) + extra_tasks >= max_tasks:
        return Refusal(RefusalKind.TASK_LIMIT, m.id, capacity=max_tasks)
    used = view.alloc.used
    for name, r, u, e, c in zip(res.RESOURCE_NAMES, group.request, used, extra_used, m.capacity, strict=True):
        if u + e + r > c:
            return Refusal(RefusalKind.INSUFFICIENT_RESOURCE, m.id, name, r, c - u - e, c)
    return None


def _task_refusal(claim: Claim, rec: JobRecord) -> tuple[Refusal | None, TaskGroup | None]:
    if not rec.loaded:  # its bindings were not read: "not bound yet" cannot be known
        raise PartialRecordError(f"job {rec.job.id}: validated without its shards")
    parsed = parse_task_id(claim.task_id)
    job = rec.job
    if parsed is None or parsed[0] != job.id or not 0 <= parsed[1] < len(job.groups) \
            or not 0 <= parsed[2] < job.groups[parsed[1]].count:
        return Refusal(RefusalKind.UNKNOWN_TASK, detail=f"{claim.task_id} is not a task of job {job.id}"), None
    group = job.groups[parsed[1]]
    if tuple(claim.request) != group.request:
        return Refusal(RefusalKind.UNKNOWN_TASK, detail=f"{claim.task_id} claims {claim.request}, "
                                                       f"its group requests {group.request}"), None
    if claim.task_id in rec.bound:
        return Refusal(RefusalKind.TASK_ALREADY_BOUND, rec.bound[claim.task_id]), None
    if claim.task_id in rec.done:
        return Refusal(RefusalKind.TASK_DONE), None
    if rec.status not in SCHEDULABLE_STATUSES:
        return Refusal(RefusalKind.JOB_NOT_SCHEDULABLE, detail=f"job is {rec.status.value}"), None
    return None, group


def validate_claims(claims: Sequence[Claim], machines: Mapping[str, MachineView], jobs: Mapping[str, JobView],
                    max_tasks: int = DEFAULT_MAX_TASKS_PER_MACHINE,
                    changed: frozenset[str] | set[str] = frozenset()) -> tuple[list[Claim], list[tuple[Claim, Refusal]]]:
    """Split `claims` into (accepted, refused) against exactly these views.

    `changed`: machines that a SEQUENCE-mode commit must treat as conflicts (changed by
    someone else since the decision). Accepted claims, taken together per machine, fit.
    """
    refused: list[tuple[Claim, Refusal]] = []
    dropped_gangs: dict[str, tuple[str, Refusal]] = {}  # job -> (the task refused, why)
    while True:
        accepted, refused_now = _one_pass(claims, machines, jobs, max_tasks, changed, dropped_gangs)
        new_drops = {c.job_id: (c.task_id, r) for c, r in refused_now
                     if c.job_id not in dropped_gangs and c.job_id in jobs
                     and jobs[c.job_id].record.job.mode is TransactionMode.ALL_OR_NOTHING}
        if not new_drops:
            refused = refused_now
            break
        dropped_gangs.update(new_drops)  # re-run without them: they must not take capacity
    return accepted, refused


def _one_pass(claims, machines, jobs, max_tasks, changed, dropped_gangs):
    accepted: list[Claim] = []
    refused: list[tuple[Claim, Refusal]] = []
    extra_used: dict[str, list[int]] = {}
    extra_tasks: dict[str, int] = defaultdict(int)
    group_machines: dict[tuple[str, int], set[str]] = {}
    for c in claims:
        if c.job_id in dropped_gangs:
            cause, why = dropped_gangs[c.job_id]
            refused.append((c, why if c.task_id == cause else
                            Refusal(RefusalKind.GANG_DROPPED, c.machine_id, detail=f"task {cause}: {why}")))
            continue
        view_j = jobs.get(c.job_id)
        if view_j is None:
            refused.append((c, Refusal(RefusalKind.UNKNOWN_TASK, detail=f"job {c.job_id} is not in the plan")))
            continue
        rec = view_j.record
        why, group = _task_refusal(c, rec)
        if why is None and group is not None:  # a task of the job: its group is known
            why = _placement_refusal(c, rec, group, machines, max_tasks, changed, extra_used, extra_tasks,
                                     group_machines)
        if why is not None:
            refused.append((c, why))
            continue
        accepted.append(c)
        taken = extra_used.setdefault(c.machine_id, [0] * res.NUM_RESOURCES)
        for k, r in enumerate(c.request):
            taken[k] += r
        extra_tasks[c.machine_id] += 1
    return accepted, refused


def _placement_refusal(c: Claim, rec: JobRecord, group: TaskGroup, machines, max_tasks, changed,
                       extra_used, extra_tasks, group_machines) -> Refusal | None:
    view = machines.get(c.machine_id)
    if view is None:
        return Refusal(RefusalKind.UNKNOWN_MACHINE, c.machine_id)
    if c.machine_id in changed:
        return Refusal(RefusalKind.MACHINE_CHANGED, c.machine_id)
    if group.different_machines:
        gi = group_of_task(c.task_id)
        key = (rec.job.id, gi)
        used_by_group = group_machines.get(key)
        if used_by_group is None:
            prefix = f"{rec.job.id}/{gi}/"
            used_by_group = {m for t, m in rec.bound.items() if t.startswith(prefix)}
            group_machines[key] = used_by_group
        if c.machine_id in used_by_group:
            return Refusal(RefusalKind.DIFFERENT_MACHINES, c.machine_id,
                           detail=f"task group {group.name!r} already has a task there")
    why = machine_refusal(group, view, extra_used.get(c.machine_id, res.ZERO), extra_tasks.get(c.machine_id, 0),
                          max_tasks)
    if why is None and group.different_machines:
        group_machines[(rec.job.id, group_of_task(c.task_id))].add(c.machine_id)
    return why
