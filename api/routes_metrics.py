"""GET /metrics: the whole cell's metrics in Prometheus' text format, whichever API process is
asked (schedulers/prometheus_text.py, from what the schedulers published into the store and what
the store holds), then this process's own (`cellsched_api_request_seconds`, api/observe.py)."""

from __future__ import annotations

import math

from fastapi import APIRouter, Request, Response
from fastapi.responses import PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST

from cellsched.schedulers.cell_gauges import cell_totals, queue_lengths
from cellsched.schedulers.metrics_publish import read_published
from cellsched.schedulers.prometheus_text import render

from .context import ctx_of
from .errors import ApiError, responses
from .observe import ApiMetrics

router = APIRouter(tags=["metrics"])
# The route's own media type is text/plain; its errors are Problems in JSON like every route's.
_PROBLEM_JSON = {"application/json": {"schema": {"$ref": "#/components/schemas/Problem"}}}
_ERRORS = {code: {"description": r["description"], "content": _PROBLEM_JSON} for code, r in responses(429, 503).items()}


def scrape_bucket(request: Request) -> str:
    # "@" is not allowed in a token name (api/auth.py), so a client address never shares a token's bucket.
    return f"scrape@{request.client.host if request.client else 'unknown'}"


@router.get("/metrics", operation_id="metrics", response_class=PlainTextResponse,
            responses={200: {"description": "Prometheus text exposition format"}, **_ERRORS})
def metrics(request: Request):
    """The cell's metrics for Prometheus. Open: no bearer token, because scrapers usually carry
    none and nothing here is a secret (names, counts, capacities). Rate limited like every route,
    with the process's --rate/--burst, per client address instead of per token: each scrape reads
    every machine's spec and allocation from the store. The reads are several, not one txn."""
    ctx = ctx_of(request)
    who = scrape_bucket(request)
    wait = ctx.limiter.take(who)
    if wait > 0:
        raise ApiError(429, "rate limited", f"{who} is over its rate limit",
                       headers={"Retry-After": str(max(1, math.ceil(wait)))})
    published = read_published(ctx.store, ctx.keys)
    capacity, used = cell_totals(ctx.store, ctx.keys)
    queues = queue_lengths(ctx.store, ctx.keys)
    own: ApiMetrics = request.app.state.api_metrics
    body = render(published, capacity, used, queues, known=own.known_schedulers(published)) + own.text()
    return Response(body, media_type=CONTENT_TYPE_LATEST)
