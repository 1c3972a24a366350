"""Submitting jobs: the API's checks, then cellstate.submission.submit_jobs (the one writer).

- Checked before any write: the body (Pydantic), the job model's own rules, and a gang's
  width: an all-or-nothing job commits in one txn (docs/architecture.md,
  "The commit protocol", 4.), so one that must span more machines than a txn holds is
  refused here.
- Idempotency-Key: its record /<cell>/idem/<sha256(caller, key)> holds the job id and the
  body's digest, and is written by the job's own txn, guarded on its absence. Two API
  processes racing on one key: one txn lands, the other reads the record: same body, the
  same job back (200); another body, 409.
- A 2xx is sent after submit_jobs returns, i.e. after the store acknowledged the txn
  (on etcd: committed by a Raft majority).
- Single submissions are group-committed (api/group_commit.py): the ones that arrive together
  share one txn, each job still atomic (its record, queue entry and key in that txn) with
  its own audit record in it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import re
import secrets
import time

from cellsched.cellstate import codec
from cellsched.cellstate.chunking import REQUEST_BYTES_BUDGET, max_gang_machines
from cellsched.cellstate.errors import InvalidInputError
from cellsched.cellstate.model import Job, JobRecord, TransactionMode
from cellsched.cellstate.store import CellStore, Put
from cellsched.cellstate.submission import SubmitResult, submit_jobs

from .auth import Principal
from .context import ApiContext
from .errors import ApiError
from .models_jobs import BulkIn, BulkOut, BulkOutcome, GroupsMemo, JobIn

_KEY = re.compile(r"^[\x21-\x7e]{1,255}$")


def new_job_id() -> str:
    """Time-ordered (so listings read in submission order), with randomness against collisions."""
    return f"j-{time.time_ns():x}-{secrets.token_hex(4)}"


def to_job(ctx: ApiContext, spec: JobIn, job_id: str, where: str,
           traceparent: str | None = None, memo: GroupsMemo | None = None) -> tuple[Job, int, bytes]:
    """The job, its record's size (record_bytes) and its encoded part (codec.encode_job_part,
    spliced into its record by submit_jobs: encoded once). `traceparent`: the request span's
    (api/observe.py), stored so the scheduler's batch span links to it. `memo`: a bulk's, so
    its jobs' groups are built and encoded once per distinct spelling."""
    try:
        groups, groups_part = memo.groups(spec) if memo is not None else (None, None)
        job = spec.to_job(job_id, traceparent, groups)
    except InvalidInputError as exc:  # the model's own rules: a second line behind Pydantic's
        raise ApiError(422, "invalid job", str(exc), where) from None
    check_gang_width(ctx, job, where)
    part = codec.encode_job_part(job, groups_part)
    return job, check_record_size(ctx, job, where, part), part


def check_gang_width(ctx: ApiContext, job: Job, where: str) -> None:
    if job.mode is not TransactionMode.ALL_OR_NOTHING:
        return
    max_ops = ctx.store.limits.max_txn_ops
    widest = max_gang_machines(max_ops, codec.is_sharded(job))
    by_limit = math.ceil(job.task_count / ctx.max_tasks_per_machine)
    spread = max((g.count for g in job.groups if g.different_machines), default=0)
    least = max(by_limit, spread)
    if least > widest:
        why = (f"a different_machines group of {spread} tasks" if spread >= by_limit
               else f"{job.task_count} tasks at most {ctx.max_tasks_per_machine} per machine")
        raise ApiError(422, "gang too large",
                       f"a gang commits in one txn, which holds at most {widest} machines (max_txn_ops={max_ops}); "
                       f"this one spans at least {least} ({why}). Submit it as mode=incremental, or split it",
                       f"{where}.groups")


