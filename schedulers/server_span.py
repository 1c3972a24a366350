"""The API's request span, made without the SDK's span machinery (docs/architecture.md,
"Observability", "The HTTP span"; imported only by schedulers/tracing.py).

Why: the SDK's `_Span` cleans every attribute into a locked, bounded dict at start and again at
`set_attributes`, and copies itself into a `ReadableSpan` at `end`: about 40 us of the ~55 us a
traced request paid (a micro-benchmark of start, attach, traceparent and end; the file export
was the rest). A request span has five fixed attributes, no events and no links, so this one
keeps a plain dict and, at `end`, hands the span processors the `ReadableSpan` they export,
built once. What stays the SDK's: the sampler's decision (OTEL_TRACES_SAMPLER, with the
caller's context as parent), the id generator, the resource, the processors (batching, the
exporters), and the attribute value length limit (OTEL_[SPAN_]ATTRIBUTE_VALUE_LENGTH_LIMIT).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan, SpanProcessor, sampling
from opentelemetry.sdk.trace.id_generator import IdGenerator
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode, TraceFlags


class ServerSpans:
    """Makes request spans for one provider's sampler, ids, resource and processors."""

    def __init__(self, sampler: sampling.Sampler, ids: IdGenerator, resource: Resource,
                 processors: Sequence[SpanProcessor], scope: InstrumentationScope, max_value_len: int | None):
        self.sampler, self.ids, self.resource, self.processors = sampler, ids, resource, tuple(processors)
        self.scope, self.max_value_len = scope, max_value_len
        # The default sampler, parentbased_always_on, samples every root span and adds nothing:
        # a request without a caller's traceparent skips the call (what it would answer, known).
        root = getattr(sampler, "_root", None) if type(sampler) is sampling.ParentBased else None
        self.roots_sampled = root is sampling.ALWAYS_ON

    def start(self, name: str, parent: SpanContext | None, attributes: Mapping) -> trace.Span:
        if parent is None and self.roots_sampled:
            return self._recording(name, self.ids.generate_trace_id(), None, None, attributes, None)
        trace_id = parent.trace_id if parent is not None else self.ids.generate_trace_id()
        ctx = trace.set_span_in_context(trace.NonRecordingSpan(parent)) if parent is not None else Context()
        result = self.sampler.should_sample(ctx, trace_id, name, SpanKind.SERVER, attributes, ())
        if result.decision.is_sampled():
            return self._recording(name, trace_id, parent, result.trace_state, attributes, result.attributes)
        flags = TraceFlags.DEFAULT
        # Not sampled: what the SDK returns then, a span with ids (its traceparent says 00) that
        # records nothing. RECORD_ONLY, which only a custom sampler gives, is treated so too:
        # the batch processor would drop such a span unexported anyway.
        return trace.NonRecordingSpan(self._context(trace_id, parent, flags, result.trace_state))

    def _context(self, trace_id: int, parent: SpanContext | None, flags: int, trace_state) -> SpanContext:
        # W3C level 2's random-trace-id flag, set as the SDK sets it on its own spans
        if (parent.trace_flags.random_trace_id if parent is not None else self.ids.is_trace_id_random()):
            flags |= TraceFlags.RANDOM_TRACE_ID
        return SpanContext(trace_id, self.ids.generate_span_id(), is_remote=False, trace_flags=TraceFlags(flags),
                           trace_state=trace_state)

    def _recording(self, name: str, trace_id: int, parent: SpanContext | None, trace_state, attributes: Mapping,
                   extra: Mapping | None) -> ServerSpan:
        span = ServerSpan(self, name, self._context(trace_id, parent, TraceFlags.SAMPLED, trace_state), parent)
        span.set_attributes(attributes)
        if extra and extra != attributes:  # the SDK's samplers hand the span's own attributes back
            span.set_attributes(extra)
        return span


class ServerSpan(trace.Span):
    """A recording span of kind SERVER: attributes, status, a name; events only through
    record_exception and add_event (none in practice)."""

    def __init__(self, maker: ServerSpans, name: str, context: SpanContext, parent: SpanContext | None):
        self._maker, self._name, self._context, self._parent = maker, name, context, parent
        self._attributes: dict = {}
        self._events: list[Event] = []
        self._status = Status(StatusCode.UNSET)
        self._start = time.time_ns()
        self._ended = False

    def get_span_context(self) -> SpanContext:
        return self._context

    def is_recording(self) -> bool:
        return not self._ended

    def set_attributes(self, attributes: Mapping) -> None:
        if self._ended:
            return
        limit = self._maker.max_value_len
        if limit is None:  # the default: no length limit, nothing to cut
            self._attributes.update(attributes)
            return
        for key, value in attributes.items():
            if isinstance(value, str):
                value = value[:limit]
            self._attributes[key] = value

    def set_attribute(self, key: str, value) -> None:
        self.set_attributes({key: value})

    def add_event(self, name: str, attributes: Mapping | None = None, timestamp: int | None = None) -> None:
        if not self._ended:
            self._events.append(Event(name, dict(attributes or {}), timestamp or time.time_ns()))

    def add_link(self, context: SpanContext, attributes: Mapping | None = None) -> None:
        pass  # a request span links nothing (the scheduler's batch span links to it)

    def update_name(self, name: str) -> None:
        if not self._ended:
            self._name = name

    def set_status(self, status, description: str | None = None) -> None:
        if self._ended:
            return
        self._status = status if isinstance(status, Status) else Status(status, description)

    def record_exception(self, exception: BaseException, attributes: Mapping | None = None,
                         timestamp: int | None = None, escaped: bool = False) -> None:
        del escaped  # the Span interface's; the event is the same either way
        self.add_event("exception", {"exception.type": type(exception).__name__, **(attributes or {})}, timestamp)

    def end(self, end_time: int | None = None) -> None:
        if self._ended:
            return
        self._ended = True
        maker = self._maker
        done = ReadableSpan(self._name, self._context, self._parent, maker.resource, self._attributes,
                            tuple(self._events), (), SpanKind.SERVER, None, self._status, self._start,
                            end_time or time.time_ns(), maker.scope)
        for processor in maker.processors:
            processor.on_end(done)
