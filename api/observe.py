"""What each request leaves behind (docs/architecture.md, "Observability"): its latency in this
process's `cellsched_api_request_seconds{route, status}` histogram, and, when tracing is on, an
HTTP server span.

- `route` is the route template (`/v1/jobs/{job_id}`), read from the route Starlette matched, or
  matched here for answers sent before routing (a 413 from api/body_limit.py); `unmatched` when
  no route matches (a 404 for an unknown path). Never the raw path: the label set stays bounded.
- The span (schedulers/tracing.py `start_server_span`) is a child of the caller's `traceparent`
  header when it sent a valid one. It is named `METHOD template` and carries the method, the
  path, the template and the status code: no header, query string or body, so no token. A
  handler reads its traceparent (`request_traceparent`) to store it with the jobs it submits.
- With tracing off the middleware tests one attribute per request and makes no span.

Pure ASGI, outside the body limit, so every answer is counted.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Sequence

from prometheus_client import CollectorRegistry, Histogram, generate_latest
from starlette.requests import Request
from starlette.routing import BaseRoute, Match

from cellsched.schedulers import tracing

SPAN_KEY = "cellsched.span"  # the request's server span, in the ASGI scope
UNMATCHED = "unmatched"
MAX_KNOWN_SCHEDULERS = 4096
# Seconds: from a healthz (well under 1 ms) to a bulk of 1,000 jobs on a slow store.
REQUEST_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class ApiMetrics:
    """This process's own metrics (the cell's come from the store, schedulers/prometheus_text.py),
    and the scheduler names its scrapes have seen, so one whose key went is reported up 0."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.request_seconds = Histogram("cellsched_api_request_seconds",
                                         "Seconds this API process took to answer, by route template and status",
                                         ["route", "status"], registry=self.registry, buckets=REQUEST_BUCKETS)
        self._known: set[str] = set()
        self._lock = threading.Lock()

    def text(self) -> bytes:
        return generate_latest(self.registry)

    def known_schedulers(self, live: Iterable[str]) -> list[str]:
        """Every scheduler seen by this process's scrapes, `live` included (bounded: past the
        bound, new names are not remembered, only reported while live)."""
        with self._lock:
            for name in live:
                if len(self._known) >= MAX_KNOWN_SCHEDULERS:
                    break
                self._known.add(name)
            return sorted(self._known)


def _template(scope, routes: Sequence[BaseRoute]) -> str:
    route = scope.get("route")
    if route is None:  # answered before routing (413), or no route at all (404)
        for candidate in routes:
            match, _ = candidate.matches(scope)
            if match is not Match.NONE:
                route = candidate
                break
    if route is None:
        return UNMATCHED
    return str(getattr(route, "path_format", None) or getattr(route, "path", UNMATCHED))


def _header(scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key == name:
            return value.decode("latin-1")
    return None


class Observe:
    def __init__(self, app, metrics: ApiMetrics, routes: Sequence[BaseRoute], traced: tracing.Tracing | None):
        """`routes`: the routers' own routes (full paths), matched for answers sent before routing."""
        self.app, self.metrics, self.routes, self.traced = app, metrics, routes, traced

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = time.perf_counter()
        status = 500  # unless the app starts a response
        error: str | None = None

        async def sending(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        span = token = None
        if self.traced is not None:
            span = self.traced.start_server_span(scope["method"], _header(scope, b"traceparent"), {
                "http.request.method": scope["method"], "url.path": scope["path"],
                "url.scheme": scope.get("scheme", "http")})
            scope[SPAN_KEY] = span
            token = tracing.attach(span)  # log lines of this request carry its ids
        try:
            await self.app(scope, receive, sending)
        except BaseException as exc:
            status, error = 500, type(exc).__name__
            raise
        finally:
            route = _template(scope, self.routes)
            self.metrics.request_seconds.labels(route, str(status)).observe(time.perf_counter() - started)
            if span is not None:
                tracing.detach(token)
                tracing.end_server_span(span, f"{scope['method']} {route}",
                                        {"http.route": route, "http.response.status_code": status},
                                        error or (f"HTTP {status}" if status >= 500 else None))


def request_traceparent(request: Request) -> str | None:
    """What a submission stores with its jobs (Job.traceparent): the request span's traceparent;
    with tracing off here, the caller's own `traceparent` header when well formed, so a traced
    client still reaches the scheduler's batch span; else None."""
    span = request.scope.get(SPAN_KEY)
    if span is not None:
        tp = tracing.traceparent_of(span)
        if tp is not None:
            return tp
    return tracing.valid_traceparent(request.headers.get("traceparent"))
