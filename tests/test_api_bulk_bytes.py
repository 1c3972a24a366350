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
