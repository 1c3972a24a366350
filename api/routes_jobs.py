"""/v1/jobs: submit (one, or bulk), get, list with filters and a cursor, cancel, explain."""

from __future__ import annotations

import asyncio
import contextvars
from typing import Annotated

from fastapi import APIRouter, Header, Path, Query, Request, Response
from starlette.concurrency import run_in_threadpool

from cellsched.cellstate import codec
from cellsched.cellstate.audit import AuditEntry
from cellsched.cellstate.cancel import cancel_job
from cellsched.cellstate.model import PRIORITY_MAX, PRIORITY_MIN, JobClass, JobRecord, JobStatus
from cellsched.cellstate.views import read_job_view

from .auth import Principal
from .context import ApiContext, Reader, Submitter, ctx_of, submitter
from .errors import ApiError, parse_body, responses
from .models_jobs import (
    ID_PATTERN,
    BulkIn,
    BulkOut,
    CancelOut,
    Explanation,
    JobIn,
    JobList,
    JobOut,
    TaskCounts,
    job_out_json,
)
from .observe import request_traceparent
from .submit import REPLAY, prepare_one, submit_bulk
from .whole_number import DIGITS

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])
JobId = Annotated[str, Path(pattern=ID_PATTERN, description="the job's id")]
MAX_PAGE = 500
MAX_SCAN = 5000  # job records read per list request at most; the cursor resumes the scan

# OpenAPI links from a created job to its other routes (followed by clients and test generators).
JOB_LINKS = {name: {"operationId": op, "parameters": {"job_id": "$response.body#/id"}}
             for name, op in (("GetJob", "get_job"), ("CancelJob", "cancel_job"), ("ExplainJob", "explain_job"))}
JOB_LINKS["ReportTask"] = {"operationId": "report_task",
                           "parameters": {"job_id": "$response.body#/id", "group": 0, "index": 0}}
_AUTH = (401, 403, 429)


def read_record(ctx: ApiContext, job_id: str) -> JobRecord:
    view = read_job_view(ctx.store, ctx.keys, job_id)
    if view is None:
        raise ApiError(404, "unknown job", f"no job {job_id!r}", "path.job_id")
    return view.record


# The token, the body and the Idempotency-Key header are read by the handler (the token first,
# as the dependency did; the body in one JobIn.model_validate_json, as the bulk's), not solved
# as FastAPI dependencies and parameters: that solving was about a fifth of a submission's CPU
# in process. The OpenAPI document declares them as FastAPI did.
SUBMIT_BODY = {"requestBody": {"required": True,
                               "content": {"application/json": {"schema": {"$ref": "#/components/schemas/JobIn"}}}},
               "parameters": [{"in": "header", "name": "Idempotency-Key", "required": False, "schema": {
                   "anyOf": [{"maxLength": 255, "type": "string"}, {"type": "null"}], "title": "Idempotency-Key"}}],
               "security": [{"HTTPBearer": []}]}


@router.post("", status_code=201, operation_id="submit_job", response_model=JobOut, openapi_extra=SUBMIT_BODY,
             responses={201: {"description": "written to the store", "links": JOB_LINKS},
                        200: {"model": JobOut, "description": "an Idempotency-Key replay: the job it made",
                              "links": JOB_LINKS},
                        **responses(400, *_AUTH, 409, 413, 422, 503)})
