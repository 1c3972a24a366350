"""Idempotent submission with the key kept in the store: the same key through two API
processes (on one etcd) makes one job; the same key with another body is 409. And
durability: an API process SIGKILLed right after a 2xx leaves the job in etcd, placed."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

from cellsched.cellstate.keys import CellKeys
from cellsched.cellstate.store.etcd import EtcdStore
from cellsched.cellstate.views import read_job_view
from tests.apiserver import job_body, machines_body, start_api, wait_for


@pytest.fixture
def two_apis(etcd_member, tmp_path):
    a = start_api(tmp_path, etcd_member.endpoints, "--schedulers", "off")
    b = start_api(tmp_path, etcd_member.endpoints, "--schedulers", "off")
    yield a, b
    a.stop()
    b.stop()


def test_same_key_through_two_processes_is_one_job(two_apis, etcd_member):
    a, b = two_apis
    body = job_body(count=2)  # no id: each process would name it differently
    with a.client("submitter") as ca, b.client("submitter") as cb:
        for round_ in range(8):
            key = {"Idempotency-Key": f"race-{round_}"}
            with ThreadPoolExecutor(2) as pool:
                ra, rb = pool.map(lambda c, h=key: c.post("/v1/jobs", json=body, headers=h), (ca, cb))
            codes = sorted([ra.status_code, rb.status_code])
            assert codes == [200, 201], (ra.text, rb.text)
            assert ra.json()["id"] == rb.json()["id"]
            replayed = ra if ra.status_code == 200 else rb
            assert replayed.headers["idempotent-replayed"] == "true"
        ids = [j["id"] for j in ca.get("/v1/jobs", params={"limit": 500}).json()["items"]]
        assert len(ids) == 8 == len(set(ids))
        other = cb.post("/v1/jobs", json=job_body(count=3), headers={"Idempotency-Key": "race-0"})
        assert other.status_code == 409 and other.json()["field"] == "header.Idempotency-Key"
    store = EtcdStore(etcd_member.endpoints)
    try:
        keys = CellKeys("t")
        assert len(store.get_prefix(keys.idempotency_prefix)[0]) == 8
        assert len(store.get_prefix(keys.jobs_prefix)[0]) == 8
    finally:
        store.close()


def test_keys_are_per_caller_and_bad_keys_refused(tmp_path):
    server = start_api(tmp_path, None, "--schedulers", "off")
    try:
        with server.client("submitter") as sub, server.client("operator") as op:
            h = {"Idempotency-Key": "shared"}
            first = sub.post("/v1/jobs", json=job_body("k-1"), headers=h)
            assert first.status_code == 201
            replay = sub.post("/v1/jobs", json=job_body("k-1"), headers=h)
            assert replay.status_code == 200 and replay.json()["id"] == "k-1"
            assert sub.post("/v1/jobs", json=job_body("k-2"), headers=h).status_code == 409
            assert op.post("/v1/jobs", json=job_body("k-3"), headers=h).status_code == 201  # another caller's key
            bad = sub.post("/v1/jobs", json=job_body("k-4"), headers={"Idempotency-Key": "has space"})
            assert bad.status_code == 422 and bad.json()["field"] == "header.Idempotency-Key"
            assert sub.get("/v1/jobs/k-2").status_code == 404 and sub.get("/v1/jobs/k-4").status_code == 404
    finally:
        server.stop()


def test_sigkill_after_2xx_keeps_the_job_and_it_gets_placed(etcd_member, tmp_path):
    api = start_api(tmp_path, etcd_member.endpoints, "--schedulers", "off")
    with api.client("operator") as op:
        assert op.post("/v1/machines", json=machines_body("m1", "m2")).status_code == 201
        acked = [op.post("/v1/jobs", json=job_body(f"d-{i}", count=2)) for i in range(5)]
    api.stop(kill=True)  # SIGKILL: no shutdown path runs
    assert api.proc.returncode == -9
    assert all(r.status_code == 201 for r in acked)
    store = EtcdStore(etcd_member.endpoints)
    try:
        keys = CellKeys("t")
        for i in range(5):
            assert read_job_view(store, keys, f"d-{i}") is not None
    finally:
        store.close()
    placer = start_api(tmp_path, etcd_member.endpoints, "--schedulers", "on")
    try:
        with placer.client("reader") as c:
            for i in range(5):
                wait_for(lambda i=i: c.get(f"/v1/jobs/d-{i}").json()["status"] == "placed", f"d-{i} placed")
    finally:
        placer.stop()
