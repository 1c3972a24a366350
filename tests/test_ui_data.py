"""The data behind the /ui dashboard, in process: the decision ring a scheduler keeps with
tracing off (schedulers/decision_ring.py), bounded in count and bytes; its publication next to
the metrics under the lease (schedulers/activity.py); the heatmap's changes since a revision
(schedulers/cell_gauges.py, by mod_revision)."""

from __future__ import annotations

import json

from cellsched.cellstate.clock import SimClock
from cellsched.cellstate.machines import set_machine_state
from cellsched.cellstate.model import MachineState
from cellsched.cellstate.store.memory import MemoryStore
from cellsched.cellstate.submission import submit_jobs
from cellsched.schedulers import tracing
from cellsched.schedulers.activity import SERIES_POINTS, read_activity
from cellsched.schedulers.cell_gauges import HEAT_DRAINING, machine_heat
from cellsched.schedulers.core import Scheduler
from cellsched.schedulers.decision_ring import CAPACITY, MAX_EVENTS, MAX_TEXT, DecisionRing
from cellsched.schedulers.settings import BATCH
from tests.cellfactory import make_cell, make_job, submit_each


def test_the_ring_keeps_decisions_with_tracing_off_and_stays_bounded():
    before = tracing.install(tracing.Tracing.off())
    try:
        clock = SimClock()
        store = MemoryStore(clock=clock)
        keys = make_cell(store, 1, cpu=1000)
        # Two schedulers on one one-CPU machine: one places, the other conflicts; jobs too big park.
        submit_each(store, keys, [make_job("fits", 1, cpu=1000), make_job("rival", 1, cpu=1000),  # own entries
                                  make_job("huge", 1, cpu=64000)])
        a = Scheduler("a", store, keys, BATCH.with_(claim_batch=1), clock)
        b = Scheduler("b", store, keys, BATCH.with_(claim_batch=2), clock)
        pa, pb = a.prepare(), b.prepare()
        a.complete(pa)
        b.complete(pb)
        assert not a.trace.on
        (first,) = a.trace.ring.ring
        names = [s["name"] for s in first["spans"]]
        assert "schedule.score" in names and "schedule.commit_txn" in names and "schedule.sync" in names
        score = next(s for s in first["spans"] if s["name"] == "schedule.score")
        assert score["attrs"]["machines_scored"] == 1 and score["attrs"]["kernel"]
        assert 0 <= score["start_ms"] <= score["end_ms"] <= first["dur_ms"]
        assert first["totals"]["jobs_placed"] == 1 and first["job_ids"] == ["fits"]
        (other,) = b.trace.ring.ring
        kinds = {e["name"] for e in other["events"]}
        assert kinds == {"conflict", "park"}, other["events"]
        park = next(e for e in other["events"] if e["name"] == "park")
        assert park["attrs"]["job"] == "huge" and park["attrs"]["reason"]
        a.close()
        b.close()
    finally:
        tracing.install(before)


def test_the_ring_is_bounded_in_count_events_text_and_published_bytes():
    ring = DecisionRing()
    for i in range(CAPACITY + 30):
        ring.start()
        ring.span("schedule.sync", 0, 1, {})
        ring.begin(5000, [f"j{i}-{k}" for k in range(8)])
        for k in range(MAX_EVENTS + 10):
            ring.event("conflict", {"cellsched.reason": "x" * 5000, "cellsched.job": f"j{k}", "n": k})
        ring.totals({"cellsched.jobs_placed": 1})
        ring.end()
    assert len(ring.ring) == CAPACITY and ring.ring[-1]["seq"] == CAPACITY + 30
    last = ring.ring[-1]
    assert len(last["events"]) == MAX_EVENTS and last["dropped_events"] == 10 and last["jobs"] == 5000
    assert all(len(e["attrs"]["reason"]) <= MAX_TEXT for e in last["events"])
    published = ring.published(max_bytes=20_000)
    assert published and published[-1] is last and len(json.dumps(published)) <= 20_000
    assert ring.published()[-1] is last  # the default bound keeps the newest


