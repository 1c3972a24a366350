"""A bulk of large jobs is cut so that no submission txn goes over the store's request
bytes (submit_jobs packs by count only), and a job whose record alone is over is a 422."""

from __future__ import annotations

import pytest

from cellsched.api import ApiContext, BulkIn, TokenTable
from cellsched.api.errors import ApiError
from cellsched.api.submit import submit_bulk
from cellsched.cellstate.keys import CellKeys
from cellsched.cellstate.store import StoreLimits
from cellsched.cellstate.store.memory import MemoryStore


def _ctx(max_request_bytes: int) -> ApiContext:
    store = MemoryStore(StoreLimits(max_request_bytes=max_request_bytes))
    return ApiContext(store, CellKeys("t"), TokenTable.parse("reader:r:" + "a" * 20, "t"))


def _job(jid: str, groups: int) -> dict:
    labels = {f"k{i:02d}": "v" * 60 for i in range(32)}
    return {"id": jid, "groups": [{"name": f"g{g}", "labels": labels, "resources": {"cpu": "10m"}}
                                  for g in range(groups)]}


def test_bulk_is_cut_by_bytes():
    ctx = _ctx(200_000)  # ~20 KB jobs: 64 per txn by count would be ~1.3 MB
    out = submit_bulk(ctx, ctx.store, BulkIn.model_validate({"jobs": [_job(f"j{i}", 8) for i in range(64)]}))
    assert out.created == 64 and out.refused == 0
    assert len(ctx.store.get_prefix(ctx.keys.jobs_prefix)[0]) == 64


def test_a_job_over_one_txn_is_refused_before_any_write():
    ctx = _ctx(15_000)
    with pytest.raises(ApiError) as exc:
        submit_bulk(ctx, ctx.store, BulkIn.model_validate({"jobs": [_job("small", 1), _job("huge", 8)]}))
    assert exc.value.http_status == 422 and exc.value.field == "body.jobs.1"
    assert ctx.store.get_prefix(ctx.keys.jobs_prefix)[0] == []


def test_the_bulk_threads_end_with_the_app():
    """The bulk pool (ApiContext.bulk_pool) is let go at the app's shutdown, its threads
    ended; the next app on the same context makes a fresh one."""
    import threading

    from fastapi.testclient import TestClient

    from cellsched.api import create_app

    store = MemoryStore()
    ctx = ApiContext(store, CellKeys("t"), TokenTable.parse("submitter:s:" + "a" * 20, "t"))
    auth = {"Authorization": "Bearer " + "a" * 20}
    for round_ in range(2):
        with TestClient(create_app(ctx)) as client:
            r = client.post("/v1/jobs/bulk", json={"jobs": [_job(f"r{round_}j{i}", 1) for i in range(3)]}, headers=auth)
            assert r.status_code == 200 and r.json()["created"] == 3, r.text
            pool = ctx._bulk_pool
            assert pool is not None
            workers = list(pool._threads)
            assert workers and all(t.is_alive() for t in workers)
        assert ctx._bulk_pool is None and not any(t.is_alive() for t in workers)
    assert not [t for t in threading.enumerate() if t.name.startswith("bulk")]
    assert len(store.get_prefix(ctx.keys.jobs_prefix)[0]) == 6
