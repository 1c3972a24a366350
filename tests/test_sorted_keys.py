"""The memory store's sorted keys agree with a plain sorted list, across bucket splits."""

from __future__ import annotations

from bisect import bisect_left

from hypothesis import given, settings
from hypothesis import strategies as st

from cellsched.cellstate.store import sorted_keys
from cellsched.cellstate.store.sorted_keys import SortedKeys

keys = st.text(alphabet="ab/c", min_size=0, max_size=5)


@settings(deadline=None, max_examples=200)
@given(load=st.sampled_from([1, 2, 512]), ops=st.lists(st.tuples(st.booleans(), keys), max_size=300),
       reads=st.lists(st.tuples(keys, keys | st.none(), st.integers(0, 5)), max_size=10))
def test_sorted_keys_hold_what_a_sorted_list_holds(load, ops, reads):
    saved, sorted_keys.LOAD = sorted_keys.LOAD, load  # small buckets: many splits and emptied buckets
    try:
        held, plain = SortedKeys(), []
        for add, key in ops:
            i = bisect_left(plain, key)
            present = i < len(plain) and plain[i] == key
            if add and not present:
                held.add(key)
                plain.insert(i, key)
            elif not add:
                held.discard(key)  # absent keys too
                if present:
                    del plain[i]
        assert len(held) == len(plain) and held.between("", None) == plain
        for lo, hi, limit in reads:
            want = [k for k in plain if k >= lo and (hi is None or k < hi)]
            assert held.between(lo, hi, limit) == (want[:limit] if limit else want)
    finally:
        sorted_keys.LOAD = saved


@settings(deadline=None, max_examples=300)
@given(load=st.sampled_from([1, 2, 512]),
       steps=st.lists(st.one_of(st.tuples(st.just("add"), keys), st.tuples(st.just("discard"), keys),
                                st.tuples(st.just("read"), st.tuples(keys, keys | st.none(), st.integers(0, 5)))),
                      max_size=300))
def test_lazily_sorted_partitions_answer_reads_between_changes(load, steps):
    # Reads between adds and discards: a partition's pending keys are sorted in (one by one, or
    # by sorting it all again) only when a read reaches it; keys of every partition and the
    # catch-all ("/a/b/" against "ab", "/a" and "") interleave in one answer.
    saved, sorted_keys.LOAD = sorted_keys.LOAD, load
    try:
        held, plain = SortedKeys(), []
        for kind, arg in steps:
            if kind == "read":
                lo, hi, limit = arg
                want = [k for k in plain if k >= lo and (hi is None or k < hi)]
                assert held.between(lo, hi, limit) == (want[:limit] if limit else want)
                continue
            i = bisect_left(plain, arg)
            present = i < len(plain) and plain[i] == arg
            if kind == "add" and not present:
                held.add(arg)
                plain.insert(i, arg)
            elif kind == "discard":
                held.discard(arg)
                if present:
                    del plain[i]
            assert len(held) == len(plain)
        assert held.between("", None) == plain
    finally:
        sorted_keys.LOAD = saved


def test_a_key_partition_is_its_kind():
    assert sorted_keys.partition_of("/cell/jobs/j1") == "/cell/jobs/"
    assert sorted_keys.partition_of("/cell/node/alloc/m1") == "/cell/node/"
    assert sorted_keys.partition_of("/cell/schema") == ""
    assert sorted_keys.partition_of("a/b/c/d") == "a/b/c/"
    assert sorted_keys.partition_of("") == ""