def test_activity_is_published_with_the_metrics_under_the_lease():
    clock = SimClock()
    store = MemoryStore(clock=clock)
    keys = make_cell(store, 4)
    submit_jobs(store, keys, [make_job(f"j{i}", 2) for i in range(6)], now=0.0)
    s = Scheduler("b0", store, keys, BATCH.with_(metrics_publish_s=2.0, idle_poll_s=0.5), clock)
    s.run(clock.now() + 10.0)
    got = read_activity(store, keys)
    assert list(got) == ["b0"]
    rev, value = got["b0"]
    assert rev == store.get(keys.metrics("b0")).mod_revision  # one txn writes both
    assert value["decisions"] and value["decisions"][-1]["seq"] == s.trace.ring.seq
    assert 1 <= len(value["series"]) <= SERIES_POINTS
    assert all(0.0 <= busy <= 1.0 and frac >= 0.0 for _, busy, frac in value["series"])
    s.close()
    assert read_activity(store, keys) == {}


def test_the_heatmap_sends_only_what_changed_since_a_revision(store):
    """On both backends: the mod_revisions are the store's."""
    clock = SimClock()
    keys = make_cell(store, 50, cpu=4000)
    full = machine_heat(store, keys)
    assert full.full and full.total == 50 and len(full.ids) == 50 and set(full.heat) == {0}
    assert machine_heat(store, keys, full.revision).ids == []
    submit_jobs(store, keys, [make_job("one", 1, cpu=3000)], now=0.0)
    s = Scheduler("b0", store, keys, BATCH, clock)
    s.complete(s.prepare())
    s.close()
    after = machine_heat(store, keys, full.revision)
    assert not after.full and len(after.ids) == 1 and after.heat == [75]
    set_machine_state(store, keys, "m7", MachineState.DRAINING)
    drained = machine_heat(store, keys, after.revision)
    assert drained.ids == ["m7"] and drained.heat == [HEAT_DRAINING]
    assert machine_heat(store, keys, drained.revision + 1000).full  # ahead of the store: everything


def test_the_page_is_open_and_its_data_routes_take_a_reader_token():
    from fastapi.testclient import TestClient

    from cellsched.api import ApiContext, Role, TokenTable, create_app

    clock = SimClock()
    store = MemoryStore(clock=clock)
    keys = make_cell(store, 3)
    tokens = TokenTable()
    tokens.add(Role.READER, "r", "reader-secret-0000000000001")
    s = Scheduler("t-batch-0", store, keys, BATCH, clock)
    submit_jobs(store, keys, [make_job("j", 1)], now=0.0)
    s.complete(s.prepare())
    assert s.publisher.tick()
    with TestClient(create_app(ApiContext(store, keys, tokens))) as client:
        page = client.get("/ui")
        assert page.status_code == 200 and "<canvas id=\"heatmap\"" in page.text
        assert client.get("/ui/dashboard.js").headers["content-type"].startswith("text/javascript")
        paths = ["/v1/cell/heatmap?since=0", "/v1/ui/activity?since=0", "/v1/ui/decisions/t-batch-0"]
        for path in paths:
            assert client.get(path).status_code == 401, path
        auth = {"Authorization": "Bearer reader-secret-0000000000001"}
        heat = client.get(paths[0], headers=auth).json()
        assert heat["total"] == 3 and sorted(heat["ids"]) == ["m0", "m1", "m2"] and max(heat["heat"]) == 25
        act = client.get(paths[1], headers=auth).json()
        assert act["alive"] == ["t-batch-0"] and act["changed"][0]["decisions"][0]["placed"] == 1
        assert client.get(f"/v1/ui/activity?since={act['revision']}", headers=auth).json()["changed"] == []
        (trace,) = client.get(paths[2] + "?seq=1", headers=auth).json()["decisions"]
        assert trace["job_ids"] == ["j"] and {sp["name"] for sp in trace["spans"]} >= {"schedule.score"}
        assert client.get("/v1/ui/decisions/nobody", headers=auth).status_code == 404
        paths_in_doc = client.get("/openapi.json").json()["paths"]
        assert "/ui" not in paths_in_doc and "/v1/cell/heatmap" in paths_in_doc
    s.close()
