"""Every /v1 route through a real uvicorn, on both backends: the embedded memory store
(hosted by the API process) and a real etcd (schedulers hosted by the API process too)."""

from __future__ import annotations

import pytest

from cellsched.loadtests.etcd_process import start_etcd_cluster
from tests.apiserver import job_body, machines_body, start_api, wait_for
from tests.conftest import require_etcd


@pytest.fixture(scope="module", params=["memory", "etcd"])
def api(request, tmp_path_factory):
    tmp = tmp_path_factory.mktemp(f"api-{request.param}")
    cluster = None
    if request.param == "etcd":
        require_etcd()
        cluster = start_etcd_cluster(1)
    server = start_api(tmp, cluster.endpoints if cluster else None, "--schedulers", "on",
                       "--max-body-bytes", "65536")
    with server.client() as op:
        r = op.post("/v1/machines", json=machines_body("m1", "m2", "m3", zone="a"))
        assert r.status_code == 201, r.text
    yield server
    server.stop()
    assert "Traceback" not in server.output(), server.output()
    if cluster:
        cluster.stop()


def placed(c, jid):
    j = c.get(f"/v1/jobs/{jid}").json()
    return j if j["status"] == "placed" else None


def test_health_and_readiness(api):
    with api.client(None) as anon:
        assert anon.get("/healthz").json()["status"] == "ok"
        ready = anon.get("/readyz").json()
        assert ready["status"] == "ok" and ready["revision"] > 0


def test_submit_get_and_placement(api):
    with api.client("submitter") as c:
        r = c.post("/v1/jobs", json=job_body("r-one", count=3, priority=5))
        assert r.status_code == 201, r.text
        assert r.headers["location"] == "/v1/jobs/r-one"
        body = r.json()
        assert body["groups"][0]["request"]["cpu"] == 500 and body["groups"][0]["request"]["memory"] == 1024
        assert body["priority"] == 5 and body["class"] == "batch"
        job = wait_for(lambda: placed(c, "r-one"), "r-one placed")
        assert job["tasks"] == {"total": 3, "bound": 3, "done": 0}
        assert set(job["bindings"].values()) <= {"m1", "m2", "m3"}
        again = c.post("/v1/jobs", json=job_body("r-one"))
        assert again.status_code == 409 and again.json()["field"] == "body.id"
        assert c.get("/v1/jobs/nope").status_code == 404
        generated = c.post("/v1/jobs", json=job_body())
        assert generated.status_code == 201 and generated.json()["id"].startswith("j-")


def test_list_filters_and_cursor(api):
    with api.client("submitter") as c:
        for i in range(5):
            cls = "service" if i % 2 else "batch"
            assert c.post("/v1/jobs", json=job_body(f"l-{i}", count=1, priority=i, **{"class": cls})).status_code == 201
        seen, cursor, pages = [], None, 0
        while True:
            params = {"limit": 2, **({"cursor": cursor} if cursor else {})}
            page = c.get("/v1/jobs", params=params).json()
            seen += [j["id"] for j in page["items"]]
            pages += 1
            cursor = page["next_cursor"]
            if not cursor:
                break
        assert {f"l-{i}" for i in range(5)} <= set(seen)
        assert len(seen) == len(set(seen)) and pages >= 3
        svc = c.get("/v1/jobs", params={"class": "service", "limit": 500}).json()["items"]
        assert {j["id"] for j in svc if j["id"].startswith("l-")} == {"l-1", "l-3"}
        assert all(j["class"] == "service" for j in svc)
        p4 = c.get("/v1/jobs", params={"priority": 4}).json()["items"]
        assert [j["id"] for j in p4 if j["id"].startswith("l-")] == ["l-4"]
        wait_for(lambda: placed(c, "l-0"), "l-0 placed")
        only = c.get("/v1/jobs", params={"status": "placed", "limit": 500}).json()["items"]
        assert "l-0" in {j["id"] for j in only} and all(j["status"] == "placed" for j in only)
        bad = c.get("/v1/jobs", params={"cursor": "!!!"})
        assert bad.status_code == 422 and bad.json()["field"] == "query.cursor"
        wrong = c.delete("/v1/jobs")
        assert wrong.status_code == 405 and wrong.headers["allow"] == "GET, POST"
        assert c.get("/v1/jobs", params={"priority": 12}).json()["field"] == "query.priority"


