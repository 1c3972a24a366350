"""cellsched's spans (schedulers/light_spans.py: the API's request span and the schedulers'
spans) and the file exporter's encoder (tracing.span_line): what they write is what the SDK's
spans and span_obj would say."""

from __future__ import annotations

import json

from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from cellsched.schedulers import tracing

CALLER = "00-" + "a" * 32 + "-" + "b" * 16 + "-01"
ATTRS = {"http.request.method": "POST", "url.path": "/v1/jobs", "url.scheme": "http"}


def _sdk_span(chosen: tracing.Tracing, name: str, parent=None, **kwargs):
    """The SDK's own span of the same provider: what ours are compared with."""
    ctx = tracing.trace.set_span_in_context(parent) if parent is not None else tracing.otel_context.Context()
    return chosen.tracer.start_span(name, context=ctx, **kwargs)


def _request(chosen: tracing.Tracing, traceparent: str | None, status: int = 201):
    span = chosen.start_server_span("POST", traceparent, ATTRS)
    tracing.end_server_span(span, "POST /v1/jobs", {"http.route": "/v1/jobs", "http.response.status_code": status},
                            f"HTTP {status}" if status >= 500 else None)
    return span


def test_a_request_span_is_a_server_span_child_of_the_callers_context_with_its_attributes():
    exporter = InMemorySpanExporter()
    chosen = tracing.Tracing.to([exporter])
    assert chosen.light is not None  # the cheap path is the one under test
    child, root, failed = _request(chosen, CALLER), _request(chosen, None), _request(chosen, None, 503)
    by_id = {s.context.span_id: s for s in exporter.get_finished_spans()}
    assert len(by_id) == 3
    c = by_id[child.get_span_context().span_id]
    assert c.kind is SpanKind.SERVER and c.name == "POST /v1/jobs"
    assert c.context.trace_id == int("a" * 32, 16) and c.parent.span_id == int("b" * 16, 16)
    assert dict(c.attributes) == {**ATTRS, "http.route": "/v1/jobs", "http.response.status_code": 201}
    assert c.resource.attributes["service.name"] == tracing.DEFAULT_SERVICE
    assert c.instrumentation_scope.name == "cellsched" and c.end_time >= c.start_time > 0
    r = by_id[root.get_span_context().span_id]
    assert r.parent is None and r.context.trace_id != c.context.trace_id
    assert r.status.status_code is StatusCode.UNSET
    f = by_id[failed.get_span_context().span_id]
    assert f.status.status_code is StatusCode.ERROR and f.status.description == "HTTP 503"
    assert tracing.traceparent_of(child).endswith("-01") and not child.is_recording()


def test_the_sampler_decides_request_spans_too(tmp_path):
    path = tmp_path / "spans.jsonl"
    off = tracing.from_env({tracing.TRACE_FILE_VAR: str(path), "OTEL_TRACES_SAMPLER": "always_off"})
    span = _request(off, None)
    # Not sampled: ids all the same (a submission still stores a traceparent), no sampled flag, no line.
    assert tracing.traceparent_of(span) is not None and not span.get_span_context().trace_flags.sampled
    assert not span.is_recording()
    # parentbased_always_on follows an unsampled caller.
    parented = tracing.from_env({tracing.TRACE_FILE_VAR: str(path)})
    unsampled = _request(parented, CALLER[:-2] + "00")
    sampled = _request(parented, None)
    off.shutdown()
    parented.shutdown()
    (line,) = path.read_text().splitlines()
    assert json.loads(line)["span_id"] == f"{sampled.get_span_context().span_id:016x}"
    assert not unsampled.get_span_context().trace_flags.sampled


