"""A real Ray scheduler actor on a real etcd exports its decision spans over OTLP/HTTP to a
receiver in this test (loadtests/otlp_receiver.py, decoding with opentelemetry-proto): one trace
id ties the "HTTP" span that submitted a job (made here, in another process) to the actor's
batch span by link, and that batch's scoring and commit spans; a conflict forced by a rival
scheduler in this process shows as an event, the park that follows as another. The actor also
publishes its metrics under its lease, and the key goes when the actor stops."""

from __future__ import annotations

import dataclasses
import time

import pytest

from cellsched.cellstate.claims import claimed_jobs
from cellsched.cellstate.clock import RealClock
from cellsched.cellstate.keys import CellKeys
from cellsched.cellstate.machines import add_machines
from cellsched.cellstate.model import JobStatus, Machine
from cellsched.cellstate.submission import submit_jobs
from cellsched.cellstate.views import read_job_view
from cellsched.loadtests.otlp_receiver import OtlpReceiver
from cellsched.schedulers import ray_actors, tracing
from cellsched.schedulers.core import Scheduler
from cellsched.schedulers.metrics_publish import read_published
from cellsched.schedulers.settings import BATCH, ThinkTime
from tests.cellfactory import make_job


def wait_for(cond, timeout_s: float, what: str):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        got = cond()
        if got:
            return got
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.mark.ray
@pytest.mark.etcd
def test_actor_spans_reach_the_receiver_linked_to_the_submitting_span(ray_cluster, etcd_member):
    from cellsched.cellstate.store.etcd import EtcdStore

    store = EtcdStore(etcd_member.endpoints)
    keys = CellKeys("rtr")
    add_machines(store, keys, [Machine("m0", (1000, 4096, 0))])  # room for one of the two jobs
    with OtlpReceiver() as receiver:
        here = tracing.Tracing.to([], service="api-under-test")
        http = here.start_span("POST /v1/jobs")
        ctx = http.get_span_context()
        http.end()
        ja = dataclasses.replace(make_job("ja", 1, cpu=1000), traceparent=tracing.traceparent_of(http))
        submit_jobs(store, keys, [ja], now=time.time())
        env = {"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": receiver.endpoint,
               "OTEL_SERVICE_NAME": "sched-actor", "OTEL_BSP_SCHEDULE_DELAY": "100"}
        # Three seconds of modelled think time between deciding and committing: the window in
        # which the rival below takes the machine, so the actor's commit must conflict.
        settings = BATCH.with_(claim_batch=1, idle_poll_s=0.05, metrics_publish_s=0.2,
                               think_time=ThinkTime(per_job_s=3.0))
        actor = ray_actors.start_scheduler("rtr-b0", ray_actors.StoreSpec(etcd=etcd_member.endpoints), "rtr",
                                           settings, env=env)
        try:
            wait_for(lambda: "ja" in claimed_jobs(store, keys), 60, "the actor to claim ja")
            submit_jobs(store, keys, [make_job("jb", 1, cpu=1000)], now=time.time())
            rival = Scheduler("rtr-rival", store, keys, BATCH.with_(claim_batch=1), RealClock())
            assert rival.step()
            assert read_job_view(store, keys, "jb").record.status is JobStatus.PLACED
            rival.close()
            wait_for(lambda: read_job_view(store, keys, "ja").record.status is JobStatus.PARKED, 60,
                     "ja parked after its conflict")
            assert "rtr-b0" in wait_for(lambda: read_published(store, keys), 10, "published metrics")
            batches = wait_for(lambda: [s for s in receiver.spans if s["name"] == "schedule.batch"
                                        and s["service"] == "sched-actor"
                                        and any(e["name"] == "park" for e in s["events"])], 30, "the park's span")
        finally:
            status = ray_actors.get(actor.stop.remote(), timeout=60)
            ray_actors.kill_actor(actor, no_restart=True)
        assert status["error"] is None
        assert "rtr-b0" not in read_published(store, keys)  # the lease went, and the key with it
    spans = receiver.spans
    mine = [s for s in spans if s["service"] == "sched-actor" and s["name"] == "schedule.batch"]
    (first,) = [s for s in mine if any(e["name"] == "conflict" for e in s["events"])]
    assert [(lk["trace_id"], lk["span_id"]) for lk in first["links"]] == [(f"{ctx.trace_id:032x}",
                                                                            f"{ctx.span_id:016x}")]
    kids = {s["name"]: s for s in spans if s["parent_span_id"] == first["span_id"]}
    assert {"schedule.score", "schedule.commit_txn", "schedule.sync"} <= set(kids)
    assert {s["trace_id"] for s in kids.values()} == {first["trace_id"]}
    (conflict,) = [e for e in first["events"] if e["name"] == "conflict"]
    assert conflict["attributes"]["cellsched.job"] == "ja" and conflict["attributes"]["cellsched.machine"] == "m0"
    (park,) = [e for s in batches for e in s["events"] if e["name"] == "park"]
    assert park["attributes"]["cellsched.job"] == "ja"
    store.close()
