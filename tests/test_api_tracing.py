"""The HTTP server span of a real uvicorn API process (tests/apiserver.py) and the batch span of a
real Ray scheduler actor, both on one real etcd cell and both exporting over OTLP/HTTP to a
receiver in this test (loadtests/otlp_receiver.py, decoding with opentelemetry-proto): a job
submitted over HTTP (single or bulk) stores its request span's traceparent, and the batch span
that placed it links to that span, so one trace id ties the request to the decision. A caller's
own traceparent header makes the request span its child. No token reaches any span."""

from __future__ import annotations

import json

import pytest

from cellsched.api import ApiContext, TokenTable, create_app
from cellsched.cellstate.keys import CellKeys
from cellsched.cellstate.store.memory import MemoryStore
from cellsched.cellstate.views import read_job_view
from cellsched.loadtests.otlp_receiver import OtlpReceiver
from cellsched.schedulers import ray_actors, tracing
from cellsched.schedulers.settings import BATCH
from tests.apiserver import TOKENS, job_body, machines_body, start_api, wait_for

CALLER_TRACE, CALLER_SPAN = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"


def _ids(span: dict) -> tuple[str, str]:
    return span["trace_id"], span["span_id"]


def _stop_all(actor, api, store) -> dict:
    """Stop the scheduler actor (its last status), the API process and the store client."""
    try:
        return ray_actors.get(actor.stop.remote(), timeout=60)
    finally:
        ray_actors.kill_actor(actor, no_restart=True)
        api.stop()
        store.close()


@pytest.mark.ray
@pytest.mark.etcd
def test_the_request_span_and_the_actors_batch_span_share_a_trace(ray_cluster, etcd_member, tmp_path):
    from cellsched.cellstate.store.etcd import EtcdStore

    store = EtcdStore(etcd_member.endpoints)
    keys = CellKeys("t")
    with OtlpReceiver() as receiver:
        otel = {"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": receiver.endpoint,
                "OTEL_BSP_SCHEDULE_DELAY": "100"}
        api = start_api(tmp_path, etcd_member.endpoints, "--schedulers", "off", env=otel)  # service cellsched-api
        actor = ray_actors.start_scheduler("t-batch-0", ray_actors.StoreSpec(etcd=etcd_member.endpoints), "t",
                                           BATCH.with_(idle_poll_s=0.05),
                                           env={**otel, "OTEL_SERVICE_NAME": "sched-actor"})
        try:
            with api.client() as op, api.client("submitter") as sub:
                assert op.post("/v1/machines", json=machines_body("m1", "m2")).status_code == 201
                assert sub.post("/v1/jobs", json=job_body("one", count=1)).status_code == 201
                bulk = sub.post("/v1/jobs/bulk", json={"jobs": [job_body("b1", count=1), job_body("b2", count=1)]})
                assert bulk.json()["created"] == 2
                child = sub.post("/v1/jobs", json=job_body("child", count=1),
                                 headers={"traceparent": f"00-{CALLER_TRACE}-{CALLER_SPAN}-01"})
                assert child.status_code == 201
                jids = ("one", "b1", "b2", "child")
                for jid in jids:
                    wait_for(lambda jid=jid: sub.get(f"/v1/jobs/{jid}").json()["status"] == "placed", f"{jid} placed")
            stored = {jid: read_job_view(store, keys, jid).record.job.traceparent for jid in jids}

            def traced() -> bool:
                linked = {(lk["trace_id"], lk["span_id"]) for s in receiver.spans if s["name"] == "schedule.batch"
                          for lk in s["links"]}
                http = [s for s in receiver.spans if s["service"] == "cellsched-api" and s["name"].startswith("POST")]
                return len(http) >= 4 and all(tp and (tp[3:35], tp[36:52]) in linked for tp in stored.values())

            wait_for(traced, "the request spans and the batch spans linking them", timeout=60)
        finally:
            status = _stop_all(actor, api, store)
        assert status["error"] is None
    spans = receiver.spans
    http = {s["name"]: [] for s in spans if s["service"] == "cellsched-api"}
    for s in spans:
        if s["service"] == "cellsched-api":
            http[s["name"]].append(s)
    posts = http["POST /v1/jobs"]
    # keyed by the traceparent's ids: its flags are the SDK's (sampled, and W3C's random bit)
    by_tp = {f"00-{s['trace_id']}-{s['span_id']}": s for s in posts + http["POST /v1/jobs/bulk"]}
    # Each job stored its request span's traceparent; the bulk's two jobs the same one.
    assert stored["b1"] == stored["b2"] and stored["one"] != stored["b1"]
    assert all(int(tp[53:55], 16) & 1 for tp in stored.values())  # sampled
    stored = {jid: tp[:52] for jid, tp in stored.items()}
    assert set(stored.values()) <= set(by_tp)
    assert by_tp[stored["b1"]]["name"] == "POST /v1/jobs/bulk"
    one = by_tp[stored["one"]]
    assert one["attributes"]["http.route"] == "/v1/jobs" and one["attributes"]["http.response.status_code"] == 201
    assert one["attributes"]["http.request.method"] == "POST" and one["parent_span_id"] == ""
    # The caller's traceparent: the request span is its child, in the caller's trace.
    caller = by_tp[stored["child"]]
    assert caller["trace_id"] == CALLER_TRACE and caller["parent_span_id"] == CALLER_SPAN
    # The batch span that placed each job links to that job's request span: the same trace id.
    batches = [s for s in spans if s["service"] == "sched-actor" and s["name"] == "schedule.batch"]
    for jid, tp in stored.items():
        request = by_tp[tp]
        # links in the order of the batch's cellsched.linked_jobs
        (batch,) = [b for b in batches if (jid, _ids(request)) in zip(
            b["attributes"]["cellsched.linked_jobs"], [(lk["trace_id"], lk["span_id"]) for lk in b["links"]],
            strict=True)]
        assert request["trace_id"] == tp[3:35]
        assert any(s["name"] == "schedule.commit_txn" and s["parent_span_id"] == batch["span_id"] for s in spans)
    # Every request made a span named by its template (GETs of the placement polls included).
    assert {s["attributes"]["http.route"] for s in http.get("GET /v1/jobs/{job_id}", [])} == {"/v1/jobs/{job_id}"}
    assert "POST /v1/machines" in http
    wire = json.dumps(spans).lower()
    for secret in TOKENS.values():
        assert secret.lower() not in wire
    assert "bearer" not in wire and "authorization" not in wire