def test_the_attribute_length_limit_is_honoured(monkeypatch):
    monkeypatch.setenv("OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT", "4")
    exporter = InMemorySpanExporter()
    _request(tracing.Tracing.to([exporter]), None)
    (span,) = exporter.get_finished_spans()
    assert span.attributes["url.path"] == "/v1/" and span.attributes["http.response.status_code"] == 201
    chosen = tracing.Tracing.to([exporter])
    chosen.start_span("ours", attributes={"cellsched.linked_jobs": ["job-1", "j2"], "n": 3}).end()
    _sdk_span(chosen, "sdk", attributes={"cellsched.linked_jobs": ["job-1", "j2"], "n": 3}).end()
    ours, sdk = exporter.get_finished_spans()[1:]
    assert dict(ours.attributes) == dict(sdk.attributes) == {"cellsched.linked_jobs": ("job-", "j2"), "n": 3}


def test_span_line_is_span_obj_as_compact_json():
    exporter = InMemorySpanExporter()
    chosen = tracing.Tracing.to([exporter])
    _request(chosen, CALLER)
    parent = chosen.start_span("schedule.batch", links=[tracing.link_to(CALLER)],
                               attributes={"cellsched.linked_jobs": ["j1"], "n": 3, "quote": 'a"b\u00e9'})
    parent.add_event("conflict", {"cellsched.job": "j1"})
    chosen.start_span("schedule.score", parent=parent).end()
    parent.end()
    spans = exporter.get_finished_spans()
    assert len(spans) == 3
    for span in spans:
        line = tracing.span_line(span)
        assert line.endswith("\n") and line.count("\n") == 1
        assert line[:-1] == json.dumps(tracing.span_obj(span), separators=(",", ":"), default=str)
    batch = json.loads(tracing.span_line(spans[2]))
    assert batch["links"] == [["a" * 32, "b" * 16]] and batch["events"][0]["name"] == "conflict"


def test_the_flags_are_those_the_sdks_own_span_would_carry():
    exporter = InMemorySpanExporter()
    chosen = tracing.Tracing.to([exporter])
    for caller in (None, CALLER, CALLER[:-2] + "03"):
        ours = _request(chosen, caller).get_span_context().trace_flags
        remote = tracing._context_of(caller)
        parent = None if remote is None else tracing.trace.NonRecordingSpan(remote)
        sdk = _sdk_span(chosen, "sdk", parent)
        sdk.end()
        assert ours == sdk.get_span_context().trace_flags, caller


def test_only_the_default_sampler_skips_the_call_for_a_root_span():
    """The shortcut (no sampler call for a root span) is taken for parentbased_always_on alone;
    a parent-based sampler with another root still decides, and the root spans it makes carry
    what the sampler's call would have given them."""
    from opentelemetry.sdk.trace import sampling

    exporter = InMemorySpanExporter()
    default = tracing.Tracing.to([exporter])
    assert default.light is not None and default.light.roots_sampled
    other = tracing.Tracing.to([exporter], sampler=sampling.ParentBased(sampling.ALWAYS_OFF))
    assert other.light is not None and not other.light.roots_sampled
    assert not _request(other, None).get_span_context().trace_flags.sampled
    assert _request(other, CALLER).get_span_context().trace_flags.sampled  # a sampled caller is followed
    root = _request(default, None).get_span_context()
    sdk = _sdk_span(default, "sdk")
    sdk.end()
    assert root.trace_flags == sdk.get_span_context().trace_flags and root.trace_state == sdk.get_span_context().trace_state
    assert len(exporter.get_finished_spans()) == 3  # other's child of the caller, the default's root, the SDK's