async def submit_job(request: Request):
    """Submit one job. The answer comes once the job is durably in the store."""
    who = submitter(request)
    spec = parse_body(JobIn, await request.body(), request.headers.get("content-type"))
    idempotency_key = request.headers.get("idempotency-key")  # its form: checked by prepare_one
    # async, with the txn group-committed (api/group_commit.py): the checks run here on the
    # event loop, the txn on the group's thread, so a submission costs no thread-pool hop.
    ctx = ctx_of(request)
    who_text = f"{who.name} ({who.role.name.lower()})"
    what = f"POST {request.scope['path']}" + (f" job {spec.id}" if spec.id else "")
    try:
        prepared = prepare_one(ctx, who, spec, idempotency_key, request_traceparent(request))
    except ApiError as exc:
        if ctx.audit is not None:  # a refusal before any write gets a record alone, as ctx.writing gives it
            await run_in_threadpool(ctx.audit.record_refusal, who_text, what, ctx.clock.now(),
                                    f"refused: ApiError: {exc}"[:500])
        raise
    landed = await ctx.submit_groups().submit(prepared, AuditEntry(who_text, what, ctx.clock.now()))
    if isinstance(landed.outcome, ApiError):
        raise landed.outcome
    if not landed.outcome.startswith(REPLAY):
        # What was just written: a new job is pending (a scheduler may have taken it since,
        # which GET shows), so the answer costs no read. Sent as bytes: the model is built
        # here once, not validated again as a return value.
        out = job_out_json(JobRecord(prepared.job, submitted_at=landed.at))
        return Response(out, status_code=201, media_type="application/json",
                        headers={"Location": f"/v1/jobs/{landed.outcome}"})
    job_id = landed.outcome.removeprefix(REPLAY)
    rec = await run_in_threadpool(read_record, ctx, job_id)
    return Response(JobOut.of(rec).model_dump_json(by_alias=True), status_code=200, media_type="application/json",
                    headers={"Location": f"/v1/jobs/{job_id}", "Idempotent-Replayed": "true"})


# The bulk body is read as bytes and validated by one BulkIn.model_validate_json (pydantic-core
# parses and validates in one pass, no Python dicts of the 500 jobs first); the OpenAPI document
# declares it as a BulkIn body as before (api/app.py adds the schema), and a bad one is the same
# Problem naming the field (api/errors.py, RequestValidationError).
BULK_BODY = {"requestBody": {"required": True,
                             "content": {"application/json": {"schema": {"$ref": "#/components/schemas/BulkIn"}}}}}


@router.post("/bulk", status_code=200, operation_id="submit_jobs_bulk", response_model=BulkOut,
             responses=responses(400, *_AUTH, 413, 422, 503), openapi_extra=BULK_BODY)
async def submit_jobs_bulk(request: Request, who: Principal = Submitter,
                           idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key", max_length=255,
                                                                         description="not supported here: 422")] = None):
    """Submit many jobs: the whole body is validated before any write; each job is atomic.
    Retry safely by naming the jobs (`id`): a retried job that landed comes back as refused,
    'already exists'."""
    raw = await request.body()
    pool = ctx_of(request).bulk_pool()
    run = contextvars.copy_context().run  # as run_in_threadpool: the request's span and log context go along
    return await asyncio.get_running_loop().run_in_executor(pool, run, _submit_bulk, request, who, idempotency_key, raw)


def _submit_bulk(request: Request, who: Principal, idempotency_key: str | None, raw: bytes) -> Response:
    bulk = parse_body(BulkIn, raw, request.headers.get("content-type"))
    if idempotency_key is not None:
        raise ApiError(422, "not supported", "Idempotency-Key is for single submissions; a bulk's jobs "
                       "commit in several txns. Give each job an id instead", "header.Idempotency-Key")
    ctx = ctx_of(request)
    with ctx.writing(who, request, f"{len(bulk.jobs)} jobs") as store:
        out = submit_bulk(ctx, store, bulk, request_traceparent(request))
    # Bytes, not the model returned: FastAPI would validate the 500 outcomes again.
    return Response(out.model_dump_json(), media_type="application/json")


