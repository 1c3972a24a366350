"""The memory store's ordered keys, the packed txns of the Ray-hosted store, and
CellStore.txn_sequence (docs/architecture.md, "The REST API")."""

from __future__ import annotations

import bisect

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cellsched.cellstate.errors import InvalidInputError
from cellsched.cellstate.store import (
    AFTER_PREVIOUS,
    Delete,
    Get,
    KeyValue,
    MemoryStore,
    ModRevisionIs,
    Put,
    TxnResult,
    wire,
)
from cellsched.cellstate.store import sorted_keys as sk
from cellsched.cellstate.store.sorted_keys import SortedKeys


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.integers(0, 400)), max_size=600), st.integers(0, 400))
def test_sorted_keys_match_a_sorted_list(ops, start):
    keys, plain = SortedKeys(), []
    for add, n in ops:
        k = f"/k/{n:04d}"
        i = bisect.bisect_left(plain, k)
        present = i < len(plain) and plain[i] == k
        if add and not present:
            keys.add(k)
            plain.insert(i, k)
        elif not add and present:
            keys.discard(k)
            del plain[i]
    assert len(keys) == len(plain)
    s = f"/k/{start:04d}"
    assert keys.between(s, None) == plain[bisect.bisect_left(plain, s):]
    assert keys.between("", None) == plain


def test_sorted_keys_split_blocks_keep_order(monkeypatch):
    monkeypatch.setattr(sk, "LOAD", 4)  # many blocks from a few keys
    keys = SortedKeys()
    order = [(i * 37) % 101 for i in range(101)]
    for n in order:
        keys.add(f"{n:03d}")
        keys.between("", "0")  # a read after each add: every key sorted in on its own, buckets split
    assert len(keys._parts[""]._buckets) > 5
    assert keys.between("", None) == [f"{n:03d}" for n in range(101)]
    for n in range(0, 101, 2):
        keys.discard(f"{n:03d}")
    assert keys.between("050", None) == [f"{n:03d}" for n in range(51, 101, 2)]


def test_wire_round_trips_every_field():
    txns = [([ModRevisionIs("/a", 0), ModRevisionIs("/b", 7)],
             [Put("/a", b"x", 5), Delete("/c"), Get("/p/", True, 3, "/p/q")],
             [Get("/a"), Put("/z", b"")])]
    (compares, success, failure), = wire.unpack_txns(wire.pack_txns(txns))
    assert (compares, success, failure) == tuple(list(x) for x in txns[0])
    results = [TxnResult(True, 9, [[KeyValue("/a", b"v", 3, 2, 1, 4)], []]), TxnResult(False, 9, [])]
    assert wire.unpack_results(wire.pack_results(results)) == results


def test_txns_chain_on_the_revision_before_and_stop_at_the_first_failure(store):
    store.put("/t/taken", b"1")
    results = store.txn_sequence([
        ([ModRevisionIs("/t/a", 0)], [Put("/t/a", b"1"), Put("/t/head", b"h1")], []),
        ([ModRevisionIs("/t/head", AFTER_PREVIOUS)], [Put("/t/b", b"2"), Put("/t/head", b"h2")], []),
        ([ModRevisionIs("/t/taken", 0)], [Put("/t/c", b"3")], [Get("/t/taken")]),
        ([], [Put("/t/never", b"4")], []),
    ])
    assert [r.succeeded for r in results] == [True, True, False]
    assert results[1].revision == results[0].revision + 1
    assert [kv.value for kv in results[2].reads[0]] == [b"1"]
    assert store.get("/t/b").value == b"2" and store.get("/t/c") is None and store.get("/t/never") is None
    # the head moved since: a step chained on the one before fails when something wrote between
    stale = store.txn_sequence([([], [Put("/t/x", b"1")], []),
                        ([ModRevisionIs("/t/head", AFTER_PREVIOUS)], [Put("/t/y", b"2")], [])])
    assert [r.succeeded for r in stale] == [True, False]
    with pytest.raises(InvalidInputError):
        store.txn_sequence([([ModRevisionIs("/t/a", AFTER_PREVIOUS)], [], [])])


