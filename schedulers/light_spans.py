"""Every span cellsched makes, without the SDK's span machinery (docs/architecture.md,
"Observability", "The HTTP span"; imported only by schedulers/tracing.py).

Why: the SDK's `_Span` cleans every attribute into a locked, bounded dict at start and again at
`set_attributes`, wraps every link's attributes in another, and copies itself into a
`ReadableSpan` at `end`. For the API's request span that was about 40 us of the ~55 us a
traced request paid; for a scheduler's batch span, linked to every job it decides, about
15 us per linked job (`loadtests/bench_tracer_calls.py`). A span here keeps plain dicts and
lists and, at `end`, hands the span processors the `ReadableSpan` they export, built once.

What stays the SDK's: the sampler's decision (OTEL_TRACES_SAMPLER, with the parent's context),
the id generator, the resource, the processors (batching, the exporters), the attribute value
length limit (OTEL_[SPAN_]ATTRIBUTE_VALUE_LENGTH_LIMIT) and the link and event count limits
(a span over one keeps the newest, and says how many it dropped, as the SDK's BoundedList
does). Under the default sampler, parentbased_always_on, the decision is known without the
call: a root is sampled, a child follows its parent's sampled flag, and neither gets
attributes from it; any other sampler is called.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan, SpanProcessor, sampling
from opentelemetry.sdk.trace.id_generator import IdGenerator
from opentelemetry.sdk.util import BoundedList
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import Link, SpanContext, SpanKind, Status, StatusCode, TraceFlags

_DEFAULT_DELEGATES = (sampling.ALWAYS_ON, sampling.ALWAYS_ON, sampling.ALWAYS_OFF, sampling.ALWAYS_ON,
                      sampling.ALWAYS_OFF)  # root, then remote/local parent sampled/not, as ParentBased's defaults


def _is_default(sampler: sampling.Sampler) -> bool:
    if type(sampler) is not sampling.ParentBased:
        return False
    s = sampler
    return (s._root, s._remote_parent_sampled, s._remote_parent_not_sampled, s._local_parent_sampled,  # noqa: SLF001
            s._local_parent_not_sampled) == _DEFAULT_DELEGATES  # noqa: SLF001


class LightSpans:
    """Makes spans for one provider's sampler, ids, resource, processors and limits."""

    def __init__(self, sampler: sampling.Sampler, ids: IdGenerator, resource: Resource,
                 processors: Sequence[SpanProcessor], scope: InstrumentationScope, max_value_len: int | None,
                 max_links: int | None = None, max_events: int | None = None):
        self.sampler, self.ids, self.resource, self.processors = sampler, ids, resource, tuple(processors)
        self.scope, self.max_value_len = scope, max_value_len
        self.max_links, self.max_events = max_links, max_events
        self.default_sampler = _is_default(sampler)
        # A root span under a parent-based sampler whose root is always_on: sampled, nothing added.
        root = getattr(sampler, "_root", None) if type(sampler) is sampling.ParentBased else None
        self.roots_sampled = root is sampling.ALWAYS_ON

    def start(self, name: str, parent: SpanContext | None, attributes: Mapping, kind: SpanKind = SpanKind.SERVER,
              links: Sequence[Link] = (), start_ns: int | None = None) -> trace.Span:
        if parent is not None and not parent.is_valid:
            parent = None  # what the SDK does with an invalid parent: a new trace's root
        if parent is None and self.roots_sampled:
            return self._recording(name, kind, self.ids.generate_trace_id(), None, None, attributes, None, links,
                                   start_ns)
        if parent is not None and self.default_sampler:
            if parent.trace_flags.sampled:
                return self._recording(name, kind, parent.trace_id, parent, parent.trace_state, attributes, None,
                                       links, start_ns)
            return trace.NonRecordingSpan(self._context(parent.trace_id, parent, TraceFlags.DEFAULT,
                                                        parent.trace_state))
        trace_id = parent.trace_id if parent is not None else self.ids.generate_trace_id()
        ctx = trace.set_span_in_context(trace.NonRecordingSpan(parent)) if parent is not None else Context()
        result = self.sampler.should_sample(ctx, trace_id, name, kind, attributes, links)
        if result.decision.is_sampled():
            return self._recording(name, kind, trace_id, parent, result.trace_state, attributes, result.attributes,
                                   links, start_ns)
        # Not sampled: what the SDK returns then, a span with ids (its traceparent says 00) that
        # records nothing. RECORD_ONLY, which only a custom sampler gives, is treated so too:
        # the batch processor would drop such a span unexported anyway.
        return trace.NonRecordingSpan(self._context(trace_id, parent, TraceFlags.DEFAULT, result.trace_state))

    def _context(self, trace_id: int, parent: SpanContext | None, flags: int, trace_state) -> SpanContext:
        # W3C level 2's random-trace-id flag, set as the SDK sets it on its own spans
        if (parent.trace_flags.random_trace_id if parent is not None else self.ids.is_trace_id_random()):
            flags |= TraceFlags.RANDOM_TRACE_ID
        return SpanContext(trace_id, self.ids.generate_span_id(), is_remote=False, trace_flags=TraceFlags(flags),
                           trace_state=trace_state)

    def _recording(self, name: str, kind: SpanKind, trace_id: int, parent: SpanContext | None, trace_state,
                   attributes: Mapping, extra: Mapping | None, links: Sequence[Link], start_ns: int | None) -> LightSpan:
        context = self._context(trace_id, parent, TraceFlags.SAMPLED, trace_state)
        span = LightSpan(self, name, kind, context, parent, links, start_ns)
        span.set_attributes(attributes)
        if extra and extra != attributes:  # the SDK's samplers hand the span's own attributes back
            span.set_attributes(extra)
        return span