def test_a_repeated_query_parameter_is_refused_by_name(api):
    # Every query parameter is one value in the OpenAPI document; the framework alone would
    # keep the last of the repeats and answer 200 (schemathesis ST201, CI of 2026-12-07).
    with api.client("operator") as c:
        twice = c.get("/v1/cell/heatmap", params=[("since", "x"), ("since", "0")])
        assert twice.status_code == 422, twice.text
        assert twice.json()["field"] == "query.since" and "more than once" in twice.json()["detail"]
        both = c.get("/v1/jobs", params=[("limit", "2"), ("status", "placed"), ("limit", "3"), ("status", "pending")])
        assert both.status_code == 422
        assert [e["field"] for e in both.json()["errors"]] == ["query.limit", "query.status"]
        assert c.get("/v1/cell/heatmap", params={"since": 0}).status_code == 200
        assert c.get("/v1/jobs", params={"limit": 2, "status": "placed"}).status_code == 200


def test_bulk_outcomes_and_whole_validation(api):
    with api.client("submitter") as c:
        assert c.post("/v1/jobs", json=job_body("b-exists")).status_code == 201
        r = c.post("/v1/jobs/bulk", json={"jobs": [job_body("b-1"), job_body("b-exists"), job_body("b-2")]})
        assert r.status_code == 200, r.text
        out = r.json()
        assert out["created"] == 2 and out["refused"] == 1
        assert [(x["id"], x["created"]) for x in out["results"]] == [("b-1", True), ("b-exists", False), ("b-2", True)]
        assert "exists" in out["results"][1]["reason"]
        bad = c.post("/v1/jobs/bulk", json={"jobs": [job_body("b-3"), job_body("b-4", cpu="-1")]})
        assert bad.status_code == 422 and bad.json()["field"].startswith("body.jobs.1.groups.0.resources.cpu")
        dup = c.post("/v1/jobs/bulk", json={"jobs": [job_body("b-5"), job_body("b-5")]})
        assert dup.status_code == 422 and dup.json()["field"] == "body.jobs.1.id"
        for jid in ("b-3", "b-4", "b-5"):  # nothing of a refused bulk was written
            assert c.get(f"/v1/jobs/{jid}").status_code == 404


def test_gang_wider_than_one_txn_is_refused(api):
    with api.client("submitter") as c:
        wide = {"id": "g-wide", "mode": "gang", "groups": [
            {"name": "w", "count": 64, "different_machines": True, "resources": {"cpu": "1"}}]}
        r = c.post("/v1/jobs", json=wide)
        assert r.status_code == 422
        assert r.json()["field"] == "body.groups" and "one txn" in r.json()["detail"]
        assert c.get("/v1/jobs/g-wide").status_code == 404
        ok = {"id": "g-ok", "mode": "gang", "groups": [
            {"name": "w", "count": 2, "different_machines": True, "resources": {"cpu": "1"}}]}
        assert c.post("/v1/jobs", json=ok).status_code == 201
        job = wait_for(lambda: placed(c, "g-ok"), "gang placed")
        assert len(set(job["bindings"].values())) == 2


