"""The job state machine: the one place a job's status changes (docs/architecture.md, "Job states").

Every writer (commit, park, release, cancel, purge) names an event; `apply_event` checks
the (status, event) pair against TRANSITIONS, updates the record in place and returns the
index and claim ops the caller adds to its own txn. The caller still writes the job
record (it may be sharded) and compares what it read; this module writes nothing itself.

         submit (+queue)
              │
              ▼             PLACE_ALL (-queue -claim)
    ┌────▶ PENDING ────────────────────────────────────────┐
    │        │  ▲                                           ▼
    │        │  └──── TASK_EVICTED, TASK_FAILED_WITHIN ── PLACED ──TASK_FINISHED──▶ FINISHED
    │ RETRY  │ PARK   _POLICY (+queue)                      ▲
    │        │ (-queue -claim +parked)                      │
    │        ▼              PLACE_ALL (-parked -claim)      │
    └───── PARKED ──────────────────────────────────────────┘
   (-parked +queue)

    FAIL   from PENDING, PARKED, PLACED     ──▶ FAILED     (-queue or -parked; a claim stays with its holder)
    CANCEL from PENDING, PARKED, PLACED     ──▶ CANCELLED  (likewise)
    PURGE  from FINISHED, FAILED, CANCELLED ──▶ the record is deleted (once no task of it is left on a machine)

Every legal (status, event) pair, and what it writes (-/+ an index entry; -claim: the job
leaves its holder's claim, whose key its holder deletes once no job of it is left):

    PENDING   PLACE_ALL                  -> PLACED     -queue -claim
    PENDING   BIND_SOME                  -> PENDING    +queue
    PENDING   PARK                       -> PARKED     -queue -claim +parked
    PENDING   FINISH_SOME                -> PENDING
    PENDING   TASK_EVICTED               -> PENDING
    PENDING   TASK_FAILED_WITHIN_POLICY  -> PENDING
    PENDING   FAIL                       -> FAILED     -queue
    PENDING   CANCEL                     -> CANCELLED  -queue
    PARKED    PLACE_ALL                  -> PLACED     -parked -claim
    PARKED    BIND_SOME                  -> PARKED     +parked
    PARKED    PARK                       -> PARKED     -claim +parked
    PARKED    RETRY                      -> PENDING    -parked +queue
    PARKED    FINISH_SOME                -> PARKED
    PARKED    TASK_EVICTED               -> PARKED
    PARKED    TASK_FAILED_WITHIN_POLICY  -> PARKED
    PARKED    FAIL                       -> FAILED     -parked
    PARKED    CANCEL                     -> CANCELLED  -parked
    PLACED    FINISH_SOME                -> PLACED
    PLACED    TASK_FINISHED              -> FINISHED
    PLACED    TASK_EVICTED               -> PENDING    +queue
    PLACED    TASK_FAILED_WITHIN_POLICY  -> PENDING    +queue
    PLACED    FAIL                       -> FAILED
    PLACED    CANCEL                     -> CANCELLED
    FINISHED  PURGE                      -> (deleted)
    FAILED    TASK_LEFT                  -> FAILED
    FAILED    PURGE                      -> (deleted)
    CANCELLED TASK_LEFT                  -> CANCELLED
    CANCELLED PURGE                      -> (deleted)

Any other pair raises IllegalTransitionError. Events that keep the status (BIND_SOME,
FINISH_SOME, a task evicted from a job that is not PLACED, TASK_LEFT) are in the table
too, so a writer never has to decide on its own that a status stays.

A job in a queue segment (one queue entry for the jobs of one submission txn:
cellstate/queue_segments.py; its record names the segment) leaves it by its record alone:
"-queue" deletes nothing and clears the record's segment, and "+queue" writes the job's
own entry. So placing a job from a segment writes its record and its allocations only.

A job leaves its claim only by the transitions its holder makes (PLACE_ALL, PARK: the caller
compares the claim); FAIL and CANCEL come from elsewhere, so they leave the claim to its
holder, whose next commit finds the job not schedulable (RefusalKind.JOB_NOT_SCHEDULABLE)
and releases it. BIND_SOME's new queue entry keeps naming its holder. UNPARK is not an event of its own: a job claimed from the parked index
and placed takes PLACE_ALL (or BIND_SOME) from PARKED; RETRY is an operator's un-park.

Tasks have a smaller machine, read off the job record by `task_state` (TASK_TRANSITIONS):

    PENDING ──bound by a commit──▶ RUNNING ──finished──▶ FINISHED
       ▲                              │
       └── evicted, or failed ────────┤
           within max_failures        ├── failed past max_failures (the job fails) ──▶ FAILED
                                      └── its job is cancelled (released) ──▶ CANCELLED

A PENDING task of a FAILED job is FAILED (it will not run), of a CANCELLED job CANCELLED.
A task still RUNNING when its job fails stays RUNNING until it leaves its machine.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from .errors import IllegalTransitionError, InvalidInputError
from .index_entry import IndexEntry
from .keys import CellKeys
from .model import TERMINAL_STATUSES, JobRecord, JobStatus, TaskOutcome, parse_task_id
from .resources import ZERO, Vector
from .store import Delete, Put


class JobEvent(Enum):
    PLACE_ALL = "place_all"  # a commit binds the job's last unbound task
    BIND_SOME = "bind_some"  # a commit binds tasks, others stay unbound: the entry's claim count resets
    PARK = "park"  # its holder cannot place it now (or it crashed schedulers: parked for good)
    RETRY = "retry"  # an operator puts a parked job back in the queue
    FINISH_SOME = "finish_some"  # tasks finished, others remain
    TASK_FINISHED = "task_finished"  # the job's last task finished
    TASK_EVICTED = "task_evicted"  # tasks evicted (machine down or draining): rescheduled
    TASK_FAILED_WITHIN_POLICY = "task_failed_within_policy"  # failures <= max_failures: rescheduled
    TASK_LEFT = "task_left"  # a task of a FAILED or CANCELLED job left its machine
    FAIL = "fail"  # task failures exceed max_failures
    CANCEL = "cancel"
    PURGE = "purge"  # retention deletes a terminal job's record


class Index(Enum):
    QUEUE = "queue"
    PARKED = "parked"


@dataclass(frozen=True, slots=True)
class Transition:
    to: JobStatus | None  # None: the record is deleted (PURGE)
    put: Index | None = None  # the index entry written (its value: see _entry)
    delete: Index | None = None  # the index entry deleted
    delete_claim: bool = False


_S, _E, _T = JobStatus, JobEvent, Transition
_Q, _P = Index.QUEUE, Index.PARKED

TRANSITIONS: dict[tuple[JobStatus, JobEvent], Transition] = {
    (_S.PENDING, _E.PLACE_ALL): _T(_S.PLACED, delete=_Q, delete_claim=True),
    (_S.PENDING, _E.BIND_SOME): _T(_S.PENDING, put=_Q),
    (_S.PENDING, _E.PARK): _T(_S.PARKED, put=_P, delete=_Q, delete_claim=True),
    (_S.PENDING, _E.FINISH_SOME): _T(_S.PENDING),
    (_S.PENDING, _E.TASK_EVICTED): _T(_S.PENDING),
    (_S.PENDING, _E.TASK_FAILED_WITHIN_POLICY): _T(_S.PENDING),
    (_S.PENDING, _E.FAIL): _T(_S.FAILED, delete=_Q),
    (_S.PENDING, _E.CANCEL): _T(_S.CANCELLED, delete=_Q),

    (_S.PARKED, _E.PLACE_ALL): _T(_S.PLACED, delete=_P, delete_claim=True),
    (_S.PARKED, _E.BIND_SOME): _T(_S.PARKED, put=_P),
    (_S.PARKED, _E.PARK): _T(_S.PARKED, put=_P, delete_claim=True),
    (_S.PARKED, _E.RETRY): _T(_S.PENDING, put=_Q, delete=_P),
    (_S.PARKED, _E.FINISH_SOME): _T(_S.PARKED),
    (_S.PARKED, _E.TASK_EVICTED): _T(_S.PARKED),
    (_S.PARKED, _E.TASK_FAILED_WITHIN_POLICY): _T(_S.PARKED),
    (_S.PARKED, _E.FAIL): _T(_S.FAILED, delete=_P),
    (_S.PARKED, _E.CANCEL): _T(_S.CANCELLED, delete=_P),

    (_S.PLACED, _E.FINISH_SOME): _T(_S.PLACED),
    (_S.PLACED, _E.TASK_FINISHED): _T(_S.FINISHED),
    (_S.PLACED, _E.TASK_EVICTED): _T(_S.PENDING, put=_Q),
    (_S.PLACED, _E.TASK_FAILED_WITHIN_POLICY): _T(_S.PENDING, put=_Q),
    (_S.PLACED, _E.FAIL): _T(_S.FAILED),
    (_S.PLACED, _E.CANCEL): _T(_S.CANCELLED),

    (_S.FINISHED, _E.PURGE): _T(None),
    (_S.FAILED, _E.TASK_LEFT): _T(_S.FAILED),
    (_S.FAILED, _E.PURGE): _T(None),
    (_S.CANCELLED, _E.TASK_LEFT): _T(_S.CANCELLED),
    (_S.CANCELLED, _E.PURGE): _T(None),
}


def transition(status: JobStatus, event: JobEvent, job_id: str = "") -> Transition:
    """The transition for (status, event); IllegalTransitionError when there is none."""
    t = TRANSITIONS.get((status, event))
    if t is None:
        raise IllegalTransitionError(status, event.value, job_id)
    return t


def allowed(status: JobStatus, event: JobEvent) -> bool:
    return (status, event) in TRANSITIONS


def apply_event(rec: JobRecord, event: JobEvent, keys: CellKeys, now: float | None = None, *,
                reason: str | None = None, refusal: dict | None = None, need: Vector | None = None,
                claims: int = 0, stuck: bool = False, holder: str = "") -> list[Put | Delete]:
    """Apply `event` to `rec` in place; return the index and claim ops the caller's txn needs.

    Keywords by event: PARK takes `reason`, `refusal` and its entry's `need`, `claims` and
    `stuck`; PLACE_ALL, TASK_FINISHED, FAIL and CANCEL take `now`; FAIL and CANCEL may take
    a `reason`; BIND_SOME takes the `holder` its entry keeps naming (the committer's claim:
    cellstate/claims.py). An illegal pair raises IllegalTransitionError and leaves `rec` untouched.
    """
    t = transition(rec.status, event, rec.job.id)
    if event in (JobEvent.PLACE_ALL, JobEvent.TASK_FINISHED, JobEvent.FAIL, JobEvent.CANCEL) and now is None:
        raise InvalidInputError(f"job {rec.job.id}: event {event.value} needs the time it happens")
    ops: list[Put | Delete] = []
    # Index keys are spelled from the record's class, priority and submission sequence,
    # which no event changes, so the delete is computed the same before or after.
    # A job in a queue segment (cellstate/queue_segments.py) leaves it by its record alone: the
    # segment is shared, and lists the job only while the record names it; a queue entry put
    # for it is its own.
    in_segment = bool(rec.segment)
    if t.delete is Index.QUEUE and not in_segment:
        ops.append(Delete(keys.queue_of(rec)))
    elif t.delete is Index.PARKED:
        ops.append(Delete(keys.parked_of(rec)))
    if in_segment and Index.QUEUE in (t.delete, t.put):
        rec.segment = ""
    # t.delete_claim: the job leaves its holder's claim. Nothing to delete for that: the claim
    # key is shared by the jobs of one claim txn (its holder deletes it when all are gone), and
    # the job's new entry, if any, names no holder.
    if t.put is not None:
        entry = _entry(rec, event, need, claims, stuck, holder)
        ops.append(Put(keys.own_queue_of(rec) if t.put is Index.QUEUE else keys.parked_of(rec), entry.encode()))
    _update_fields(rec, event, now, reason, refusal)
    if t.to is not None:
        rec.status = t.to
    return ops


def _entry(rec: JobRecord, event: JobEvent, need: Vector | None, claims: int, stuck: bool,
           holder: str) -> IndexEntry:
    jid = rec.job.id
    if event is JobEvent.PARK:
        return IndexEntry(jid, claims, need, stuck)
    if event is JobEvent.BIND_SOME and rec.status is JobStatus.PARKED:
        # Progress resets the claim count; need ZERO: should its holder die, any freed
        # capacity retries it. The holder keeps the job.
        return IndexEntry(jid, 0, ZERO, holder=holder)
    if event is JobEvent.BIND_SOME:
        return IndexEntry(jid, holder=holder)
    return IndexEntry(jid)  # a fresh queue entry: RETRY, back to the queue


def _update_fields(rec: JobRecord, event: JobEvent, now: float | None, reason: str | None,
                   refusal: dict | None) -> None:
    """The record fields that go with a status change: timestamps, reason, refusal."""
    if event is JobEvent.PLACE_ALL:
        rec.placed_at, rec.reason, rec.refusal = now, "", None
    elif event is JobEvent.PARK:
        rec.reason, rec.refusal = reason or "", refusal
    elif event is JobEvent.RETRY:
        rec.reason, rec.refusal = "", None
    elif event is JobEvent.TASK_FINISHED:
        rec.finished_at = now
    elif event is JobEvent.FAIL:
        rec.finished_at = now
        rec.reason = reason or f"{rec.failures} task failures exceed max_failures={rec.job.max_failures}"
    elif event is JobEvent.CANCEL:
        rec.finished_at, rec.refusal = now, None  # finished_at starts the retention clock
        rec.reason = reason or "cancelled"


def commit_event(rec: JobRecord) -> JobEvent:
    """What a commit that bound tasks of `rec` (bindings already added) is."""
    return JobEvent.PLACE_ALL if rec.fully_bound else JobEvent.BIND_SOME


def release_event(rec: JobRecord, outcome: TaskOutcome) -> JobEvent:
    """What a release is, for `rec` as it stands after the release's own bookkeeping:
    released tasks unbound, failures counted, finished tasks marked done."""
    if rec.status in TERMINAL_STATUSES:
        return JobEvent.TASK_LEFT
    if outcome is TaskOutcome.FAILED:
        return JobEvent.FAIL if rec.failures > rec.job.max_failures else JobEvent.TASK_FAILED_WITHIN_POLICY
    if outcome is TaskOutcome.FINISHED:
        return JobEvent.TASK_FINISHED if len(rec.done) >= rec.job.task_count else JobEvent.FINISH_SOME
    return JobEvent.TASK_EVICTED


def render_table() -> str:
    """Every legal (status, event) pair with its writes, as the module docstring lists them
    (a test holds the two equal)."""
    lines = []
    for (status, event), t in TRANSITIONS.items():
        ops = [f"-{t.delete.value}"] if t.delete else []
        ops += ["-claim"] if t.delete_claim else []
        ops += [f"+{t.put.value}"] if t.put else []
        to = t.to.name if t.to is not None else "(deleted)"
        lines.append(f"    {status.name:<9} {event.name:<26} -> {to:<10} {' '.join(ops)}".rstrip())
    return "\n".join(lines)


# -- tasks ----------------------------------------------------------------------

class TaskState(Enum):
    PENDING = "pending"  # unbound: waiting for a commit (again, after an eviction or a failure within policy)
    RUNNING = "running"  # bound to a machine, holding its resources
    FINISHED = "finished"  # ran to completion, released
    FAILED = "failed"  # its job failed: it failed past max_failures, or will not run
    CANCELLED = "cancelled"  # its job was cancelled before it finished


class TaskEvent(Enum):
    BIND = "bind"
    FINISH = "finish"
    EVICT = "evict"
    FAIL_WITHIN_POLICY = "fail_within_policy"
    FAIL_JOB = "fail_job"  # the failure past max_failures, or its job failing while it waits
    CANCEL_JOB = "cancel_job"  # its job is cancelled (a running task is released)


TASK_TRANSITIONS: dict[tuple[TaskState, TaskEvent], TaskState] = {
    (TaskState.PENDING, TaskEvent.BIND): TaskState.RUNNING,
    (TaskState.PENDING, TaskEvent.FAIL_JOB): TaskState.FAILED,
    (TaskState.PENDING, TaskEvent.CANCEL_JOB): TaskState.CANCELLED,
    (TaskState.RUNNING, TaskEvent.FINISH): TaskState.FINISHED,
    (TaskState.RUNNING, TaskEvent.EVICT): TaskState.PENDING,
    (TaskState.RUNNING, TaskEvent.FAIL_WITHIN_POLICY): TaskState.PENDING,
    (TaskState.RUNNING, TaskEvent.FAIL_JOB): TaskState.FAILED,
    (TaskState.RUNNING, TaskEvent.CANCEL_JOB): TaskState.CANCELLED,
}


def task_state(rec: JobRecord, tid: str) -> TaskState:
    """A task's state, read off its job's record (bindings and done tasks loaded)."""
    parsed = parse_task_id(tid)
    job = rec.job
    if parsed is None or parsed[0] != job.id or not 0 <= parsed[1] < len(job.groups) \
            or not 0 <= parsed[2] < job.groups[parsed[1]].count:
        raise InvalidInputError(f"{tid!r} is not a task of job {job.id}")
    if tid in rec.bound:
        return TaskState.RUNNING
    if tid in rec.done:
        return TaskState.FINISHED
    if rec.status is JobStatus.FAILED:
        return TaskState.FAILED
    if rec.status is JobStatus.CANCELLED:
        return TaskState.CANCELLED
    return TaskState.PENDING


def task_states(rec: JobRecord) -> dict[str, TaskState]:
    return {tid: task_state(rec, tid) for tid, _, _ in rec.job.tasks()}