@pytest.mark.ray
@pytest.mark.etcd
def test_one_trace_from_an_http_submission_to_a_conflicted_commit_across_processes(ray_cluster, etcd_member,
                                                                                  tmp_path):
    """Issue 11's "one trace, many processes" in one test: a job submitted over HTTP to a real
    uvicorn API process; a real Ray scheduler actor on a real etcd decides it; a rival scheduler
    in this process takes the machine during the actor's modelled think time, so the actor's
    commit conflicts and it parks the job. Both processes export over OTLP/HTTP to one receiver:
    the request span's trace id is the one the batch span links to, the batch's scoring and
    commit spans are its children, the conflict is an event naming the job and the machine,
    and no token appears in any span or in the API's log."""
    from cellsched.cellstate.claims import claimed_jobs
    from cellsched.cellstate.clock import RealClock
    from cellsched.cellstate.model import JobStatus
    from cellsched.cellstate.store.etcd import EtcdStore
    from cellsched.cellstate.submission import submit_jobs
    from cellsched.schedulers.core import Scheduler
    from cellsched.schedulers.settings import ThinkTime
    from tests.cellfactory import make_job

    store = EtcdStore(etcd_member.endpoints)
    keys = CellKeys("t1")
    with OtlpReceiver() as receiver:
        otel = {"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": receiver.endpoint,
                "OTEL_BSP_SCHEDULE_DELAY": "100"}
        api = start_api(tmp_path, etcd_member.endpoints, "--schedulers", "off", cell="t1", env=otel)
        # Three seconds between deciding and committing: the rival's window.
        settings = BATCH.with_(claim_batch=1, idle_poll_s=0.05, think_time=ThinkTime(per_job_s=3.0))
        actor = ray_actors.start_scheduler("t1-batch-0", ray_actors.StoreSpec(etcd=etcd_member.endpoints), "t1",
                                           settings, env={**otel, "OTEL_SERVICE_NAME": "sched-actor"})
        try:
            with api.client() as op, api.client("submitter") as sub:
                assert op.post("/v1/machines", json=machines_body("m0", cpu="1", memory="4Gi")).status_code == 201
                assert sub.post("/v1/jobs", json=job_body("ja", count=1, cpu="1", memory="1Gi")).status_code == 201
                wait_for(lambda: "ja" in claimed_jobs(store, keys), "the actor to claim ja")
                submit_jobs(store, keys, [make_job("jb", 1, cpu=1000, mem=1024)], now=0.0)
                rival = Scheduler("t1-rival", store, keys, BATCH.with_(claim_batch=1), RealClock())
                try:
                    assert rival.step()
                finally:
                    rival.close()
                assert read_job_view(store, keys, "jb").record.status is JobStatus.PLACED
                wait_for(lambda: sub.get("/v1/jobs/ja").json()["status"] == "parked", "ja parked after its conflict")
            tp = read_job_view(store, keys, "ja").record.job.traceparent

            def conflicted_batch():
                return [s for s in receiver.spans if s["service"] == "sched-actor" and s["name"] == "schedule.batch"
                        and any(e["name"] == "conflict" for e in s["events"])]

            (batch,) = wait_for(conflicted_batch, "the actor's batch span with the conflict", timeout=60)
            wait_for(lambda: [s for s in receiver.spans if s["service"] == "cellsched-api"
                              and s["name"] == "POST /v1/jobs"], "the request span")
        finally:
            status = _stop_all(actor, api, store)
        assert status["error"] is None
    spans = receiver.spans
    (request,) = [s for s in spans if s["service"] == "cellsched-api" and s["name"] == "POST /v1/jobs"]
    assert tp is not None and (tp[3:35], tp[36:52]) == _ids(request)  # the job stored its request span
    # The batch span links to the request span: one trace id from the HTTP request to the decision.
    assert [(lk["trace_id"], lk["span_id"]) for lk in batch["links"]] == [_ids(request)]
    assert batch["attributes"]["cellsched.linked_jobs"] == ["ja"]
    kids = {s["name"]: s for s in spans if s["parent_span_id"] == batch["span_id"]}
    assert {"schedule.score", "schedule.commit_txn"} <= set(kids)
    assert {s["trace_id"] for s in kids.values()} == {batch["trace_id"]}
    assert kids["schedule.score"]["attributes"]["cellsched.machines_scored"] >= 1
    (conflict,) = [e for e in batch["events"] if e["name"] == "conflict"]
    assert conflict["attributes"]["cellsched.job"] == "ja" and conflict["attributes"]["cellsched.machine"] == "m0"
    wire = json.dumps(spans).lower() + api.output().lower()
    for secret in TOKENS.values():
        assert secret.lower() not in wire
    assert "bearer " not in wire


def test_with_tracing_off_no_span_is_started_and_only_well_formed_traceparents_are_kept():
    app = create_app(ApiContext(MemoryStore(), CellKeys("c"), TokenTable(), tracing=tracing.Tracing.off()))
    (observe,) = [m for m in app.user_middleware if m.cls.__name__ == "Observe"]
    assert observe.kwargs["traced"] is None  # no span is ever started: one attribute test per request
    assert tracing.valid_traceparent(f"00-{CALLER_TRACE}-{CALLER_SPAN}-01 ") == f"00-{CALLER_TRACE}-{CALLER_SPAN}-01"
    assert tracing.valid_traceparent("00-" + "0" * 32 + f"-{CALLER_SPAN}-01") is None
    assert tracing.valid_traceparent("garbage") is None and tracing.valid_traceparent(None) is None
