"""The CellStore contract, run unchanged against the memory store and a real etcd."""

from __future__ import annotations

import time

import pytest

from cellsched.cellstate.errors import (
    CompactedError,
    FutureRevisionError,
    InvalidInputError,
    LeaseNotFoundError,
    TxnLimitError,
)
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


# -- defects found by an outside check: each ran differently on the two backends ------


def _wait_gone(store, key: str, within_s: float = 8.0) -> None:
    """Poll until `key` is gone: a lease's keys go once the store has expired it."""
    deadline = time.monotonic() + within_s
    while store.get(key) is not None and time.monotonic() < deadline:
        time.sleep(0.1)
    assert store.get(key) is None


def _drain(watch, want: int, within_s: float = 5.0) -> tuple[list, Exception | None]:
    """Events until `want` arrived, the watch failed, or time ran out."""
    events: list = []
    deadline = time.monotonic() + within_s
    while len(events) < want and time.monotonic() < deadline:
        try:
            events += watch.get(timeout=0.2)
        except CompactedError as exc:
            return events, exc
    return events, None


def test_store_put_bound_to_dead_lease_is_refused_whole(store):
    revoked = store.grant_lease(30)
    store.revoke_lease(revoked)
    before = store.current_revision()
    for lease in (revoked, 0x7EADBEEF):  # revoked, and never granted
        with pytest.raises(LeaseNotFoundError):
            store.txn([], [Put("/dl/plain", b"1"), Put("/dl/bound", b"1", lease)])
    assert store.current_revision() == before
    assert store.get("/dl/plain") is None and store.get("/dl/bound") is None
    # Only the branch that runs is checked: a dead lease in the other branch is harmless.
    result = store.txn([], [Put("/dl/plain", b"2")], [Put("/dl/bound", b"2", revoked)])
    assert result.succeeded and result.revision == before + 1


def test_store_txn_that_changes_nothing_keeps_the_revision(store):
    store.put("/nc/k", b"v")
    before = store.current_revision()
    assert store.txn([], [Delete("/nc/absent")]).revision == before
    assert store.txn([], [Delete("/nc/absent"), Delete("/nc/other"), Get("/nc/k")]).revision == before
    assert store.txn([ModRevisionIs("/nc/k", 0)], [Put("/nc/k", b"x")], [Delete("/nc/absent")]).revision == before
    assert store.current_revision() == before
    # A txn that deletes one present key bumps it once, however many absent ones it names.
    assert store.txn([], [Delete("/nc/absent"), Delete("/nc/k")]).revision == before + 1


def test_store_compacting_the_future_is_a_typed_error(store):
    now = store.put("/cf/a", b"1")
    with pytest.raises(FutureRevisionError):
        store.compact(now + 5)
    store.compact(now)  # nothing was compacted by the refused call
    with pytest.raises(CompactedError):
        store.compact(now)
    for bad in (0, -3):
        with pytest.raises(InvalidInputError):
            store.compact(bad)


def test_store_compaction_fails_a_watch_still_catching_up(store):
    """etcd reads an old watch's backlog asynchronously (at most 1,000 revisions a round,
    one round per 100 ms): history compacted before it has been read fails the watch.
    What it delivered is a gapless prefix; after the error the watch stays failed."""
    start = store.current_revision() + 1
    backlog = 2_500
    for i in range(backlog):
        store.put(f"/wc/{i % 20}", str(i).encode())
    watch = store.watch("/wc/", start)
    store.compact(store.current_revision())
    events, err = _drain(watch, backlog)
    assert isinstance(err, CompactedError)
    assert [e.mod_revision for e in events] == list(range(start, start + len(events)))
    assert len(events) < backlog
    with pytest.raises(CompactedError):
        watch.get(timeout=0.2)
    watch.close()