def test_a_batch_span_and_its_children_match_the_sdks_own():
    """The schedulers' spans (Tracing.start_span: links, events, a given parent, a start time)
    carry what the SDK's span of the same calls would."""
    exporter = InMemorySpanExporter()
    chosen = tracing.Tracing.to([exporter])
    links = [tracing.link_to(CALLER), tracing.link_to("00-" + "c" * 32 + "-" + "d" * 16 + "-00")]
    made = {}
    for side, start in (("ours", chosen.start_span), ("sdk", None)):
        if start is None:
            batch = _sdk_span(chosen, "schedule.batch", links=links, attributes={"cellsched.linked_jobs": ["j1", "j2"]},
                              start_time=1_000)
            child = _sdk_span(chosen, "schedule.score", batch, start_time=2_000)
        else:
            batch = start("schedule.batch", 1_000, links=links, attributes={"cellsched.linked_jobs": ["j1", "j2"]})
            child = start("schedule.score", 2_000, batch)
        child.set_attribute("cellsched.claims", 3)
        child.end(3_000)
        batch.add_event("conflict", {"cellsched.job": "j1"}, timestamp=2_500)
        batch.end(4_000)
        made[side] = (batch.get_span_context(), child.get_span_context())
    spans = {s.context.span_id: s for s in exporter.get_finished_spans()}
    assert len(spans) == 4
    ours_b, ours_c = (spans[c.span_id] for c in made["ours"])
    sdk_b, sdk_c = (spans[c.span_id] for c in made["sdk"])
    for ours, sdk in ((ours_b, sdk_b), (ours_c, sdk_c)):
        assert ours.kind is sdk.kind is SpanKind.INTERNAL
        assert ours.context.trace_flags == sdk.context.trace_flags
        assert dict(ours.attributes) == dict(sdk.attributes)
        assert (ours.start_time, ours.end_time) == (sdk.start_time, sdk.end_time)
        assert ours.dropped_links == sdk.dropped_links == 0 and ours.dropped_events == sdk.dropped_events == 0
    assert ours_b.parent is None and sdk_b.parent is None
    assert ours_c.parent.span_id == ours_b.context.span_id and ours_c.context.trace_id == ours_b.context.trace_id
    assert [(lk.context.trace_id, lk.context.span_id) for lk in ours_b.links] == \
        [(lk.context.trace_id, lk.context.span_id) for lk in sdk_b.links]
    assert [(e.name, e.timestamp, dict(e.attributes)) for e in ours_b.events] == \
        [(e.name, e.timestamp, dict(e.attributes)) for e in sdk_b.events]
    assert json.loads(tracing.span_line(ours_b))["links"] == json.loads(tracing.span_line(sdk_b))["links"]


def test_a_child_follows_its_parents_sampled_flag_under_every_sampler():
    from opentelemetry.sdk.trace import sampling

    exporter = InMemorySpanExporter()
    for sampler in (None, sampling.ParentBased(sampling.ALWAYS_ON, local_parent_sampled=sampling.ALWAYS_OFF)):
        chosen = tracing.Tracing.to([exporter], sampler=sampler)
        sampled = chosen.start_span("schedule.batch")
        unsampled = tracing.trace.NonRecordingSpan(tracing._context_of(CALLER[:-2] + "00"))
        for parent in (sampled, unsampled):
            ours = chosen.start_span("schedule.sync", parent=parent)
            sdk = _sdk_span(chosen, "schedule.sync", parent)
            assert ours.get_span_context().trace_flags == sdk.get_span_context().trace_flags, (sampler, parent)
            assert ours.get_span_context().trace_id == parent.get_span_context().trace_id
            assert ours.is_recording() == sdk.is_recording()
            ours.end()
            sdk.end()
        sampled.end()


def test_link_and_event_count_limits_keep_the_newest_and_count_the_dropped(monkeypatch):
    monkeypatch.setenv("OTEL_SPAN_LINK_COUNT_LIMIT", "2")
    monkeypatch.setenv("OTEL_SPAN_EVENT_COUNT_LIMIT", "1")
    exporter = InMemorySpanExporter()
    chosen = tracing.Tracing.to([exporter])
    links = [tracing.link_to(f"00-{i + 1:032x}-{i + 1:016x}-01") for i in range(5)]
    for side in ("ours", "sdk"):
        span = (chosen.start_span("b", links=links) if side == "ours" else _sdk_span(chosen, "b", links=links))
        span.add_event("first")
        span.add_event("second")
        span.end()
    ours, sdk = exporter.get_finished_spans()
    assert [lk.context.span_id for lk in ours.links] == [lk.context.span_id for lk in sdk.links] == [4, 5]
    assert ours.dropped_links == sdk.dropped_links == 3
    assert [e.name for e in ours.events] == [e.name for e in sdk.events] == ["second"]
    assert ours.dropped_events == sdk.dropped_events == 1
