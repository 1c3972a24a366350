"""The CellStore contract, run unchanged against the memory store and a real etcd."""

from __future__ import annotations

import time

import pytest

from cellsched.cellstate.errors import CompactedError, LeaseNotFoundError, TxnLimitError
from cellsched.cellstate.store import Delete, EventType, Get, ModRevisionIs, Put


def test_store_put_get_revisions(store):
    r1 = store.put("/t/a", b"1")
    r2 = store.put("/t/a", b"2")
    assert r2 == r1 + 1
    kv = store.get("/t/a")
    assert (kv.value, kv.mod_revision, kv.create_revision, kv.version) == (b"2", r2, r1, 2)
    assert store.get("/t/missing") is None


def test_store_compare_and_put_success(store):
    rev = store.put("/t/k", b"old")
    result = store.txn([ModRevisionIs("/t/k", rev)], [Put("/t/k", b"new")], [Get("/t/k")])
    assert result.succeeded and result.revision == rev + 1
    assert store.get("/t/k").value == b"new"


def test_store_compare_absent_key_uses_zero(store):
    assert store.txn([ModRevisionIs("/t/new", 0)], [Put("/t/new", b"x")]).succeeded
    assert not store.txn([ModRevisionIs("/t/new", 0)], [Put("/t/new", b"y")]).succeeded
    assert store.get("/t/new").value == b"x"


def test_store_failure_branch_reads_current_values(store):
    rev = store.put("/t/k", b"v1")
    store.put("/t/k", b"v2")
    store.put("/t/other", b"o")
    result = store.txn([ModRevisionIs("/t/k", rev)], [Put("/t/k", b"lost")],
                       [Get("/t/k"), Get("/t/", prefix=True)])
    assert not result.succeeded
    assert [kv.value for kv in result.reads[0]] == [b"v2"]
    assert [kv.key for kv in result.reads[1]] == ["/t/k", "/t/other"]
    assert store.get("/t/k").value == b"v2"  # nothing from the success branch was applied


def test_store_multi_key_txn_is_atomic_and_one_revision(store):
    base = store.current_revision()
    result = store.txn([], [Put("/t/a", b"1"), Put("/t/b", b"2"), Delete("/t/none")])
    assert result.revision == base + 1
    assert store.get("/t/a").mod_revision == store.get("/t/b").mod_revision == base + 1


def test_store_watch_from_revision_delivers_every_change_in_order(store):
    start = store.put("/w/a", b"0")
    store.put("/x/ignored", b"-")
    for i in range(1, 30):
        store.put(f"/w/k{i % 4}", str(i).encode())
    store.delete("/w/k1")
    watch = store.watch("/w/", start)
    events = []
    deadline = time.monotonic() + 5
    while len(events) < 31 and time.monotonic() < deadline:
        events += watch.get(timeout=0.5)
    watch.close()
    assert len(events) == 31
    assert [e.value for e in events[:30]] == [str(i).encode() for i in range(30)]
    revs = [e.mod_revision for e in events]
    assert revs == sorted(revs) and len(set(revs)) == len(revs)
    assert events[-1].type is EventType.DELETE and events[-1].key == "/w/k1"


def test_store_watch_sees_live_writes(store):
    watch = store.watch("/live/", store.current_revision() + 1)
    store.put("/live/a", b"1")
    events = []
    deadline = time.monotonic() + 5
    while not events and time.monotonic() < deadline:
        events = watch.get(timeout=0.5)
    watch.close()
    assert [(e.key, e.value) for e in events] == [("/live/a", b"1")]


def test_store_lease_expiry_deletes_bound_keys(store):
    lease = store.grant_lease(1)
    store.put("/lease/k", b"v", lease)
    store.put("/lease/plain", b"v")
    deadline = time.monotonic() + 8
    while store.get("/lease/k") is not None and time.monotonic() < deadline:
        time.sleep(0.2)
    assert store.get("/lease/k") is None
    assert store.get("/lease/plain") is not None
    with pytest.raises(LeaseNotFoundError):
        store.refresh_lease(lease)


def test_store_lease_refresh_keeps_keys(store):
    lease = store.grant_lease(2)
    store.put("/lease/kept", b"v", lease)
    for _ in range(6):
        time.sleep(0.5)
        store.refresh_lease(lease)
    assert store.get("/lease/kept") is not None
    store.revoke_lease(lease)
    assert store.get("/lease/kept") is None


def test_store_compaction_makes_old_watch_fail(store):
    first = store.put("/c/a", b"1")
    store.put("/c/a", b"2")
    now = store.put("/c/a", b"3")
    store.compact(now)
    with pytest.raises(CompactedError):
        w = store.watch("/c/", first)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            w.get(timeout=0.5)
    # A watch from the compaction revision on still works.
    w = store.watch("/c/", now)
    events = []
    deadline = time.monotonic() + 5
    while not events and time.monotonic() < deadline:
        events = w.get(timeout=0.5)
    w.close()
    assert [e.value for e in events] == [b"3"]


def test_store_txn_limit_on_ops_refused_whole(store):
    limit = store.limits.max_txn_ops
    before = store.current_revision()
    with pytest.raises(TxnLimitError):
        store.txn([], [Put(f"/lim/{i}", b"x") for i in range(limit + 1)])
    assert store.current_revision() == before
    assert store.get("/lim/0") is None
    assert store.txn([], [Put(f"/lim/{i}", b"x") for i in range(limit)]).succeeded


def test_store_txn_limit_on_duplicate_key_and_size(store):
    with pytest.raises(TxnLimitError):
        store.txn([], [Put("/dup", b"1"), Put("/dup", b"2")])
    big = b"x" * (store.limits.max_request_bytes + 1)
    with pytest.raises(TxnLimitError):
        store.txn([], [Put("/big", big)])
    assert store.get("/dup") is None and store.get("/big") is None


def test_store_prefix_read_pages_in_key_order(store):
    for i in range(7):
        store.put(f"/pg/k{i}", str(i).encode())
    store.put("/pgx/outside", b"x")
    first = store.get_page("/pg/", 3)
    assert [kv.key for kv in first] == ["/pg/k0", "/pg/k1", "/pg/k2"]
    rest = store.get_page("/pg/", 10, after=first[-1].key)
    assert [kv.key for kv in rest] == [f"/pg/k{i}" for i in range(3, 7)]
    assert store.get_page("/pg/", 10, after="/pg/k6") == []
