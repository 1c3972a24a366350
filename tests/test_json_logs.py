"""Structured JSON logs (schedulers/logs.py): one object a line, the current span's ids, no secrets."""

from __future__ import annotations

import io
import json
import logging

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from cellsched.cellstate.errors import InvalidInputError
from cellsched.schedulers import logs, tracing

TOKEN = "eyJhbGciOiJIUzI1NiJ9.c2VjcmV0LXBheWxvYWQ.sig-XYZ"


@pytest.fixture
def captured():
    stream = io.StringIO()
    handler = logs.configure(stream, "DEBUG")
    yield stream, logging.getLogger("cellsched.test")
    logging.getLogger("cellsched").removeHandler(handler)


def lines(stream) -> list[dict]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_one_object_per_line_with_the_current_spans_ids(captured):
    stream, log = captured
    log.info("outside any span")
    chosen = tracing.Tracing.to([InMemorySpanExporter()])
    span = chosen.start_span("schedule.batch")
    token = tracing.attach(span)
    try:
        log.warning("inside %s", "the batch", extra={"job": "j1", "tasks": 3})
    finally:
        tracing.detach(token)
        span.end()
    outside, inside = lines(stream)
    assert outside["msg"] == "outside any span" and outside["level"] == "INFO" and "trace_id" not in outside
    ctx = span.get_span_context()
    assert inside["trace_id"] == f"{ctx.trace_id:032x}" and inside["span_id"] == f"{ctx.span_id:016x}"
    assert inside["msg"] == "inside the batch" and inside["job"] == "j1" and inside["tasks"] == 3
    assert inside["logger"] == "cellsched.test" and inside["ts"].endswith("Z")


def test_no_token_leaves_in_message_extra_or_exception(captured):
    stream, log = captured
    log.info("request headers: Authorization: Bearer %s from client", TOKEN)
    log.info("calling with authorization=Basic dXNlcjpwYXNz and token=%s&x=1", TOKEN)
    log.info("bare bearer %s", "Bearer " + TOKEN)
    log.info("nested", extra={"headers": {"Authorization": "Bearer " + TOKEN, "Accept": "json"},
                              "api_token": TOKEN, "argv": ["password=hunter2", "ok"]})
    try:
        raise RuntimeError(f"upstream refused {{'password': '{TOKEN}'}}")
    except RuntimeError:
        log.exception("failed")
    text = stream.getvalue()
    assert TOKEN not in text and "hunter2" not in text and "dXNlcjpwYXNz" not in text
    got = lines(stream)
    assert got[0]["msg"] == "request headers: Authorization: Bearer [REDACTED] from client"
    assert got[1]["msg"] == "calling with authorization=Basic [REDACTED] and token=[REDACTED]&x=1"
    assert got[2]["msg"] == "bare Bearer [REDACTED]"
    assert got[3]["headers"] == {"Authorization": "[REDACTED]", "Accept": "json"}
    assert got[3]["api_token"] == "[REDACTED]" and got[3]["argv"] == ["password=[REDACTED]", "ok"]
    assert "RuntimeError" in got[4]["exc"] and "[REDACTED]" in got[4]["exc"]


def test_a_bad_level_is_refused_by_name():
    with pytest.raises(InvalidInputError, match="CELLSCHED_LOG_LEVEL='LOUD'"):
        logs.configure(io.StringIO(), "loud")
