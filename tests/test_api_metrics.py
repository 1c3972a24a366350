"""GET /metrics through real uvicorn processes (tests/apiserver.py) on one real etcd cell: the
whole cell's metrics whichever API process is asked, agreeing with what the store holds
(cellstate.invariants.check_store's used, the queue's keys) and with the scheduler that
published under its lease; each process's own request histogram labelled by route template;
open (no token) but rate limited per client address."""

from __future__ import annotations

import httpx
import pytest
from prometheus_client import CONTENT_TYPE_LATEST
from prometheus_client.parser import text_string_to_metric_families

from cellsched.cellstate.clock import RealClock
from cellsched.cellstate.invariants import check_store
from cellsched.cellstate.keys import CellKeys
from cellsched.cellstate.model import JobClass
from cellsched.cellstate.resources import RESOURCE_NAMES
from cellsched.cellstate.views import read_job_view
from cellsched.schedulers.core import Scheduler
from cellsched.schedulers.settings import BATCH
from tests.apiserver import job_body, machines_body, start_api


def scrape(client: httpx.Client) -> dict[tuple, float]:
    r = client.get("/metrics")
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == CONTENT_TYPE_LATEST
    out = {}
    for fam in text_string_to_metric_families(r.text):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def queued_keys(store, keys: CellKeys) -> dict[str, int]:
    """The jobs the queue's keys list, per class (a queue segment lists several)."""
    from cellsched.cellstate.claims import list_queue

    return {c.value: len(list_queue(store, keys, c)) for c in JobClass}


def assert_cell_matches_the_store(got: dict, store, keys: CellKeys) -> None:
    rep = check_store(store, keys)
    assert rep.ok, rep.violations
    for name, n in zip(RESOURCE_NAMES, rep.used, strict=True):
        assert got[("cellsched_cell_used", (("resource", name),))] == n, name
    for cls, n in queued_keys(store, keys).items():
        assert got[("cellsched_queue_length", (("class", cls),))] == n, cls


@pytest.mark.etcd
def test_metrics_agree_with_the_store_whichever_api_process_is_asked(etcd_member, tmp_path):
    from cellsched.cellstate.store.etcd import EtcdStore

    a = start_api(tmp_path, etcd_member.endpoints, "--schedulers", "off")
    b = start_api(tmp_path, etcd_member.endpoints, "--schedulers", "off")
    store = EtcdStore(etcd_member.endpoints)
    keys = CellKeys("t")
    sched = None
    try:
        with a.client() as op, httpx.Client(base_url=a.base) as open_a, httpx.Client(base_url=b.base) as open_b:
            assert op.post("/v1/machines", json=machines_body("m1", "m2", cpu="4", memory="16Gi")).status_code == 201
            jobs = [job_body(f"j{i}", count=2, cpu="500m", memory="1Gi") for i in range(5)]
            assert op.post("/v1/jobs/bulk", json={"jobs": jobs}).json()["created"] == 5
            # never fits; tracing is off here, so the caller's own traceparent is what the job keeps
            caller = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
            assert op.post("/v1/jobs", json=job_body("big", count=1, cpu="64"),
                           headers={"traceparent": caller}).status_code == 201
            assert read_job_view(store, keys, "big").record.job.traceparent == caller
            assert read_job_view(store, keys, "j0").record.job.traceparent is None
            # Nothing scheduled yet: six jobs in the batch queue, nothing used, no scheduler known.
            before = scrape(open_a)
            assert before[("cellsched_queue_length", (("class", "batch"),))] == 6
            assert_cell_matches_the_store(before, store, keys)
            assert before[("cellsched_cell_capacity", (("resource", "cpu"),))] == 8000
            assert not [k for k in before if k[0] == "cellsched_scheduler_up"]

            # A scheduler on the same etcd places the five that fit, parks the one that cannot,
            # and publishes its metrics under its lease.
            sched = Scheduler("t-batch-0", store, keys, BATCH.with_(claim_batch=16), RealClock())
            for _ in range(20):
                if not sched.step():
                    break
            assert sched.publisher.tick()
            for client in (open_a, open_b):  # the whole cell, whichever process is asked
                got = scrape(client)
                assert_cell_matches_the_store(got, store, keys)
                assert got[("cellsched_cell_used", (("resource", "cpu"),))] == 5 * 2 * 500
                assert got[("cellsched_scheduler_up", (("scheduler", "t-batch-0"),))] == 1
                assert got[("cellsched_tasks_placed_total", (("scheduler", "t-batch-0"),))] == 10
                assert got[("cellsched_commits_total", (("mode", "resource_fit"), ("scheduler", "t-batch-0")))] >= 1
                assert got[("cellsched_job_wait_seconds_count", (("class", "batch"),))] == 5

            for jid in ("j0", "j1", "nope"):
                op.get(f"/v1/jobs/{jid}")
            op.get("/no/such/route")
            own = scrape(open_a)
            routes = {(dict(lb)["route"], dict(lb)["status"]): v for (name, lb), v in own.items()
                      if name == "cellsched_api_request_seconds_count"}
            # the template, never the raw path
            assert routes[("/v1/jobs/{job_id}", "200")] == 2 and routes[("/v1/jobs/{job_id}", "404")] == 1
            assert routes[("/v1/jobs/bulk", "200")] == 1 and routes[("/v1/jobs", "201")] == 1
            assert routes[("/v1/machines", "201")] == 1 and routes[("/metrics", "200")] >= 2
            assert routes[("unmatched", "404")] == 1
            assert not [r for r, _ in routes if "j0" in r or "nope" in r or "no/such" in r]
            # Each process counts its own requests: b served only start_api's readiness polls and scrapes.
            assert {dict(lb)["route"] for name, lb in scrape(open_b)
                    if name == "cellsched_api_request_seconds_count"} == {"/readyz", "/metrics"}

            sched.close()  # the lease goes, and the metrics key with it
            sched = None
            gone = scrape(open_a)  # a saw it before: reported down
            assert gone[("cellsched_scheduler_up", (("scheduler", "t-batch-0"),))] == 0
            assert ("cellsched_tasks_placed_total", (("scheduler", "t-batch-0"),)) not in gone
    finally:
        if sched is not None:
            sched.close()
        a.stop()
        b.stop()
        store.close()
    for server in (a, b):
        assert "Traceback" not in server.output(), server.output()


def test_metrics_are_open_but_rate_limited_per_client_address(tmp_path):
    server = start_api(tmp_path, None, "--schedulers", "off", "--rate", "0.01", "--burst", "2")
    try:
        with httpx.Client(base_url=server.base) as anon, server.client("reader") as reader:
            assert anon.get("/metrics").status_code == 200
            assert reader.get("/metrics").status_code == 200  # a token is accepted, and ignored
            r = anon.get("/metrics")
            assert r.status_code == 429 and int(r.headers["Retry-After"]) >= 1
            assert r.json()["title"] == "rate limited" and "scrape@127.0.0.1" in r.json()["detail"]
            assert reader.get("/v1/cell").status_code == 200  # the token's own bucket is untouched
    finally:
        server.stop()
