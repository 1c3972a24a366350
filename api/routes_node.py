"""The node side: machine heartbeats (the liveness lease) and task status reports.

A heartbeat carries the lease of the previous one, so the API stays stateless: it
refreshes that lease, or grants a new one (first beat, or expired) and binds the
machine's liveness key to it (cellstate.machine_health.heartbeat). Task reports go
through cellstate.lifecycle.release_tasks, naming the machine, so a report from a
machine the task has since left changes nothing."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Request

from cellsched.cellstate.errors import LeaseNotFoundError
from cellsched.cellstate.job_states import TaskState, task_state
from cellsched.cellstate.lifecycle import release_tasks
from cellsched.cellstate.machine_health import heartbeat
from cellsched.cellstate.model import MAX_TASKS_PER_JOB, TaskOutcome, task_id

from .auth import Principal
from .context import Operator, ctx_of
from .errors import ApiError, responses
from .models_cell import HeartbeatIn, HeartbeatOut, ReportedState, TaskReportIn, TaskReportOut
from .models_jobs import ID_PATTERN
from .routes_jobs import JobId, read_record
from .whole_number import DIGITS

router = APIRouter(prefix="/v1", tags=["node"])
MachineId = Annotated[str, Path(pattern=ID_PATTERN)]
_AUTH = (401, 403, 429)


@router.post("/machines/{machine_id}/heartbeat", operation_id="machine_heartbeat", response_model=HeartbeatOut,
             responses=responses(400, *_AUTH, 404, 422, 503))
def machine_heartbeat(request: Request, machine_id: MachineId, beat: HeartbeatIn, who: Principal = Operator):
    ctx = ctx_of(request)
    if ctx.store.get(ctx.keys.spec(machine_id)) is None:
        raise ApiError(404, "unknown machine", f"no machine {machine_id!r}", "path.machine_id")
    if beat.lease_id is not None:
        try:
            ctx.store.refresh_lease(beat.lease_id)
            if ctx.store.get(ctx.keys.live(machine_id)) is not None:
                return HeartbeatOut(machine=machine_id, lease_id=beat.lease_id, renewed=True, ttl_s=beat.ttl_s)
        except LeaseNotFoundError:
            pass  # expired (the machine went quiet too long): start a new one
    lease = ctx.store.grant_lease(beat.ttl_s)
    with ctx.writing(who, request, f"lease {lease}") as store:  # a renewal writes nothing, so no record
        heartbeat(store, ctx.keys, machine_id, lease)
    return HeartbeatOut(machine=machine_id, lease_id=lease, renewed=False, ttl_s=beat.ttl_s)


_OUTCOME = {ReportedState.FINISHED: TaskOutcome.FINISHED, ReportedState.FAILED: TaskOutcome.FAILED}


@router.post("/jobs/{job_id}/tasks/{group}/{index}/report", operation_id="report_task", response_model=TaskReportOut,
             responses=responses(400, *_AUTH, 404, 409, 422, 503))
def report_task(request: Request, job_id: JobId, group: Annotated[int, Path(ge=0, le=63), DIGITS],
                index: Annotated[int, Path(ge=0, lt=MAX_TASKS_PER_JOB), DIGITS], report: TaskReportIn,
                who: Principal = Operator):
    """A machine agent reports its task running, finished or failed. Finished and failed
    release the task's resources (failed reschedules it while the job's policy allows)."""
    ctx = ctx_of(request)
    rec = read_record(ctx, job_id)
    if group >= len(rec.job.groups) or index >= rec.job.groups[group].count:
        raise ApiError(404, "unknown task", f"job {job_id} has no task {group}/{index}", "path.index")
    tid = task_id(job_id, group, index)
    state = task_state(rec, tid)
    if report.state is ReportedState.FINISHED and state is TaskState.FINISHED:
        return TaskReportOut(task=tid, task_state=state, job_status=rec.status, revision=ctx.store.current_revision())
    where = rec.bound.get(tid)
    if where is None or (report.machine is not None and where != report.machine):
        at = f"bound to {where}" if where else state.value
        on = f", not running on {report.machine}" if report.machine else ", not running"
        raise ApiError(409, "task not running there", f"task {tid} is {at}{on}", "body.machine")
    rev = ctx.store.current_revision()
    if report.state is not ReportedState.RUNNING:
        with ctx.writing(who, request, report.state.value) as store:
            rev = release_tasks(store, ctx.keys, job_id, [tid], ctx.clock.now(), _OUTCOME[report.state],
                                on_machine={tid: where})
        rec = read_record(ctx, job_id)
    return TaskReportOut(task=tid, task_state=task_state(rec, tid), job_status=rec.status, revision=rev)
