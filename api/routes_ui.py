"""The /ui dashboard (docs/architecture.md, "Observability"): the page itself (plain HTML and
JavaScript, open: it holds no data) and its read-only data routes, which take a reader token
like every /v1 GET. Each refresh sends only what changed since the revision the page last saw:
the machines whose spec or allocation has a newer mod_revision, the schedulers whose published
activity key does."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi import Path as PathParam
from fastapi.responses import HTMLResponse, Response

from cellsched.cellstate import codec
from cellsched.cellstate.index_entry import listed_jobs
from cellsched.cellstate.model import JobClass
from cellsched.cellstate.store import Get
from cellsched.schedulers.activity import decode_activity

from .auth import Principal
from .context import Reader, ctx_of
from .errors import ApiError, responses
from .heatmap_frame import heatmap_frame
from .models_cell import QueueLengths
from .models_jobs import NAME_PATTERN
from .models_ui import (
    Activity,
    DecisionSummary,
    DecisionTraces,
    Heatmap,
    SchedulerActivity,
    SeriesPoint,
)
from .whole_number import DIGITS

router = APIRouter(tags=["ui"])
STATIC = Path(__file__).with_name("static")
MAX_PARKED_LISTED = 20
REVISION = Query(ge=0, le=2**63 - 1, description="the revision the last answer carried; 0: everything")


@router.get("/ui", include_in_schema=False)
def dashboard_page():
    return HTMLResponse((STATIC / "dashboard.html").read_text())


@router.get("/ui/dashboard.js", include_in_schema=False)
def dashboard_script():
    return Response((STATIC / "dashboard.js").read_text(), media_type="text/javascript")


@router.get("/v1/cell/heatmap", operation_id="cell_heatmap", response_model=Heatmap,
            responses=responses(401, 403, 422, 429, 503))
def cell_heatmap(request: Request, since: Annotated[int, REVISION, DIGITS] = 0, _: Principal = Reader):
    """Each machine's heat (its fullest resource in percent), only those whose spec or
    allocation changed after revision `since` (mod_revision), from one consistent read; when
    that list would be bigger, every machine's heat as one byte each (`dense`)."""
    ctx = ctx_of(request)
    return heatmap_frame(ctx.store, ctx.keys, since)


def _summary(d: dict) -> DecisionSummary:
    t = d.get("totals") or {}
    return DecisionSummary(seq=d["seq"], start=d["start"], dur_ms=d["dur_ms"], jobs=d["jobs"],
                           placed=int(t.get("jobs_placed", 0)), parked=int(t.get("jobs_parked", 0)),
                           conflicts=int(t.get("conflicted_claims", 0)))


@router.get("/v1/ui/activity", operation_id="ui_activity", response_model=Activity,
            responses=responses(401, 403, 422, 429, 503))
def ui_activity(request: Request, since: Annotated[int, REVISION, DIGITS] = 0, _: Principal = Reader):
    """Queue lengths, the first parked jobs, the live schedulers, and for those that published
    after revision `since` their metrics, busyness series and recent decisions; one read."""
    ctx = ctx_of(request)
    k = ctx.keys
    gets = [Get(k.metrics_prefix, prefix=True), Get(k.activity_prefix, prefix=True)]
    for c in JobClass:
        gets += [Get(k.queue_prefix(c), prefix=True), Get(k.parked_prefix(c), prefix=True)]
    result = ctx.store.txn([], gets)
    metrics_kvs, activity_kvs, *indexes = result.reads
    full = since <= 0 or since > result.revision
    metrics = {k.last_segment(kv.key): kv for kv in metrics_kvs}
    activity = decode_activity(k, activity_kvs)
    changed = []
    for name in sorted(metrics):
        kv = metrics[name]
        rev, act = activity.get(name, (0, {}))
        if not full and max(kv.mod_revision, rev) <= since:
            continue
        m = codec.decode_obj(kv.key, kv.value)
        changed.append(SchedulerActivity(
            name=name, job_class=m.get("job_class", ""), published_at=m.get("published_at", 0.0),
            busyness=m.get("busyness", 0.0), conflict_fraction=m.get("conflict_fraction", 0.0),
            tasks_placed=m.get("tasks_placed", 0), jobs_parked=m.get("jobs_parked", 0),
            series=[SeriesPoint(t=t, busyness=b, conflict_fraction=f) for t, b, f in act.get("series", [])],
            decisions=[_summary(d) for d in act.get("decisions", [])]))
    queues = {c.value: QueueLengths(pending=listed_jobs(indexes[2 * i]), parked=len(indexes[2 * i + 1]))
              for i, c in enumerate(JobClass)}
    parked = [k.last_segment(kv.key) for i in range(len(JobClass)) for kv in indexes[2 * i + 1]]
    return Activity(cell=k.cell, revision=result.revision, alive=sorted(metrics), changed=changed, queues=queues,
                    parked_jobs=parked[:MAX_PARKED_LISTED])


@router.get("/v1/ui/decisions/{scheduler}", operation_id="ui_decisions", response_model=DecisionTraces,
            responses=responses(401, 403, 404, 422, 429, 503))
def ui_decisions(request: Request, scheduler: str = PathParam(pattern=NAME_PATTERN),
                 seq: Annotated[int | None, Query(ge=1, le=2**63 - 1, description="only this attempt (an empty list once "
                                                                    "it left the ring); omitted: the whole ring"),
                                DIGITS] = None,
                 _: Principal = Reader):
    """A scheduler's recent batch attempts, each with its spans (offsets in ms from its start)
    and its conflict and park events: what the dashboard draws as a waterfall."""
    ctx = ctx_of(request)
    kv = ctx.store.get(ctx.keys.activity(scheduler))
    if kv is None:
        raise ApiError(404, "not found", f"scheduler {scheduler!r} has published no activity (or its lease is gone)")
    decisions = codec.decode_obj(kv.key, kv.value).get("decisions", [])
    if seq is not None:
        decisions = [d for d in decisions if d.get("seq") == seq]
    return DecisionTraces.model_validate({"scheduler": scheduler, "decisions": decisions})
