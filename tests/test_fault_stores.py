"""The deterministic store wrappers of cellstate.faults: scripted faults by count, counting."""

from __future__ import annotations

import pytest

from cellsched.cellstate.errors import CommitOutcomeUnknown, InvalidInputError, StoreUnavailableError
from cellsched.cellstate.faults import (
    CountingStore,
    DelegatingStore,
    FaultInjectingStore,
    FaultPlan,
    ScriptedFaultStore,
)
from cellsched.cellstate.store import Delete, Get, ModRevisionIs, Put
from cellsched.cellstate.store.memory import MemoryStore


def test_scripted_faults_hit_the_nth_txn_writing_under_the_prefix_only():
    inner = MemoryStore()
    st = ScriptedFaultStore(inner, "/jobs/", unavailable_at={2}, lost_ack_at={3})
    st.put("/other/a", b"x")  # writes nothing under the prefix: not counted
    st.put("/jobs/1", b"1")  # 1st
    with pytest.raises(StoreUnavailableError) as err:
        st.txn([ModRevisionIs("/jobs/2", 0)], [Put("/jobs/2", b"2")])  # 2nd: refused before it is sent
    assert not isinstance(err.value, CommitOutcomeUnknown)
    assert inner.get("/jobs/2") is None
    assert st.get("/jobs/1").value == b"1"  # reads pass and are not counted
    with pytest.raises(CommitOutcomeUnknown):
        st.txn([], [Delete("/jobs/1"), Get("/jobs/1")])  # 3rd: applied, then the ack is lost
    assert inner.get("/jobs/1") is None
    st.put("/jobs/4", b"4")  # 4th: past the script, passes
    assert (st.matched, st.injected) == (4, [(2, "unavailable"), (3, "lost_ack")])


def test_scripted_faults_refuse_a_bad_script():
    with pytest.raises(InvalidInputError):
        ScriptedFaultStore(MemoryStore(), unavailable_at={1}, lost_ack_at={1})
    with pytest.raises(InvalidInputError):
        ScriptedFaultStore(MemoryStore(), lost_ack_at={0})


def test_counting_store_counts_the_executed_branch_per_prefix():
    st = CountingStore(MemoryStore(), ["/a/"])
    st.put("/a/1", b"x")
    st.put("/b/1", b"y")
    failed = st.txn([ModRevisionIs("/a/1", 0)], [Put("/a/1", b"z")], [Get("/a/", prefix=True), Get("/b/1")])
    assert not failed.succeeded
    assert st.txns == 3 and st.write_txns == 2  # the failed txn ran its reads only
    assert st.writes == {"": 2, "/a/": 1}
    assert st.gets == {"": 2, "/a/": 1} and st.keys_read == {"": 2, "/a/": 1}
    st.reset()
    assert (st.txns, st.write_txns, sum(st.keys_read.values())) == (0, 0, 0)


def test_wrappers_delegate_the_rest_of_the_contract():
    inner = MemoryStore()
    st = DelegatingStore(inner)
    lease = st.grant_lease(10)
    st.put("/k", b"v", lease)
    st.refresh_lease(lease)
    st.revoke_lease(lease)
    assert inner.get("/k") is None and st.limits == inner.limits


def test_a_lost_ack_is_counted_only_when_the_txn_was_applied():
    down = ScriptedFaultStore(MemoryStore(), unavailable_at={1})  # the store really is unreachable
    st = FaultInjectingStore(down, FaultPlan(p_lost_ack=1.0))
    with pytest.raises(StoreUnavailableError) as err:
        st.txn([ModRevisionIs("/k", 0)], [Put("/k", b"v")])
    assert not isinstance(err.value, CommitOutcomeUnknown)
    assert st.faults["lost_ack"] == 0 and st.write_txns == 1
