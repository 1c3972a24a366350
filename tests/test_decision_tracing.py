"""Traces of scheduling decisions (schedulers/decision_trace.py, schedulers/tracing.py): one span
per batch attempt, linked to each job's submission; children for sync, scoring and every commit
txn; conflicts and parks as events. In memory here; over OTLP/HTTP in test_otlp_receiver.py."""

from __future__ import annotations

import dataclasses
import json

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from cellsched.cellstate.clock import SimClock
from cellsched.cellstate.errors import InvalidInputError
from cellsched.cellstate.store.memory import MemoryStore
from cellsched.cellstate.submission import submit_jobs
from cellsched.schedulers import tracing
from cellsched.schedulers.core import Scheduler
from cellsched.schedulers.settings import BATCH
from tests.cellfactory import make_cell, make_job, submit_each


@pytest.fixture
def traced():
    exporter = InMemorySpanExporter()
    chosen = tracing.Tracing.to([exporter])
    before = tracing.install(chosen)
    yield chosen, exporter
    tracing.install(before)
    chosen.shutdown()


def submitted(chosen: tracing.Tracing, job):
    """A job as an HTTP handler would submit it: with the traceparent of its request's span."""
    span = chosen.start_span("POST /jobs")
    tp = tracing.traceparent_of(span)
    span.end()
    return dataclasses.replace(job, traceparent=tp), span.get_span_context()


def by_name(spans, name):
    return [s for s in spans if s.name == name]


def test_two_schedulers_one_machine_batch_spans_link_jobs_and_show_the_conflict(traced):
    chosen, exporter = traced
    clock = SimClock()
    store = MemoryStore(clock=clock)
    keys = make_cell(store, 1, cpu=1000)  # room for exactly one of the two jobs
    ja, ctx_a = submitted(chosen, make_job("ja", 1, cpu=1000))
    jb, ctx_b = submitted(chosen, make_job("jb", 1, cpu=1000))
    submit_each(store, keys, [ja, jb])  # own entries: one claim each
    settings = BATCH.with_(claim_batch=1)
    a, b = Scheduler("a", store, keys, settings, clock), Scheduler("b", store, keys, settings, clock)
    try:
        pa, pb = a.prepare(), b.prepare()  # both decide on the same free machine
        assert pa is not None and pb is not None
        a.complete(pa)
        out_b = b.complete(pb)  # b's claim no longer fits: refused by the shared rule
        assert out_b.retrying == ["jb"] and not out_b.committed
    finally:
        a.close()
        b.close()
    spans = exporter.get_finished_spans()
    batches = by_name(spans, "schedule.batch")
    assert len(batches) == 2
    batch_of = {s.attributes["cellsched.scheduler"]: s for s in batches}
    for name, ctx, jid in (("a", ctx_a, "ja"), ("b", ctx_b, "jb")):
        span = batch_of[name]
        links = [(lk.context.trace_id, lk.context.span_id) for lk in span.links]
        assert links == [(ctx.trace_id, ctx.span_id)] and span.attributes["cellsched.linked_jobs"] == (jid,)
        children = [s for s in spans if s.parent is not None and s.parent.span_id == span.context.span_id]
        names = sorted({s.name for s in children})
        assert names == ["schedule.commit_txn", "schedule.score", "schedule.sync"], names
        assert all(s.context.trace_id == span.context.trace_id for s in children)
        score = by_name(children, "schedule.score")[0]
        assert score.attributes["cellsched.kernel"] == "random_first_fit"
        assert score.attributes["cellsched.backend"] == "numpy"
        assert score.attributes["cellsched.machines_scored"] == 1
        assert score.attributes["cellsched.jobs_decided"] == 1
    txn_ok = {n: by_name([s for s in spans if s.parent and s.parent.span_id == batch_of[n].context.span_id],
                         "schedule.commit_txn") for n in "ab"}
    assert [t.attributes["cellsched.txn.succeeded"] for t in txn_ok["a"]] == [True]
    assert not batch_of["a"].events
    # b's commit was refused before any txn went out, or its txn failed: either way one conflict event.
    conflicts = [e for e in batch_of["b"].events if e.name == "conflict"]
    assert len(conflicts) == 1
    ev = conflicts[0].attributes
    assert ev["cellsched.job"] == "jb" and ev["cellsched.machine"] == "m0"
    reason = json.loads(ev["cellsched.reason"])
    assert reason["kind"] == ev["cellsched.reason.kind"] and reason["machine_id"] == "m0"
    assert reason == {"kind": "insufficient_resource", "machine_id": "m0", "resource": "cpu",
                      "requested": 1000, "capacity": 1000}  # Refusal.to_obj: free is 0, so left out
    assert batch_of["b"].attributes["cellsched.conflicted_claims"] == 1


