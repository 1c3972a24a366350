"""Bad input is refused whole with a typed error, and the store is left unchanged."""

from __future__ import annotations

import math

import pytest

from cellsched.cellstate import codec
from cellsched.cellstate.errors import (
    CorruptValueError,
    InvalidJobError,
    InvalidResourceError,
    UnplaceableRequestError,
)
from cellsched.cellstate.invariants import check_store
from cellsched.cellstate.model import MAX_TASKS_PER_JOB, Job, Machine, TaskGroup
from cellsched.cellstate.submission import check_placeable, submit_jobs
from cellsched.schedulers.cache import SchedulerCache
from tests.cellfactory import make_cell, make_job


@pytest.mark.parametrize("raw", [b"\xff\xfe", b"[1,2]", b'{"v":99}', b'{"v":1,"u":[1],"t":{}}', b'{"v":1}'])
def test_bad_input_undecodable_alloc_value_is_typed_and_reported(store, raw):
    keys = make_cell(store, 1)
    store.put(keys.alloc("m0"), raw)
    with pytest.raises(CorruptValueError, match="node/alloc/m0"):
        codec.decode_alloc(keys.alloc("m0"), store.get(keys.alloc("m0")).value)
    with pytest.raises(CorruptValueError):
        SchedulerCache(store, keys)
    report = check_store(store, keys)
    assert not report.ok and "node/alloc/m0" in report.violations[0]


@pytest.mark.parametrize("amount", [-1, math.nan, math.inf, 1.5, "7", True])
def test_bad_input_resource_amounts_refused(amount):
    with pytest.raises(InvalidResourceError, match="cpu"):
        TaskGroup("g", 1, (amount, 10, 0))
    with pytest.raises(InvalidResourceError):
        Machine("m", (amount, 10, 0))


def test_bad_input_empty_and_oversized_jobs_refused():
    with pytest.raises(InvalidJobError, match="at least one task group"):
        Job("empty", ())
    with pytest.raises(InvalidJobError, match="count"):
        Job("zero", (TaskGroup("g", 0, (1, 1, 0)),))
    with pytest.raises(InvalidJobError, match="exceeds the limit"):
        Job("huge", (TaskGroup("g", MAX_TASKS_PER_JOB + 1, (1, 1, 0)),))
    with pytest.raises(InvalidJobError, match="id"):
        Job("bad/id", (TaskGroup("g", 1, (1, 1, 0)),))


def test_bad_input_request_larger_than_any_machine(store):
    keys = make_cell(store, 2, cpu=4000)
    machines = [Machine("m0", (4000, 16384, 0)), Machine("m1", (4000, 16384, 0))]
    job = make_job("toobig", 1, cpu=4001)
    with pytest.raises(UnplaceableRequestError, match="more than any machine"):
        check_placeable(job, machines)
    check_placeable(make_job("ok", 1, cpu=4000), machines)
    assert store.get(keys.job("toobig")) is None


def test_bad_input_duplicate_submission_refused_whole(store):
    keys = make_cell(store, 1)
    before = store.current_revision()
    with pytest.raises(InvalidJobError, match="duplicate"):
        submit_jobs(store, keys, [make_job("a", 1), make_job("a", 1)], now=0.0)
    assert store.current_revision() == before
    first = submit_jobs(store, keys, [make_job("a", 1)], now=0.0)
    again = submit_jobs(store, keys, [make_job("a", 2), make_job("b", 1)], now=0.0)
    assert first.accepted == ["a"] and again.accepted == ["b"]
    assert "already exists" in again.rejected["a"]
    assert check_store(store, keys, ["a", "b"]).ok
