"""OpenTelemetry setup: the one module of the schedulers that imports it (docs/architecture.md,
"Observability"; an import-linter contract holds that).

What a process traces is configured by the standard variables, read once:

    OTEL_SDK_DISABLED=true                  nothing is traced
    OTEL_TRACES_EXPORTER=otlp,console,none  a comma list; unset means none (see below)
    OTEL_EXPORTER_OTLP_[TRACES_]PROTOCOL    http/protobuf (default) or grpc (extra `otlp-grpc`)
    OTEL_EXPORTER_OTLP_[TRACES_]ENDPOINT    read by the OTLP exporters themselves
    OTEL_TRACES_SAMPLER[_ARG]               always_on, always_off, traceidratio and their parentbased_
    OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES
    CELLSCHED_TRACE_FILE=path               JSON lines, one finished span a line, for offline use

Unset OTEL_TRACES_EXPORTER means no exporter (the spec's default is otlp), unless an OTLP
endpoint variable is set: a bare process must not send spans to a collector nobody runs.
With no exporter the tracer is off, and a scheduler's DecisionTracer skips every span call
(schedulers/decision_trace.py): less than a no-op tracer, which still builds its spans.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Mapping, Sequence
from json.encoder import c_make_encoder, encode_basestring_ascii  # type: ignore[attr-defined]
from typing import IO

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanLimits, TracerProvider, sampling
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SimpleSpanProcessor,
    SpanExporter,
    SpanExportResult,
)
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import Link, NonRecordingSpan, SpanContext, SpanKind, Status, StatusCode, TraceFlags

from cellsched.cellstate.errors import InvalidInputError

from .light_spans import LightSpans

TRACE_FILE_VAR = "CELLSCHED_TRACE_FILE"
DEFAULT_SERVICE = "cellsched-scheduler"
# A batch span links every job it decides (up to claim_batch, 4,096 in the k8s case) and carries
# an event per conflict: the SDK's default limit of 128 of each would drop most of them.
MIN_LINKS_AND_EVENTS = 8192

_SAMPLERS = {
    "always_on": lambda arg: sampling.ALWAYS_ON,
    "always_off": lambda arg: sampling.ALWAYS_OFF,
    "traceidratio": lambda arg: sampling.TraceIdRatioBased(arg),
    "parentbased_always_on": lambda arg: sampling.ParentBased(sampling.ALWAYS_ON),
    "parentbased_always_off": lambda arg: sampling.ParentBased(sampling.ALWAYS_OFF),
    "parentbased_traceidratio": lambda arg: sampling.ParentBased(sampling.TraceIdRatioBased(arg)),
}


def span_obj(span: ReadableSpan) -> dict:
    """One finished span as plain data, ids in hex, times in ns since the epoch. Compact on
    purpose: ReadableSpan.to_json costs about 30 us per link, and a batch span has thousands."""
    ctx = span.context
    assert ctx is not None  # a finished SDK span always has one
    obj: dict = {"name": span.name, "trace_id": f"{ctx.trace_id:032x}", "span_id": f"{ctx.span_id:016x}",
                 "parent_span_id": f"{span.parent.span_id:016x}" if span.parent is not None else None,
                 "start_ns": span.start_time, "end_ns": span.end_time, "status": span.status.status_code.name,
                 "service": span.resource.attributes.get("service.name"),
                 "attributes": dict(span.attributes or {})}
    if span.events:
        obj["events"] = [{"name": e.name, "ts_ns": e.timestamp, "attributes": dict(e.attributes or {})}
                         for e in span.events]
    if span.links:
        obj["links"] = [[f"{lk.context.trace_id:032x}", f"{lk.context.span_id:016x}"] for lk in span.links]
    return obj


# One encoder, made once (json.dumps with separators builds a new one per call, and
# JSONEncoder.encode a new C encoder and its circular-check dict per value): the C encoder
# itself, called as JSONEncoder.iterencode calls it; the same text (ASCII, compact, default=str).
_plain_encode = json.JSONEncoder(separators=(",", ":"), default=str).encode
_c_encode = (c_make_encoder(None, str, encode_basestring_ascii, None, ":", ",", False, False, True)
             if c_make_encoder is not None else None)  # None: a Python without the C accelerator


def _encode(value) -> str:
    return "".join(_c_encode(value, 0)) if _c_encode is not None else _plain_encode(value)

# A span's name and service are a few strings repeated on every line: encoded once each
# (bounded: a request span's name carries the client's method).
_MAX_CACHED = 256
_strings: dict[str, str] = {}


def _string(value) -> str:
    text = _strings.get(value) if type(value) is str else None
    if text is None:
        text = _encode(value)
        if type(value) is str and len(_strings) < _MAX_CACHED:
            _strings[value] = text
    return text


def _ns(value) -> str:
    return str(value) if type(value) is int else _encode(value)


def span_line(span: ReadableSpan) -> str:
    """`span_obj(span)` as compact JSON, the same text, written without the dict: the file
    exporter's hot path (one line per API request; docs/architecture.md, "Observability")."""
    ctx = span.context
    assert ctx is not None  # a finished SDK span always has one
    parent = f'"{span.parent.span_id:016x}"' if span.parent is not None else "null"
    attrs = span.attributes
    service = _string(span.resource.attributes.get("service.name"))
    line = (f'{{"name":{_string(span.name)},"trace_id":"{ctx.trace_id:032x}",'
            f'"span_id":"{ctx.span_id:016x}","parent_span_id":{parent},"start_ns":{_ns(span.start_time)},'
            f'"end_ns":{_ns(span.end_time)},"status":"{span.status.status_code.name}","service":{service},'
            f'"attributes":{_encode(attrs if type(attrs) is dict else dict(attrs or {}))}')
    if span.events:
        line += ',"events":' + _encode([{"name": e.name, "ts_ns": e.timestamp, "attributes": dict(e.attributes or {})}
                                        for e in span.events])
    if span.links:
        line += ',"links":[' + ",".join([f'["{lk.context.trace_id:032x}","{lk.context.span_id:016x}"]'
                                         for lk in span.links]) + "]"
    return line + "}\n"