def test_bad_bodies_name_the_field(api):
    with api.client("submitter") as c:
        cases = [
            (job_body(cpu="2x"), "body.groups.0.resources.cpu"),
            (job_body(memory="1.5Zi"), "body.groups.0.resources.memory"),
            (job_body(count=0), "body.groups.0.count"),
            ({**job_body(), "priority": 99}, "body.priority"),
            ({**job_body(), "class": "nope"}, "body.class"),
            ({**job_body(), "colour": "red"}, "body.colour"),
            ({"groups": []}, "body.groups"),
            ({**job_body(), "id": "has space"}, "body.id"),
        ]
        for body, field in cases:
            r = c.post("/v1/jobs", json=body)
            assert r.status_code == 422, (body, r.text)
            assert r.json()["field"].startswith(field), (field, r.json())
        r = c.post("/v1/jobs", content=b"{not json", headers={"content-type": "application/json"})
        assert r.status_code == 400 and r.json()["field"] == "body"


def test_body_limit_is_413(api):
    big = {"jobs": [job_body(f"big-{i}") for i in range(900)]}
    with api.client("submitter") as c:
        r = c.post("/v1/jobs/bulk", json=big)
        assert r.status_code == 413 and "limit" in r.json()["detail"]

        def chunks():
            import json
            data = json.dumps(big).encode()
            for i in range(0, len(data), 4096):
                yield data[i:i + 4096]

        r = c.post("/v1/jobs/bulk", content=chunks(), headers={"content-type": "application/json"})
        assert r.status_code == 413
        assert c.get("/v1/jobs/big-0").status_code == 404


def test_machines_drain_undrain_remove(api):
    with api.client("operator") as op:
        assert op.post("/v1/machines", json=machines_body("x1", "x2", cpu="500m")).status_code == 201
        dup = op.post("/v1/machines", json=machines_body("x1"))
        assert dup.status_code == 422 and "already exist" in dup.json()["detail"]
        bad = op.post("/v1/machines", json={"machines": [{"id": "x9", "capacity": {"cpu": "lots"}}]})
        assert bad.status_code == 422 and bad.json()["field"] == "body.machines.0.capacity.cpu"
        items = op.get("/v1/machines", params={"limit": 500}).json()["items"]
        x1 = next(m for m in items if m["id"] == "x1")
        assert x1["capacity"]["cpu"] == 500 and x1["state"] == "up"
        page = op.get("/v1/machines", params={"limit": 2}).json()
        assert len(page["items"]) == 2 and page["next_cursor"]
        assert op.post("/v1/machines/x1/drain").json()["state"] == "draining"
        assert op.get("/v1/machines/x1").json()["state"] == "draining"
        assert op.post("/v1/machines/x1/undrain").json()["state"] == "up"
        up = op.delete("/v1/machines/x2")
        assert up.status_code == 409 and "drain" in up.json()["detail"]
        op.post("/v1/machines/x2/drain")
        gone = op.delete("/v1/machines/x2")
        assert gone.status_code == 200 and gone.json()["state"] is None
        assert op.get("/v1/machines/x2").status_code == 404
        assert op.post("/v1/machines/nope/drain").status_code == 404


def test_heartbeat_renews_the_liveness_lease(api):
    with api.client("operator") as op:
        first = op.post("/v1/machines/m1/heartbeat", json={"ttl_s": 30}).json()
        assert first["renewed"] is False and first["lease_id"] > 0
        assert op.get("/v1/machines/m1").json()["alive"] is True
        second = op.post("/v1/machines/m1/heartbeat", json={"ttl_s": 30, "lease_id": first["lease_id"]}).json()
        assert second == {**first, "renewed": True}
        stale = op.post("/v1/machines/m1/heartbeat", json={"ttl_s": 30, "lease_id": 987654321}).json()
        assert stale["renewed"] is False and stale["lease_id"] != 987654321
        assert op.post("/v1/machines/nope/heartbeat", json={}).status_code == 404
        assert op.post("/v1/machines/m1/heartbeat", json={"ttl_s": 0}).json()["field"] == "body.ttl_s"
        assert op.post("/v1/machines/m1/heartbeat", json={"lease_id": True}).json()["field"] == "body.lease_id"