def test_a_park_is_an_event_with_the_reasons_counts(traced):
    chosen, exporter = traced
    clock = SimClock()
    store = MemoryStore(clock=clock)
    keys = make_cell(store, 3, cpu=1000)
    submit_jobs(store, keys, [make_job("huge", 1, cpu=5000)], now=0.0)
    s = Scheduler("p", store, keys, BATCH, clock)
    try:
        out = s.complete(s.prepare())
    finally:
        s.close()
    assert list(out.parked) == ["huge"]
    (batch,) = by_name(exporter.get_finished_spans(), "schedule.batch")
    assert batch.links == () and batch.attributes["cellsched.linked_jobs"] == ()  # no traceparent: no link
    (park,) = [e for e in batch.events if e.name == "park"]
    assert park.attributes["cellsched.job"] == "huge"
    counts = json.loads(park.attributes["cellsched.counts"])
    assert counts[0]["machines_evaluated"] == 3 and counts[0]["rejected"] == {"insufficient cpu": 3}, counts


def test_idle_polls_make_no_spans(traced):
    _, exporter = traced
    clock = SimClock()
    store = MemoryStore(clock=clock)
    keys = make_cell(store, 2)
    s = Scheduler("idle", store, keys, BATCH, clock)
    try:
        assert s.prepare() is None and s.prepare() is None
    finally:
        s.close()
    assert exporter.get_finished_spans() == ()