def test_store_compaction_spares_a_caught_up_watch(store):
    watch = store.watch("/wl/", store.current_revision() + 1)
    store.put("/wl/a", b"0")
    events, err = _drain(watch, 1)
    assert err is None and len(events) == 1
    for i in range(1, 6):  # delivered to the watch, not yet read by its consumer
        store.put("/wl/a", str(i).encode())
    time.sleep(0.3)
    store.compact(store.current_revision())
    store.put("/wl/a", b"6")
    more, err = _drain(watch, 6)
    watch.close()
    assert err is None
    assert [e.value for e in more] == [str(i).encode() for i in range(1, 7)]


def test_store_watch_start_revision_zero_future_and_negative(store):
    store.put("/ws/old", b"o")
    now_watch = store.watch("/ws/", 0)  # 0 means "from now on", as in etcd
    rev = store.current_revision()
    future = store.watch("/ws/", rev + 3)
    for i in range(4):
        store.put(f"/ws/k{i}", str(i).encode())
    events, _ = _drain(now_watch, 4)
    assert [e.mod_revision for e in events] == [rev + 1, rev + 2, rev + 3, rev + 4]
    events, _ = _drain(future, 2)
    time.sleep(0.2)
    events += future.get(timeout=0.2)
    assert [e.mod_revision for e in events] == [rev + 3, rev + 4]
    now_watch.close()
    future.close()
    with pytest.raises(InvalidInputError):
        store.watch("/ws/", -1)


def test_store_lease_revoke_and_refresh_of_dead_leases(store):
    with pytest.raises(LeaseNotFoundError):
        store.revoke_lease(0x7EADBEEF)
    with pytest.raises(LeaseNotFoundError):
        store.refresh_lease(0x7EADBEEF)
    lease = store.grant_lease(30)
    store.revoke_lease(lease)
    with pytest.raises(LeaseNotFoundError):
        store.revoke_lease(lease)
    with pytest.raises(LeaseNotFoundError):
        store.refresh_lease(lease)
    expired = store.grant_lease(1)
    store.put("/ld/k", b"v", expired)
    _wait_gone(store, "/ld/k")
    with pytest.raises(LeaseNotFoundError):
        store.revoke_lease(expired)
    with pytest.raises(LeaseNotFoundError):
        store.put("/ld/k", b"v", expired)


def test_store_lease_ttl_must_be_whole_seconds_in_range(store):
    for bad in (0, -1, 1.5, True, 10**10):
        with pytest.raises(InvalidInputError):
            store.grant_lease(bad)


def test_store_get_limit_and_start_edge_cases(store):
    for i in range(4):
        store.put(f"/gl/k{i}", b"x")
    store.put("/glz", b"outside")
    keys = lambda op: [kv.key for kv in store.txn([], [op]).reads[0]]  # noqa: E731
    assert keys(Get("/gl/k1", limit=3)) == ["/gl/k1"]  # a single-key read ignores limit
    assert keys(Get("/gl/", prefix=True, limit=10)) == [f"/gl/k{i}" for i in range(4)]
    assert keys(Get("/gl/", prefix=True, start="/a")) == [f"/gl/k{i}" for i in range(4)]  # before the prefix
    assert keys(Get("/gl/", prefix=True, start="/gl/k9")) == []
    assert keys(Get("/gl/", prefix=True, start="/zz")) == []  # past the prefix
    with pytest.raises(InvalidInputError):
        store.txn([], [Get("/gl/", prefix=True, limit=-1)])


def test_store_refuses_malformed_ops_whole(store):
    before = store.current_revision()
    for ops in ([Put("", b"x")], [Get("")], [Delete("")], [Put("/mo/ok", b"1"), Put("/mo/s", "not bytes")]):
        with pytest.raises(InvalidInputError):
            store.txn([], ops)
    assert store.current_revision() == before and store.get("/mo/ok") is None


def test_store_txn_reads_see_its_own_earlier_writes(store):
    store.put("/ow/a", b"old")
    result = store.txn([], [Get("/ow/a"), Put("/ow/a", b"new"), Delete("/ow/b"), Put("/ow/c", b"c"),
                            Get("/ow/", prefix=True)])
    assert [kv.value for kv in result.reads[0]] == [b"old"]
    assert [(kv.key, kv.value) for kv in result.reads[1]] == [("/ow/a", b"new"), ("/ow/c", b"c")]