def body_digest(spec: JobIn) -> str:
    canonical = json.dumps(spec.model_dump(mode="json", by_alias=True), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


@dataclasses.dataclass(frozen=True)
class Prepared:
    """A single submission checked and ready for its txn: the job, its record's size, and
    with an Idempotency-Key its guard record and the body's digest."""

    job: Job
    size: int
    guard: Put | None = None
    body: str = ""
    part: bytes | None = None  # codec.encode_job_part(job)


def prepare_one(ctx: ApiContext, who: Principal, spec: JobIn, idempotency_key: str | None,
                traceparent: str | None = None) -> Prepared:
    """Every check of a single submission, before any write (the body's digest leaves the
    traceparent out: a replay from another trace is the same job)."""
    job, size, part = to_job(ctx, spec, spec.id or new_job_id(), "body", traceparent)
    if idempotency_key is None:
        return Prepared(job, size, part=part)
    if not _KEY.match(idempotency_key):
        raise ApiError(422, "invalid header", "Idempotency-Key must be 1-255 printable ASCII characters",
                       "header.Idempotency-Key")
    body = body_digest(spec)
    scope = hashlib.sha256(f"{who.name}\0{idempotency_key}".encode()).hexdigest()
    guard = Put(ctx.keys.idempotency(scope),
                codec.encode_obj({"job": job.id, "body": body, "by": who.name, "at": ctx.clock.now()}))
    return Prepared(job, size, guard, body, part)


def outcome_of(prepared: Prepared, result: SubmitResult) -> str | ApiError:
    """What a submission's txn(s) came to: the id of the job it made, or of the job an
    Idempotency-Key replay made earlier ("replay:" before it), or the 409 that refuses it."""
    jid = prepared.job.id
    if jid in result.accepted:
        return jid
    if prepared.guard is not None and jid in result.guard_taken:
        stored = codec.decode_obj(prepared.guard.key, result.guard_taken[jid])
        if stored.get("body") != prepared.body:
            return ApiError(409, "idempotency key reused",
                            f"this Idempotency-Key was used for job {stored.get('job')!r} with a different body",
                            "header.Idempotency-Key")
        return REPLAY + str(stored["job"])
    return ApiError(409, "job exists", f"a job with id {jid!r} already exists", "body.id")


REPLAY = "replay:"


def submit_bulk(ctx: ApiContext, store: CellStore, bulk: BulkIn, traceparent: str | None = None) -> BulkOut:
    """Every job is checked before the first write; then each is written atomically
    (many per txn, the txns sent together: CellStore.txn_sequence), and the answer gives each job's
    outcome. Every job stores the one request's `traceparent`."""
    jobs: list[Job] = []
    sizes: list[int] = []
    parts: dict[str, bytes] = {}
    seen: dict[str, int] = {}
    memo = GroupsMemo()
    for i, spec in enumerate(bulk.jobs):
        job, size, part = to_job(ctx, spec, spec.id or new_job_id(), f"body.jobs.{i}", traceparent, memo)
        if job.id in seen:
            raise ApiError(422, "duplicate job id", f"job id {job.id!r} is also at body.jobs.{seen[job.id]}",
                           f"body.jobs.{i}.id")
        seen[job.id] = i
        jobs.append(job)
        sizes.append(size)
        parts[job.id] = part
    # submit_jobs packs by count; the sizes cut txns by bytes too, so none goes over the
    # store's request bytes (large jobs would otherwise make a txn the store refuses).
    budget = int(store.limits.max_request_bytes * REQUEST_BYTES_BUDGET)
    result = submit_jobs(store, ctx.keys, jobs, ctx.clock.now(), sizes=sizes, max_bytes=budget, job_parts=parts)
    accepted, rejected = set(result.accepted), result.rejected
    results = [BulkOutcome(index=i, id=j.id, created=j.id in accepted, reason=rejected.get(j.id, ""))
               for i, j in enumerate(jobs)]
    return BulkOut(created=len(accepted), refused=len(jobs) - len(accepted), results=results,
                   revision=result.revision)


def record_bytes(job: Job, part: bytes | None = None) -> int:
    """What the job's submission txn writes for it: its record, queue entry and keys (the
    record as encode_job(JobRecord(job)) writes it, its tail measured once per kind)."""
    if part is None:
        part = codec.encode_job_part(job)
    sharded = codec.is_sharded(job)
    tail = _TAIL_BYTES.get(sharded)
    if tail is None:
        tail = _TAIL_BYTES[sharded] = len(codec.record_tail(JobRecord(job)))
    return len(codec.splice_record(b"", b"")) + len(part) + tail + 4 * len(job.id) + 200


_TAIL_BYTES: dict[bool, int] = {}


def check_record_size(ctx: ApiContext, job: Job, where: str, part: bytes | None = None) -> int:
    """The job's record_bytes, refused when one txn could not hold it."""
    size, budget = record_bytes(job, part), int(ctx.store.limits.max_request_bytes * REQUEST_BYTES_BUDGET)
    if size > budget:
        raise ApiError(422, "job too large", f"the job's record is about {size} bytes; one txn holds {budget}",
                       where)
    return size