def test_off_by_default_and_the_tracer_skips_everything(monkeypatch):
    for var in ("OTEL_TRACES_EXPORTER", "OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                tracing.TRACE_FILE_VAR):
        monkeypatch.delenv(var, raising=False)
    assert not tracing.from_env().enabled
    assert not tracing.from_env({"OTEL_TRACES_EXPORTER": "none"}).enabled
    assert not tracing.from_env({"OTEL_TRACES_EXPORTER": "console", "OTEL_SDK_DISABLED": "true"}).enabled
    before = tracing.install(tracing.Tracing.off())
    try:
        clock = SimClock()
        store = MemoryStore(clock=clock)
        keys = make_cell(store, 2)
        submit_jobs(store, keys, [make_job("j", 2)], now=0.0)
        s = Scheduler("off", store, keys, BATCH, clock)
        assert not s.trace.on
        s.complete(s.prepare())
        assert s.trace._span is None and s.metrics()["jobs_placed"] == 1
        # No span was made; the decision ring (schedulers/decision_ring.py) kept the attempt anyway.
        (kept,) = s.trace.ring.ring
        assert {sp["name"] for sp in kept["spans"]} == {"schedule.sync", "schedule.score", "schedule.commit_txn"}
        s.close()
    finally:
        tracing.install(before)


def test_bad_configuration_is_refused_by_name():
    with pytest.raises(InvalidInputError, match="unknown exporter 'zipkin'"):
        tracing.from_env({"OTEL_TRACES_EXPORTER": "zipkin"})
    with pytest.raises(InvalidInputError, match="OTEL_EXPORTER_OTLP_PROTOCOL='thrift'"):
        tracing.from_env({"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "thrift"})
    with pytest.raises(InvalidInputError, match="OTEL_TRACES_SAMPLER='sometimes'"):
        tracing.from_env({"OTEL_TRACES_EXPORTER": "console", "OTEL_TRACES_SAMPLER": "sometimes"})
    with pytest.raises(InvalidInputError, match="OTEL_TRACES_SAMPLER_ARG='2'"):
        tracing.from_env({"OTEL_TRACES_EXPORTER": "console", "OTEL_TRACES_SAMPLER": "traceidratio",
                          "OTEL_TRACES_SAMPLER_ARG": "2"})
    # with nothing exporting too: the mistake is reported before the day an exporter is added
    with pytest.raises(InvalidInputError, match="OTEL_TRACES_SAMPLER='sometimes'"):
        tracing.from_env({"OTEL_TRACES_SAMPLER": "sometimes"})
    with pytest.raises(InvalidInputError, match="OTEL_TRACES_SAMPLER_ARG='abc'"):
        tracing.from_env({"OTEL_TRACES_EXPORTER": "none", "OTEL_TRACES_SAMPLER": "traceidratio",
                          "OTEL_TRACES_SAMPLER_ARG": "abc"})


def test_file_exporter_writes_json_lines_and_the_sampler_is_honoured(tmp_path):
    path = tmp_path / "spans.jsonl"
    sampled = tracing.from_env({tracing.TRACE_FILE_VAR: str(path)})
    span = sampled.start_span("one", attributes={"k": "v"})
    span.end()
    sampled.shutdown()
    lines = path.read_text().splitlines()
    assert len(lines) == 1
    obj = json.loads(lines[0])
    ctx = span.get_span_context()
    assert obj["name"] == "one" and obj["attributes"] == {"k": "v"} and obj["parent_span_id"] is None
    assert obj["trace_id"] == f"{ctx.trace_id:032x}" and obj["end_ns"] >= obj["start_ns"] > 0
    dropped = tracing.from_env({tracing.TRACE_FILE_VAR: str(path), "OTEL_TRACES_SAMPLER": "always_off"})
    dropped.start_span("two").end()
    dropped.shutdown()
    assert len(path.read_text().splitlines()) == 1


def test_link_to_ignores_missing_and_malformed_traceparents():
    assert tracing.link_to(None) is None
    assert tracing.link_to("garbage") is None
    assert tracing.link_to("00-" + "0" * 32 + "-" + "1" * 16 + "-01") is None
    assert tracing.link_to("00-" + "z" * 32 + "-" + "1" * 16 + "-01") is None
    link = tracing.link_to("00-" + "a" * 32 + "-" + "b" * 16 + "-01")
    assert link is not None and link.context.trace_id == int("a" * 32, 16) and link.context.is_remote


def test_log_lines_while_deciding_carry_the_score_spans_ids(traced):
    chosen, exporter = traced
    seen: list[tuple[str, str] | None] = []

    def deciding(columns, index, record, policy, seed):
        seen.append(tracing.current_ids())
        from cellsched.schedulers.decide import decide_job
        return decide_job(columns, index, record, policy, seed)

    clock = SimClock()
    store = MemoryStore(clock=clock)
    keys = make_cell(store, 2)
    submit_jobs(store, keys, [make_job("j", 1)], now=0.0)
    s = Scheduler("l", store, keys, BATCH, clock, decide_fn=deciding)
    try:
        s.complete(s.prepare())
        assert tracing.current_ids() is None  # nothing left current after the batch
    finally:
        s.close()
    (score,) = by_name(exporter.get_finished_spans(), "schedule.score")
    assert seen == [(f"{score.context.trace_id:032x}", f"{score.context.span_id:016x}")]


def test_a_batch_span_of_a_file_trace_keeps_every_link_of_a_big_batch(tmp_path):
    path = tmp_path / "spans.jsonl"
    chosen = tracing.from_env({tracing.TRACE_FILE_VAR: str(path)})
    before = tracing.install(chosen)
    try:
        clock = SimClock()
        store = MemoryStore(clock=clock)
        keys = make_cell(store, 50, cpu=100_000)
        tp = {}
        jobs = []
        for i in range(300):  # more than the SDK's default limit of 128 links per span
            job, ctx = submitted(chosen, make_job(f"p{i:03d}", 1, cpu=100))
            jobs.append(job)
            tp[job.id] = (f"{ctx.trace_id:032x}", f"{ctx.span_id:016x}")
        submit_jobs(store, keys, jobs, now=0.0)
        s = Scheduler("big", store, keys, BATCH.with_(claim_batch=512), clock)
        assert len(s.complete(s.prepare()).placed) == 300
        s.close()
    finally:
        tracing.install(before)
        chosen.shutdown()
    spans = [json.loads(line) for line in path.read_text().splitlines()]
    (batch,) = [sp for sp in spans if sp["name"] == "schedule.batch"]
    linked = batch["attributes"]["cellsched.linked_jobs"]
    assert sorted(linked) == sorted(tp) and [tuple(lk) for lk in batch["links"]] == [tp[j] for j in linked]
    assert batch["attributes"]["cellsched.jobs_placed"] == 300