def test_task_reports_release_tasks(api):
    with api.client("operator") as op:
        assert op.post("/v1/jobs", json=job_body("t-rep", count=2)).status_code == 201
        job = wait_for(lambda: placed(op, "t-rep"), "t-rep placed")
        where0, where1 = job["bindings"]["t-rep/0/0"], job["bindings"]["t-rep/0/1"]
        running = op.post("/v1/jobs/t-rep/tasks/0/0/report", json={"state": "running", "machine": where0})
        assert running.status_code == 200 and running.json()["task_state"] == "running"
        other = next(m for m in ("m1", "m2", "m3") if m != where0)
        wrong = op.post("/v1/jobs/t-rep/tasks/0/0/report", json={"state": "finished", "machine": other})
        assert wrong.status_code == 409 and wrong.json()["field"] == "body.machine"
        done = op.post("/v1/jobs/t-rep/tasks/0/0/report", json={"state": "finished", "machine": where0}).json()
        assert done["task_state"] == "finished" and done["job_status"] == "placed"
        last = op.post("/v1/jobs/t-rep/tasks/0/1/report", json={"state": "finished", "machine": where1}).json()
        assert last["job_status"] == "finished"
        assert op.post("/v1/jobs/t-rep/tasks/0/9/report", json={"state": "running", "machine": "m1"}).status_code == 404
        late = op.post("/v1/jobs/t-rep/cancel")
        assert late.status_code == 409 and "finished" in late.json()["detail"]


def test_failed_report_reschedules(api):
    with api.client("operator") as op:
        assert op.post("/v1/jobs", json=job_body("t-fail", count=1, max_failures=1)).status_code == 201
        job = wait_for(lambda: placed(op, "t-fail"), "t-fail placed")
        r = op.post("/v1/jobs/t-fail/tasks/0/0/report", json={"state": "failed", "machine": job["bindings"]["t-fail/0/0"]})
        assert r.status_code == 200 and r.json()["task_state"] in ("pending", "running")
        again = wait_for(lambda: placed(op, "t-fail"), "t-fail placed again")
        assert again["failures"] == 1


def test_cancel(api):
    with api.client("submitter") as c:
        assert c.post("/v1/jobs", json=job_body("c-1", count=2)).status_code == 201
        wait_for(lambda: placed(c, "c-1"), "c-1 placed")
        out = c.post("/v1/jobs/c-1/cancel").json()
        assert out["status"] == "cancelled" and out["already_cancelled"] is False and out["released_tasks"] == 2
        again = c.post("/v1/jobs/c-1/cancel").json()
        assert again["already_cancelled"] is True and again["released_tasks"] == 0
        assert c.get("/v1/jobs/c-1").json()["status"] == "cancelled"
        assert c.post("/v1/jobs/nope/cancel").status_code == 404


def test_explanation_of_a_parked_job(api):
    with api.client("submitter") as c:
        assert c.post("/v1/jobs", json=job_body("e-big", count=1, cpu="64")).status_code == 201
        exp = wait_for(lambda: (e := c.get("/v1/jobs/e-big/explanation").json())["status"] == "parked" and e,
                       "e-big parked")
        assert exp["refusal"]["kind"] == "unplaceable"
        group = exp["unplaceable_groups"][0]
        assert group["resource"] == "cpu" and group["machines_evaluated"] >= 3
        assert len(group["closest_machines"]) == 3 and all("cpu" in c["free"] for c in group["closest_machines"])
        assert exp["attempts"] >= 1
        assert "cpu" in exp["reason"] and exp["not_recorded"]


def test_dry_run_plan(api):
    with api.client("reader") as c:
        body = {"class": "service", "groups": [{"name": "w", "count": 2, "resources": {"cpu": "10m", "memory": "16Mi"}}]}
        plan = c.post("/v1/plan", json=body, params={"top": 3}).json()
        assert plan["feasible"] is True and plan["policy"] == "spread" and plan["revision"] > 0
        group = plan["groups"][0]
        assert sum(group["placed"].values()) == 2
        assert 1 <= len(group["top"]) <= 3
        best = group["top"][0]
        assert set(best["scorers"]) >= {"least_allocated", "balanced"}
        assert best["score"] == max(m["score"] for m in group["top"])
        big = c.post("/v1/plan", json=job_body(count=1, cpu="64")).json()
        assert big["feasible"] is False and big["unplaceable_groups"][0]["resource"] == "cpu"
        assert big["groups"][0]["top"] == []
        assert c.get("/v1/jobs/dry-run").status_code == 404  # nothing written