class JsonLinesSpanExporter(SpanExporter):
    """Finished spans appended to a file, one JSON object a line (span_obj, encoded by span_line);
    each export (a batch of up to 512 spans from the batch processor) is one write."""

    def __init__(self, path: str):
        self.path = path
        self._lock = threading.Lock()
        self._file: IO[str] | None = open(path, "a", encoding="utf-8")  # noqa: SIM115 - closed by shutdown

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        lines = "".join([span_line(span) for span in spans])
        with self._lock:
            if self._file is None:
                return SpanExportResult.FAILURE
            self._file.write(lines)
            self._file.flush()
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None


class Tracing:
    """A tracer and the provider behind it; `enabled` False when nothing would be exported."""

    def __init__(self, provider: TracerProvider | trace.NoOpTracerProvider | None, name: str = "cellsched",
                 light: LightSpans | None = None):
        """`light`: the span maker for this provider (`to` makes one: schedulers/light_spans.py),
        else the SDK's own spans (the no-op tracer's, for `noop`)."""
        self.provider = provider
        self.enabled = provider is not None
        self.tracer = provider.get_tracer(name) if provider is not None else trace.NoOpTracer()
        self.light = light

    @classmethod
    def off(cls) -> Tracing:
        return cls(None)

    @classmethod
    def noop(cls) -> Tracing:
        """Spans through OpenTelemetry's no-op tracer: what 'off' is measured against."""
        return cls(trace.NoOpTracerProvider())

    @classmethod
    def to(cls, exporters: Sequence[SpanExporter], batch: bool = False, sampler: sampling.Sampler | None = None,
           service: str = DEFAULT_SERVICE) -> Tracing:
        """A provider exporting to `exporters`: at once (tests) or batched in a thread (production)."""
        limits = _span_limits()
        provider = TracerProvider(sampler=sampler or sampling.ParentBased(sampling.ALWAYS_ON),
                                  resource=Resource.create({"service.name": service}), span_limits=limits)
        processors = [BatchSpanProcessor(exporter) if batch else SimpleSpanProcessor(exporter) for exporter in exporters]
        for processor in processors:
            provider.add_span_processor(processor)
        light = LightSpans(provider.sampler, provider.id_generator, provider.resource, processors,
                           InstrumentationScope("cellsched"), limits.max_span_attribute_length, limits.max_links,
                           limits.max_events)
        return cls(provider, light=light)

    def start_span(self, name: str, start_ns: int | None = None, parent=None, links: Sequence[Link] = (),
                   attributes: Mapping | None = None):
        """A span, child of the span `parent` when given (explicitly: commit txns run in threads)."""
        if self.light is not None:
            return self.light.start(name, parent.get_span_context() if parent is not None else None, attributes or {},
                                    SpanKind.INTERNAL, links, start_ns)
        ctx = trace.set_span_in_context(parent) if parent is not None else otel_context.Context()
        return self.tracer.start_span(name, context=ctx, links=links, attributes=attributes, start_time=start_ns)

    def start_server_span(self, name: str, traceparent: str | None = None, attributes: Mapping | None = None):
        """An HTTP server span (kind SERVER), child of the caller's W3C `traceparent` when it sent a
        valid one, else the root of a new trace (the API's request span, api/observe.py)."""
        remote = _context_of(traceparent)
        if self.light is not None:  # the cheap span (schedulers/light_spans.py)
            return self.light.start(name, remote, attributes or {})
        ctx = trace.set_span_in_context(NonRecordingSpan(remote)) if remote is not None else otel_context.Context()
        return self.tracer.start_span(name, context=ctx, kind=SpanKind.SERVER, attributes=attributes)

    def flush(self) -> None:
        if isinstance(self.provider, TracerProvider):
            self.provider.force_flush()

    def shutdown(self) -> None:
        if isinstance(self.provider, TracerProvider):
            self.provider.shutdown()


