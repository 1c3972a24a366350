"""Schedulers publish their metrics under their lease at a bounded rate
(schedulers/metrics_publish.py); the cell's Prometheus text is rendered from those values and
the store (schedulers/prometheus_text.py, schedulers/cell_gauges.py)."""

from __future__ import annotations

import pytest
from prometheus_client.parser import text_string_to_metric_families

from cellsched.cellstate.clock import SimClock
from cellsched.cellstate.errors import InvalidInputError
from cellsched.cellstate.invariants import check_store
from cellsched.cellstate.model import JobClass
from cellsched.cellstate.store.memory import MemoryStore
from cellsched.cellstate.submission import submit_jobs
from cellsched.schedulers.cell_gauges import cell_totals, queue_lengths
from cellsched.schedulers.core import Scheduler
from cellsched.schedulers.metrics_publish import WAIT_BUCKETS, read_published
from cellsched.schedulers.prometheus_text import render
from cellsched.schedulers.settings import BATCH
from tests.cellfactory import make_cell, make_job, submit_each


def samples(text: bytes) -> dict[tuple, float]:
    out = {}
    for fam in text_string_to_metric_families(text.decode()):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_a_running_scheduler_publishes_at_a_bounded_rate_and_its_key_goes_with_its_lease():
    clock = SimClock()
    store = MemoryStore(clock=clock)
    keys = make_cell(store, 4)
    submit_jobs(store, keys, [make_job(f"j{i}", 2) for i in range(6)], now=0.0)
    clock.advance(1.5)  # each job then waits 1.5 s: the 2.5 s bucket, not the 1 s one
    s = Scheduler("b0", store, keys, BATCH.with_(metrics_publish_s=2.0, idle_poll_s=0.5), clock)
    s.run(clock.now() + 10.0)  # simulated: idle polls advance the clock
    assert 1 <= s.publisher.published <= 10.0 / 2.0 + 1  # the bound: one put per period
    published = read_published(store, keys)
    assert list(published) == ["b0"]
    m = published["b0"]
    own = s.metrics()
    assert m["tasks_placed"] == own["tasks_placed"] == 12 and m["jobs_placed"] == 6
    assert m["commits"] == own["txns"] - own["failed_txns"] and m["mode"] == "resource_fit"
    assert m["job_class"] == "batch" and 0.0 <= m["busyness"] <= 1.0 and m["published_at"] <= clock.now()
    buckets = dict((str(le), n) for le, n in m["wait_seconds"]["buckets"])
    assert len(buckets) == len(WAIT_BUCKETS) and buckets["1.0"] == 0 and buckets["2.5"] == 6
    assert buckets["+Inf"] == m["wait_seconds"]["count"] == 6
    s.close()  # revokes the lease: the key goes with it
    assert read_published(store, keys) == {}
    text = samples(render({}, {}, {}, {}, known=["b0"]))
    assert text[("cellsched_scheduler_up", (("scheduler", "b0"),))] == 0


def test_rendered_metrics_agree_with_the_store_and_the_schedulers_counts():
    clock = SimClock()
    store = MemoryStore(clock=clock)
    keys = make_cell(store, 1, cpu=1000)
    submit_each(store, keys, [make_job("ja", 1, cpu=1000), make_job("jb", 1, cpu=1000),  # one claim each
                              make_job("jc", 1, cpu=1000)])
    a = Scheduler("a", store, keys, BATCH.with_(claim_batch=1), clock)
    b = Scheduler("b", store, keys, BATCH.with_(claim_batch=1), clock)
    pa, pb = a.prepare(), b.prepare()
    a.complete(pa)
    b.complete(pb)  # conflicts: the one machine is full
    assert a.publisher.tick() and b.publisher.tick()
    assert not a.publisher.tick()  # within the period: nothing written
    published = read_published(store, keys)
    capacity, used = cell_totals(store, keys)
    queues = queue_lengths(store, keys)
    got = samples(render(published, capacity, used, queues, known=["a", "b", "gone"]))
    rep = check_store(store, keys)
    assert rep.ok and rep.bound_tasks == 1
    assert used == {"cpu": 1000, "memory": 1024, "gpu": 0} and capacity["cpu"] == 1000
    assert got[("cellsched_cell_used", (("resource", "cpu"),))] == 1000
    assert got[("cellsched_cell_capacity", (("resource", "memory"),))] == capacity["memory"]
    # jb is held by b (retrying), jc never claimed: both still have their queue entries
    assert queues == {c.value: (2 if c is JobClass.BATCH else 0) for c in JobClass}
    assert got[("cellsched_queue_length", (("class", "batch"),))] == 2
    for name, sched in (("a", a), ("b", b)):
        own = sched.metrics()
        labels = (("mode", "resource_fit"), ("scheduler", name))
        assert got[("cellsched_commits_total", labels)] == own["txns"] - own["failed_txns"]
        assert got[("cellsched_conflicts_total", labels)] == own["conflicted_claims"]
        assert got[("cellsched_scheduler_up", (("scheduler", name),))] == 1
        assert got[("cellsched_scheduler_conflict_fraction", (("scheduler", name),))] == own["conflict_fraction"]
    assert got[("cellsched_conflicts_total", (("mode", "resource_fit"), ("scheduler", "b")))] == 1
    assert got[("cellsched_scheduler_up", (("scheduler", "gone"),))] == 0
    assert got[("cellsched_job_wait_seconds_count", (("class", "batch"),))] == 1
    assert got[("cellsched_job_wait_seconds_bucket", (("class", "batch"), ("le", "+Inf")))] == 1
    a.close()
    b.close()


def test_bad_names_and_values_are_refused_by_name():
    with pytest.raises(InvalidInputError, match="scheduler name 'a/b'"):
        Scheduler("a/b", MemoryStore(), make_cell(MemoryStore(), 1), BATCH, SimClock())
    with pytest.raises(InvalidInputError, match="metrics_publish_s -1"):
        BATCH.with_(metrics_publish_s=-1)
    bad = {"x": {"job_class": "batch", "wait_seconds": {"buckets": [[1.0, 2]], "sum": 1.0}}}
    with pytest.raises(InvalidInputError, match="published metrics of x: missing mode, busyness"):
        render(bad, {}, {}, {})
    bad["x"].update(mode="sequence", busyness=0.0, conflict_fraction=0.0, commits=0, conflicts=0, tasks_placed=0)
    with pytest.raises(InvalidInputError, match="published metrics of x: wait buckets lack"):
        render(bad, {}, {}, {})