def test_cell_summary(api):
    with api.client("reader") as c:
        s = c.get("/v1/cell").json()
        assert s["cell"] == "t" and s["revision"] > 0
        assert s["machines"]["total"] >= 3 and s["capacity"]["cpu"] >= 12000
        assert set(s["queues"]) == {"batch", "service", "gpu"}
        assert s["schedulers"]["in_process"] == 3
        assert s["used"]["cpu"] <= s["capacity"]["cpu"]


def test_openapi_is_complete(api):
    with api.client(None) as anon:
        doc = anon.get("/openapi.json").json()
    ops = {op["operationId"]: (path, method, op) for path, item in doc["paths"].items() for method, op in item.items()}
    assert set(ops) >= {"submit_job", "submit_jobs_bulk", "list_jobs", "get_job", "cancel_job", "explain_job",
                        "add_machines", "list_machines", "get_machine", "drain_machine", "undrain_machine",
                        "remove_machine", "machine_heartbeat", "report_task", "cell_summary", "healthz", "readyz",
                        "plan_job", "metrics"}
    links = ops["submit_job"][2]["responses"]["201"]["links"]
    assert {v["operationId"] for v in links.values()} == {"get_job", "cancel_job", "explain_job", "report_task"}
    added = ops["add_machines"][2]["responses"]["201"]["links"]
    assert {v["operationId"] for v in added.values()} >= {"get_machine", "drain_machine", "machine_heartbeat"}
    # /metrics is open (scrapers carry no token) but rate limited; text/plain, errors in JSON
    scrape = ops["metrics"][2]["responses"]
    assert set(scrape) == {"200", "429", "503"} and "text/plain" in scrape["200"]["content"]
    assert scrape["429"]["content"]["application/json"]["schema"]["$ref"].endswith("/Problem")
    for name, (_, _, op) in ops.items():
        if name in ("healthz", "readyz", "metrics"):
            continue
        assert {"401", "403", "429"} <= set(op["responses"]), name
        assert op["responses"]["401"]["content"]["application/json"]["schema"]["$ref"].endswith("/Problem")



def test_bulk_idempotency_key_is_refused(api):
    with api.client("submitter") as c:
        r = c.post("/v1/jobs/bulk", json={"jobs": [job_body("bk-1")]}, headers={"Idempotency-Key": "x"})
        assert r.status_code == 422 and r.json()["field"] == "header.Idempotency-Key"
        assert c.get("/v1/jobs/bk-1").status_code == 404


def test_an_integer_parameter_takes_digits_only(api):
    # Pydantic alone would read "1_0" as 10 and " 3" or "+3" as 3: spellings the OpenAPI
    # document's "integer" does not describe, so a schema checker's "not an integer" got a 200.
    with api.client("operator") as c:
        for where in ("/v1/jobs?limit=", "/v1/machines?limit=", "/v1/cell/heatmap?since=", "/v1/ui/activity?since="):
            for spelled in ("1_0", "%203", "+3", "3.5", "0x3"):
                r = c.get(where + spelled)
                assert r.status_code == 422, (where, spelled, r.text)
                assert r.json()["field"] == "query." + where.split("?")[1].rstrip("=")
            assert c.get(where + "3").status_code == 200 and c.get(where + "3.0").status_code == 200
        bad_index = c.post("/v1/jobs/nobody/tasks/0/1_0/report", json={"state": "running"})
        assert bad_index.status_code == 422 and bad_index.json()["field"] == "path.index"