def _span_limits() -> SpanLimits:
    links = os.environ.get("OTEL_SPAN_LINK_COUNT_LIMIT")
    events = os.environ.get("OTEL_SPAN_EVENT_COUNT_LIMIT")
    return SpanLimits(max_links=None if links else MIN_LINKS_AND_EVENTS,
                      max_events=None if events else MIN_LINKS_AND_EVENTS)


def _sampler(env: Mapping[str, str]) -> sampling.Sampler:
    name = env.get("OTEL_TRACES_SAMPLER", "parentbased_always_on").strip().lower()
    if name not in _SAMPLERS:
        raise InvalidInputError(f"OTEL_TRACES_SAMPLER={name!r}: expected one of {sorted(_SAMPLERS)}")
    raw = env.get("OTEL_TRACES_SAMPLER_ARG", "1.0")
    try:
        arg = float(raw)
    except ValueError:
        raise InvalidInputError(f"OTEL_TRACES_SAMPLER_ARG={raw!r}: expected a number in [0, 1]") from None
    if not 0.0 <= arg <= 1.0:
        raise InvalidInputError(f"OTEL_TRACES_SAMPLER_ARG={raw!r}: expected a number in [0, 1]")
    return _SAMPLERS[name](arg)


def _otlp_exporter(env: Mapping[str, str]) -> SpanExporter:
    protocol = (env.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or env.get("OTEL_EXPORTER_OTLP_PROTOCOL")
                or "http/protobuf").strip()
    # The endpoint from `env` (the exporters would read os.environ): the signal's own as given,
    # the generic one with the signal's path appended, as the spec says.
    endpoint = env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    base = env.get("OTEL_EXPORTER_OTLP_ENDPOINT")
    if protocol == "http/protobuf":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        if not endpoint and base:
            endpoint = base.rstrip("/") + "/v1/traces"
        return OTLPSpanExporter(endpoint=endpoint or None)
    if protocol == "grpc":
        try:
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (  # type: ignore[import-not-found]
                OTLPSpanExporter as GrpcExporter,
            )
        except ImportError:
            raise InvalidInputError("OTEL_EXPORTER_OTLP_PROTOCOL=grpc needs the gRPC exporter: "
                                    "pip install 'cellsched[otlp-grpc]'") from None
        return GrpcExporter(endpoint=endpoint or base or None)
    raise InvalidInputError(f"OTEL_EXPORTER_OTLP_PROTOCOL={protocol!r}: expected 'http/protobuf' or 'grpc'")


