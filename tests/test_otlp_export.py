"""Decision spans over the wire: OTLP/HTTP to a receiver in this test (loadtests/otlp_receiver.py)
that decodes every request with the official opentelemetry-proto messages. One trace id links a
submitted job's traceparent (by span link) to the batch span that decided it, and that batch's
scoring and commit spans; the forced conflict shows as an event."""

from __future__ import annotations

import dataclasses
import importlib.util
import json

import pytest

from cellsched.cellstate.clock import SimClock
from cellsched.cellstate.errors import InvalidInputError
from cellsched.cellstate.store.memory import MemoryStore
from cellsched.loadtests.otlp_receiver import OtlpReceiver
from cellsched.schedulers import tracing
from cellsched.schedulers.core import Scheduler
from cellsched.schedulers.settings import BATCH
from tests.cellfactory import make_cell, make_job, submit_each


def test_spans_reach_an_otlp_http_receiver_with_one_trace_per_decision():
    with OtlpReceiver() as receiver:
        chosen = tracing.from_env({"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
                                   "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": receiver.endpoint,
                                   "OTEL_SERVICE_NAME": "sched-under-test"})
        assert chosen.enabled
        before = tracing.install(chosen)
        try:
            clock = SimClock()
            store = MemoryStore(clock=clock)
            keys = make_cell(store, 1, cpu=1000)  # one job's room: the second scheduler conflicts
            jobs, http_spans = [], {}
            for jid in ("ja", "jb"):
                span = chosen.start_span("POST /v1/jobs")  # what the API's handler span would be
                jobs.append(dataclasses.replace(make_job(jid, 1, cpu=1000), traceparent=tracing.traceparent_of(span)))
                span.end()
                http_spans[jid] = span.get_span_context()
            submit_each(store, keys, jobs)  # own entries: one claim each
            a = Scheduler("a", store, keys, BATCH.with_(claim_batch=1), clock)
            b = Scheduler("b", store, keys, BATCH.with_(claim_batch=1), clock)
            pa, pb = a.prepare(), b.prepare()
            a.complete(pa)
            assert b.complete(pb).retrying == ["jb"]
            a.close()
            b.close()
        finally:
            tracing.install(before)
            chosen.shutdown()  # flushes the batch processor: every span is on the wire now
    spans = receiver.spans
    assert receiver.requests >= 1 and {s["service"] for s in spans} == {"sched-under-test"}
    for jid, sched in (("ja", "a"), ("jb", "b")):
        http = http_spans[jid]
        (batch,) = [s for s in spans if s["name"] == "schedule.batch"
                    and s["attributes"]["cellsched.scheduler"] == sched]
        # the link carries the HTTP span's trace id: one trace id ties the request to the decision
        assert [(lk["trace_id"], lk["span_id"]) for lk in batch["links"]] == [
            (f"{http.trace_id:032x}", f"{http.span_id:016x}")]
        assert batch["attributes"]["cellsched.linked_jobs"] == [jid]
        kids = [s for s in spans if s["parent_span_id"] == batch["span_id"]]
        assert {s["trace_id"] for s in kids} == {batch["trace_id"]}
        assert {"schedule.sync", "schedule.score", "schedule.commit_txn"} <= {s["name"] for s in kids}
        (score,) = [s for s in kids if s["name"] == "schedule.score"]
        assert score["attributes"]["cellsched.machines_scored"] == 1
        assert score["attributes"]["cellsched.kernel"] == "random_first_fit"
    (batch_b,) = [s for s in spans if s["name"] == "schedule.batch" and s["attributes"]["cellsched.scheduler"] == "b"]
    (conflict,) = [e for e in batch_b["events"] if e["name"] == "conflict"]
    assert conflict["attributes"]["cellsched.job"] == "jb" and conflict["attributes"]["cellsched.machine"] == "m0"
    assert json.loads(conflict["attributes"]["cellsched.reason"])["kind"] == "insufficient_resource"
    assert not any("authorization" in json.dumps(s).lower() for s in spans)


def test_the_generic_endpoint_alone_turns_otlp_on_with_the_signal_path_appended():
    with OtlpReceiver() as receiver:
        base = receiver.endpoint.removesuffix("/v1/traces")
        chosen = tracing.from_env({"OTEL_EXPORTER_OTLP_ENDPOINT": base + "/"})  # no OTEL_TRACES_EXPORTER
        assert chosen.enabled
        chosen.start_span("ping").end()
        chosen.shutdown()
    assert [s["name"] for s in receiver.spans] == ["ping"]


def test_grpc_without_its_exporter_installed_is_refused_by_name():
    if importlib.util.find_spec("opentelemetry.exporter.otlp.proto.grpc") is not None:
        pytest.skip("the gRPC exporter is installed here")
    with pytest.raises(InvalidInputError, match=r"grpc needs the gRPC exporter: pip install 'cellsched\[otlp-grpc\]'"):
        tracing.from_env({"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"})