def _bounded(items: Sequence, limit: int | None):
    """`items` as they are, or, over `limit`, the newest `limit` in a BoundedList (which the
    exporters read the dropped count from)."""
    if limit is None or len(items) <= limit:
        return tuple(items)
    return BoundedList.from_seq(limit, items)


class LightSpan(trace.Span):
    """A recording span: attributes, links, events, status, a name."""

    def __init__(self, maker: LightSpans, name: str, kind: SpanKind, context: SpanContext,
                 parent: SpanContext | None, links: Sequence[Link], start_ns: int | None):
        self._maker, self._name, self._kind, self._context, self._parent = maker, name, kind, context, parent
        self._links: list[Link] = [lk for lk in links if lk is not None and lk.context.is_valid] if links else []
        self._attributes: dict = {}
        self._events: list[Event] = []
        self._status = Status(StatusCode.UNSET)
        self._start = start_ns if start_ns is not None else time.time_ns()
        self._ended = False

    def get_span_context(self) -> SpanContext:
        return self._context

    def is_recording(self) -> bool:
        return not self._ended

    def set_attributes(self, attributes: Mapping) -> None:
        """Strings cut at the length limit when one is set (in lists too); a list value
        becomes a tuple when the span ends (`end`), as the SDK keeps it."""
        if self._ended:
            return
        limit = self._maker.max_value_len
        if limit is None:  # the default: no length limit, nothing to cut
            self._attributes.update(attributes)
            return
        for key, value in attributes.items():
            if isinstance(value, str):
                value = value[:limit]
            elif type(value) is list:
                value = [v[:limit] if isinstance(v, str) else v for v in value]
            self._attributes[key] = value

    def set_attribute(self, key: str, value) -> None:
        self.set_attributes({key: value})

    def add_event(self, name: str, attributes: Mapping | None = None, timestamp: int | None = None) -> None:
        if not self._ended:
            self._events.append(Event(name, dict(attributes or {}), timestamp or time.time_ns()))

    def add_link(self, context: SpanContext, attributes: Mapping | None = None) -> None:
        if not self._ended and context.is_valid:
            self._links.append(Link(context, dict(attributes) if attributes else None))

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
        self.add_event("exception", {"exception.type": type(exception).__name__,
                                     "exception.message": str(exception), **(attributes or {})}, timestamp)

    def end(self, end_time: int | None = None) -> None:
        if self._ended:
            return
        self._ended = True
        maker = self._maker
        attrs = self._attributes
        for key, value in attrs.items():  # immutable once handed on (a few values: cheaper than per set)
            if type(value) is list:
                attrs[key] = tuple(value)
        done = ReadableSpan(self._name, self._context, self._parent, maker.resource, self._attributes,
                            _bounded(self._events, maker.max_events), _bounded(self._links, maker.max_links),
                            self._kind, None, self._status, self._start, end_time or time.time_ns(), maker.scope)
        for processor in maker.processors:
            processor.on_end(done)