def from_env(env: Mapping[str, str] | None = None, service: str = DEFAULT_SERVICE) -> Tracing:
    """The tracing the OTEL_* variables and CELLSCHED_TRACE_FILE describe (module docstring)."""
    env = os.environ if env is None else env
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return Tracing.off()
    names = env.get("OTEL_TRACES_EXPORTER")
    if names is None:
        endpoint = env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_ENDPOINT")
        names = "otlp" if endpoint else "none"
    # Read before any exporter is built (a file exporter opens its file), and even when nothing
    # exports: a mistyped sampler is an error now, not on the day an exporter is added.
    sampler = _sampler(env)
    exporters: list[SpanExporter] = []
    for name in (n.strip().lower() for n in names.split(",") if n.strip()):
        if name == "otlp":
            exporters.append(_otlp_exporter(env))
        elif name == "console":
            exporters.append(ConsoleSpanExporter())
        elif name != "none":
            raise InvalidInputError(f"OTEL_TRACES_EXPORTER: unknown exporter {name!r}; expected otlp, console or none")
    if env.get(TRACE_FILE_VAR):
        exporters.append(JsonLinesSpanExporter(env[TRACE_FILE_VAR]))
    if not exporters:
        return Tracing.off()
    return Tracing.to(exporters, batch=True, sampler=sampler, service=env.get("OTEL_SERVICE_NAME") or service)


# -- the process's tracing -----------------------------------------------------------------

_installed: Tracing | None = None
_install_lock = threading.Lock()


def install(tracing: Tracing | None) -> Tracing | None:
    """Make `tracing` what schedulers created from now on use (None: read the environment
    again at the next use). Returns what was installed before."""
    global _installed
    with _install_lock:
        before, _installed = _installed, tracing
    return before


def current() -> Tracing:
    """The installed tracing, built from the environment on first use."""
    global _installed
    with _install_lock:
        if _installed is None:
            _installed = from_env()
        return _installed


# -- W3C trace context ----------------------------------------------------------------------

def _context_of(traceparent: str | None) -> SpanContext | None:
    """The remote span context a W3C traceparent names; None when it is missing or malformed."""
    # "00-<32 hex trace id>-<16 hex span id>-<2 hex flags>"; sliced, not split: a batch links thousands
    if not traceparent or len(traceparent) != 55 or traceparent[2] != "-" or traceparent[35] != "-" \
            or traceparent[52] != "-":
        return None
    try:
        trace_id, span_id = int(traceparent[3:35], 16), int(traceparent[36:52], 16)
        flags = int(traceparent[53:55], 16)
    except ValueError:
        return None
    if trace_id == 0 or span_id == 0:
        return None
    return SpanContext(trace_id, span_id, is_remote=True, trace_flags=TraceFlags(flags & 0xFF))


def link_to(traceparent: str | None, attributes: Mapping | None = None) -> Link | None:
    """A span link to the context a W3C traceparent names; None when it is missing or malformed
    (a job submitted without tracing, or by a client that sent garbage: never an error here)."""
    ctx = _context_of(traceparent)
    if ctx is None:
        return None
    return Link(ctx, attributes=dict(attributes) if attributes else None)


def valid_traceparent(value: str | None) -> str | None:
    """`value` in the canonical form when it is a well-formed W3C traceparent, else None."""
    ctx = _context_of(value.strip() if value else None)
    return None if ctx is None else f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-{int(ctx.trace_flags):02x}"


def end_server_span(span, name: str, attributes: Mapping, error: str | None = None) -> None:
    """Finish a server span under its final name (`METHOD route template`); `error` (a type
    name or `HTTP 5xx`, never a message that could quote a header) marks it failed."""
    span.update_name(name)
    span.set_attributes(attributes)
    if error is not None:
        span.set_status(Status(StatusCode.ERROR, error))
    span.end()


def traceparent_of(span) -> str | None:
    """The W3C traceparent of a span (what a submitter stores with a job)."""
    ctx = span.get_span_context()
    if not ctx.is_valid:
        return None
    return f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-{int(ctx.trace_flags):02x}"


def attach(span) -> object:
    """Make `span` the current one in this thread (for log lines); returns the token for detach."""
    return otel_context.attach(trace.set_span_in_context(span))


def detach(token: object) -> None:
    otel_context.detach(token)  # type: ignore[arg-type]


def current_ids() -> tuple[str, str] | None:
    """(trace id, span id) in hex of the current span, for log lines; None outside any span."""
    ctx = trace.get_current_span().get_span_context()
    if not ctx.is_valid:
        return None
    return f"{ctx.trace_id:032x}", f"{ctx.span_id:016x}"


def json_attr(obj: object) -> str:
    """A structured value as one attribute (OTLP attributes are scalars or arrays of them)."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"))