def test_wire_refuses_what_is_not_an_op():
    with pytest.raises(InvalidInputError):
        wire.pack_txns([([], ["not an op"], [])])


def _both_ways(steps, limits=None):
    """The steps through txn_sequence on one store and through the packed path on another:
    (results or the error raised, the store) for each."""
    from cellsched.cellstate.store import StoreLimits
    from cellsched.cellstate.store.memory import MemoryStore

    out = []
    for packed in (False, True):
        s = MemoryStore(limits or StoreLimits())
        s.put("/w/seed", b"s")
        try:
            got = (s.txn_sequence_packed(wire.unpack_packed(wire.pack_txns(steps))) if packed
                   else s.txn_sequence(steps))
        except Exception as exc:  # noqa: BLE001 - the two paths must raise alike
            got = (type(exc), str(exc))
        out.append((got, s))
    return out


_KEYS = st.sampled_from(["/w/a", "/w/b", "/w/seed", "/w/p/1", "/w/p/2"])
_OPS = st.one_of(st.builds(Put, _KEYS, st.binary(max_size=4)), st.builds(Delete, _KEYS),
                 st.builds(Get, st.sampled_from(["/w/a", "/w/p/", "/w/"]), st.booleans(), st.integers(0, 2)))
_STEP = st.tuples(st.lists(st.builds(ModRevisionIs, _KEYS, st.sampled_from([0, 2, 3, AFTER_PREVIOUS])), max_size=2),
                  st.lists(_OPS, max_size=4), st.lists(_OPS, max_size=3))


@settings(max_examples=150, deadline=None)
@given(st.lists(_STEP, min_size=1, max_size=4))
def test_the_packed_path_runs_txns_as_txn_sequence_does(steps):
    (a, sa), (b, sb) = _both_ways(steps)
    assert a == b
    assert sa._data == sb._data and sa._revision == sb._revision and sa._history == sb._history
    assert sa._sorted_keys.between("", None) == sb._sorted_keys.between("", None)


def test_the_packed_path_refuses_what_txn_refuses():
    from cellsched.cellstate.store import StoreLimits

    small = StoreLimits(max_txn_ops=3, max_request_bytes=100)
    bad = [
        [([], [Put(f"/w/{i}", b"") for i in range(4)], [])],  # too many ops
        [([], [Put("/w/a", b"1"), Put("/w/a", b"2")], [])],  # one key twice
        [([], [Put("", b"1")], [])],  # empty key
        [([], [Put("/w/a", "text")], [])],  # not bytes
        [([], [Get("/w/a", False, -1)], [])],  # negative limit
        [([], [Put("/w/a", b"x" * 200)], [])],  # over the request bytes
        [([], [Put("/w/a", b"1", 0x9999)], [])],  # a lease that does not exist
        [([ModRevisionIs("/w/a", AFTER_PREVIOUS)], [Put("/w/a", b"1")], [])],  # AFTER_PREVIOUS first
        [([], [Put("/w/ok", b"1")], []), ([], [Put("/w/a", b"1"), Put("/w/a", b"2")], [])],  # the second raises
    ]
    for steps in bad:
        (a, sa), (b, sb) = _both_ways(steps, small)
        assert isinstance(a, tuple) and a == b, (steps, a, b)
        assert sa._data == sb._data


def test_a_packed_txn_reaches_a_watch_at_once():
    """The packed path publishes its txn's events as txn does: a watch sees them on its next
    get, not only after some later txn."""
    s = MemoryStore()
    w = s.watch("/q/", 0)
    s.txn_sequence_packed(wire.unpack_packed(wire.pack_txns([([], [Put("/q/a", b"1"), Put("/q/b", b"2")], [])])))
    assert [ev.key for ev in w.get()] == ["/q/a", "/q/b"]
