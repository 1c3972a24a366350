"""The group commit of single submissions (api/group_commit.py): submissions that arrive
together share one txn, each job still atomic with its own audit record in that txn; a
duplicate id or Idempotency-Key in one group is decided by the first one's record; an
error in the txn fails every submission of the group (no 2xx before the store has it).
Through the real app in process (httpx's ASGI transport); the counts come from a spy on
the store, never from the clock."""

from __future__ import annotations

import asyncio

import httpx

from cellsched.api import ApiContext, RateLimiter, TokenTable, create_app
from cellsched.cellstate import codec
from cellsched.cellstate.audit import AuditLog, verify
from cellsched.cellstate.errors import StoreUnavailableError
from cellsched.cellstate.keys import CellKeys
from cellsched.cellstate.store.memory import MemoryStore
from tests.storespy import SpyStore

SECRET = "group-commit-secret-0001"
HEADERS = {"Authorization": f"Bearer {SECRET}"}


def _job(jid: str | None, cpu: str = "10m") -> dict:
    body: dict = {"groups": [{"name": "a", "resources": {"cpu": cpu}}, {"name": "b", "resources": {"memory": "16Mi"}}]}
    if jid is not None:
        body["id"] = jid
    return body


def _app(spy: SpyStore, keys: CellKeys):
    ctx = ApiContext(spy, keys, TokenTable.parse(f"submitter:sub:{SECRET}", "t"), RateLimiter(1e6, 10**6),
                     audit=AuditLog.open(spy, keys, 2))
    return create_app(ctx)


def _post_all(app, bodies: list[tuple[dict, dict]]) -> list[httpx.Response]:
    async def go():
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
            # gather starts every request before the loop runs the group's kick: one group.
            return await asyncio.gather(*(c.post("/v1/jobs", json=b, headers={**HEADERS, **h}) for b, h in bodies))
    return asyncio.run(go())


def _submission_txns(spy: SpyStore, keys: CellKeys) -> list[list]:
    return [ops for _, ops in spy.txns if any(op.key.startswith(keys.jobs_prefix) for op in ops)]


def test_concurrent_submissions_share_one_txn_each_with_its_own_audit_record():
    store, keys = MemoryStore(), CellKeys("g")
    spy = SpyStore(store)
    app = _app(spy, keys)
    answers = _post_all(app, [(_job(f"g-{i}"), {}) for i in range(20)] + [(_job(None), {})])
    assert [a.status_code for a in answers] == [201] * 21
    assert len(_submission_txns(spy, keys)) == 1  # 21 jobs of ~4 ops each fit one txn of 128
    recs = [codec.decode_obj(kv.key, kv.value) for kv in store.get_prefix(keys.audit_record_root)[0]]
    committed = [r for r in recs if r["outcome"] == "committed"]
    assert len(committed) == 21 and len({r["seq"] for r in committed}) == 21
    for i in range(20):
        rec = next(r for r in committed if r["what"] == f"POST /v1/jobs job g-{i}")
        assert keys.job(f"g-{i}") in rec["keys"] and rec["who"] == "sub (submitter)"
        # written by the very txn that created the job
        job_kv = store.get(keys.job(f"g-{i}"))
        rec_kv = next(kv for kv in store.get_prefix(keys.audit_record_root)[0]
                      if codec.decode_obj(kv.key, kv.value)["what"] == f"POST /v1/jobs job g-{i}")
        assert rec_kv.create_revision == job_kv.create_revision
    assert verify(store, keys).ok


def test_a_duplicate_id_or_key_in_one_group_is_decided_by_the_first():
    store, keys = MemoryStore(), CellKeys("g")
    spy = SpyStore(store)
    app = _app(spy, keys)
    answers = _post_all(app, [
        (_job("dup"), {}), (_job("dup"), {}),  # the second: the job exists
        (_job("k-1"), {"Idempotency-Key": "same"}), (_job("k-1"), {"Idempotency-Key": "same"}),  # a replay
        (_job(None), {"Idempotency-Key": "other"}), (_job(None, cpu="20m"), {"Idempotency-Key": "other"}),  # 409
    ])
    codes = [a.status_code for a in answers]
    assert codes == [201, 409, 201, 200, 201, 409], [a.text for a in answers]
    assert answers[1].json()["field"] == "body.id"
    assert answers[3].headers["Idempotent-Replayed"] == "true" and answers[3].json()["id"] == "k-1"
    assert answers[5].json()["field"] == "header.Idempotency-Key"
    assert len(store.get_prefix(keys.jobs_prefix)[0]) == 3
    recs = [codec.decode_obj(kv.key, kv.value) for kv in store.get_prefix(keys.audit_record_root)[0]]
    refused = [r for r in recs if r["outcome"].startswith("refused")]
    assert len(refused) == 2 and any("already exists" in r["outcome"] for r in refused)
    assert verify(store, keys).ok


def test_a_failed_txn_fails_every_submission_of_its_group():
    store, keys = MemoryStore(), CellKeys("g")
    down = {"on": False}

    def fail(ops):
        if down["on"] and any(op.key.startswith(keys.jobs_prefix) for op in ops):
            return StoreUnavailableError("store down")
        return None

    spy = SpyStore(store, fail=fail)
    app = _app(spy, keys)
    down["on"] = True
    answers = _post_all(app, [(_job(f"f-{i}"), {}) for i in range(5)])
    assert [a.status_code for a in answers] == [503] * 5
    assert store.get_prefix(keys.jobs_prefix)[0] == []
    down["on"] = False  # the chain read its head again after the unknown outcome, and goes on
    assert [a.status_code for a in _post_all(app, [(_job(f"f-{i}"), {}) for i in range(5)])] == [201] * 5
    assert verify(store, keys).ok