@router.get("", operation_id="list_jobs", response_model=JobList, responses=responses(*_AUTH, 422, 503))
def list_jobs(request: Request, _: Principal = Reader,
              job_class: Annotated[JobClass | None, Query(alias="class")] = None,
              status: JobStatus | None = None,
              priority: Annotated[int | None, Query(ge=PRIORITY_MIN, le=PRIORITY_MAX), DIGITS] = None,
              cursor: Annotated[str | None, Query(pattern=ID_PATTERN, description="the last id of the page before")] = None,
              limit: Annotated[int, Query(ge=1, le=MAX_PAGE), DIGITS] = 100):
    """Jobs in id order, filtered. Reads at most 5,000 records per call: a page may come back
    short (even empty) with a cursor; follow `next_cursor` until it is null."""
    ctx = ctx_of(request)
    last = cursor or ""
    items: list[JobOut] = []
    scanned, at_end = 0, False
    while len(items) < limit and scanned < MAX_SCAN:
        page = min(256, MAX_SCAN - scanned)
        kvs = ctx.store.get_page(ctx.keys.jobs_prefix, page, after=ctx.keys.job(last) if last else "")
        full = False
        for kv in kvs:
            last, scanned = ctx.keys.last_segment(kv.key), scanned + 1
            rec = codec.decode_job(kv.key, kv.value)
            if ((job_class is None or rec.job.job_class is job_class) and (status is None or rec.status is status)
                    and (priority is None or rec.job.priority == priority)):
                items.append(JobOut.of(rec))
                if len(items) >= limit:
                    full = True
                    break
        if full:
            break
        if len(kvs) < page:
            at_end = True
            break
    nxt = None if at_end or not last else last
    return JobList(items=items, next_cursor=nxt)


@router.get("/{job_id}", operation_id="get_job", response_model=JobOut,
            responses={200: {"description": "the job", "links": {k: v for k, v in JOB_LINKS.items() if k != "GetJob"}},
                       **responses(*_AUTH, 404, 422, 503)})
def get_job(request: Request, job_id: JobId, _: Principal = Reader):
    return JobOut.of(read_record(ctx_of(request), job_id))


@router.post("/{job_id}/cancel", operation_id="cancel_job", response_model=CancelOut,
             responses=responses(*_AUTH, 404, 409, 422, 503))
def cancel(request: Request, job_id: JobId, who: Principal = Submitter):
    """Cancel a job and release its tasks. Cancelling a cancelled job is a no-op; a finished
    or failed one is a 409."""
    ctx = ctx_of(request)
    with ctx.writing(who, request) as store:
        read_record(ctx, job_id)  # 404 before the cancel protocol's own error
        out = cancel_job(store, ctx.keys, job_id, ctx.clock.now())
    return CancelOut(id=job_id, status=JobStatus.CANCELLED, already_cancelled=out.already_cancelled,
                     released_tasks=len(out.released), revision=out.revision)


# What the scheduler keeps only in its own memory (schedulers/attempts.py), not on the record.
NOT_RECORDED = ["the per-scorer scores of a placement (POST /v1/plan shows them for a dry run)"]


@router.get("/{job_id}/explanation", operation_id="explain_job", response_model=Explanation,
            responses=responses(*_AUTH, 404, 422, 503))
def explain_job(request: Request, job_id: JobId, _: Principal = Reader):
    """Why the job is where it is, read from the structured reason its record carries (written
    by the park or placement it describes, never by an extra write)."""
    rec = read_record(ctx_of(request), job_id)
    refusal = rec.refusal or None
    groups = list(refusal.get("groups", [])) if refusal and refusal.get("kind") == "unplaceable" else []
    return Explanation(id=job_id, status=rec.status, reason=rec.reason, refusal=refusal, unplaceable_groups=groups,
                       tasks=TaskCounts(total=rec.job.task_count, bound=len(rec.bound), done=len(rec.done)),
                       failures=rec.failures, first_attempt_at=rec.first_attempt_at, placed_at=rec.placed_at,
                       attempts=(rec.history or {}).get("attempts", 1 if rec.first_attempt_at is not None else 0),
                       conflicts=(rec.history or {}).get("conflicts", []), not_recorded=NOT_RECORDED)
