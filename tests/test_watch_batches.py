"""Watch application in batches (schedulers/confirmed.py ``_apply_allocs``, the memory
store's one list per txn) equals applying every event one by one, and both equal a fresh
snapshot, over seeded random histories: allocation puts (several on one machine between
polls, values off the codec's fast path, records of unknown machines), machine records
changing state and labels, machines added and removed, our own commits confirmed before
the watch brings them, and assumed claims that the records then hold (Added) or not."""

from __future__ import annotations

import random

import numpy as np
import pytest

from cellsched.cellstate import codec
from cellsched.cellstate.model import AllocationRecord, Claim, Machine, MachineState
from cellsched.cellstate.store import Delete, EventType, Put
from cellsched.cellstate.store.memory import MemoryStore
from cellsched.cellstate.views import read_machine_views
from cellsched.schedulers.cache import SchedulerCache
from tests.cellfactory import make_cell

COLUMNS = ("capacity", "used", "spec_rev", "alloc_rev", "schedulable", "task_count", "_up")
STATES = (MachineState.UP, MachineState.UP, MachineState.DRAINING, MachineState.DOWN)


class _EventByEvent(SchedulerCache):
    """Every event applied on its own, in watch order (the record-by-record reference)."""

    def _apply_allocs(self, events):
        for ev in events:
            self._apply_event(ev)


def _record(rng: random.Random, n: int, assumed: list[Claim]) -> AllocationRecord:
    tasks = {f"j{rng.randrange(10**6)}/g/{k}": (100 * rng.randrange(1, 4), 512, 0) for k in range(n)}
    for c in assumed:  # the record holds these tasks: their assumptions are Added
        tasks[c.task_id] = c.request
    used = tuple(int(x) for x in np.sum([r for r in tasks.values()], axis=0)) if tasks else (0, 0, 0)
    return AllocationRecord(used, tasks)


def _alloc_value(rng: random.Random, rec: AllocationRecord) -> bytes:
    raw = codec.encode_alloc(rec)
    if rng.random() < 0.05:  # not as encode_alloc writes it: the record-by-record decoder
        raw = raw.replace(b'"n":%d,' % len(rec.tasks), b"")
    return raw


def _same(a: SchedulerCache, b: SchedulerCache) -> None:
    assert a.ids == b.ids and a.revision == b.revision
    n = a.size
    for name in COLUMNS:
        assert np.array_equal(getattr(a, name)[:n], getattr(b, name)[:n]), name
    assert [a.alloc(i) for i in range(n)] == [b.alloc(i) for i in range(n)]
    assert a.all_labels() == b.all_labels()
    assert a.assumed_count == b.assumed_count
    a.refresh()
    b.refresh()
    ca, cb = a.columns, b.columns
    assert np.array_equal(ca.host_used, cb.host_used)
    assert np.array_equal(ca.host_schedulable, cb.host_schedulable)
    assert np.array_equal(ca.host_capacity, cb.host_capacity)
    assert list(ca.labels) == list(cb.labels) == a.all_labels()


def _same_as_a_snapshot(followed: SchedulerCache, store, keys) -> None:
    """What the watch built equals a fresh snapshot, row for row, for every machine the store
    still has (a removed machine stays in a followed copy as an unschedulable row)."""
    fresh = SchedulerCache(store, keys, max_tasks=followed.max_tasks)
    followed.refresh()
    for mid, j in fresh.index.items():
        i = followed.index[mid]
        for name in ("capacity", "used", "spec_rev", "alloc_rev", "schedulable", "task_count", "_up"):
            assert np.array_equal(getattr(followed, name)[i], getattr(fresh, name)[j]), (mid, name)
        assert followed.alloc(i) == fresh.alloc(j) and followed.row_labels(i) == fresh.row_labels(j)
        assert followed.columns.labels[i] == fresh.columns.labels[j]
        assert followed.columns.host_schedulable[i] == fresh.columns.host_schedulable[j]
    for mid, i in followed.index.items():
        if mid not in fresh.index:
            assert not followed.schedulable[i] and not followed.columns.host_schedulable[i]


@pytest.mark.parametrize("seed", range(6))
def test_batched_watch_application_equals_one_by_one_and_a_fresh_snapshot(seed):
    rng = random.Random(seed)
    store = MemoryStore()
    keys = make_cell(store, 10)
    bulk, one = SchedulerCache(store, keys, max_tasks=6), _EventByEvent(store, keys, max_tasks=6)
    machines = {f"m{i}": Machine(f"m{i}", (4000, 16384, 0)) for i in range(10)}
    assumed: dict[str, list[Claim]] = {}  # machine -> claims assumed there, not yet written
    removed: list[str] = []  # a late record of a removed machine must not make its row schedulable
    serial = 0
    for _ in range(120):
        r = rng.random()
        live = sorted(machines)
        if r < 0.55:  # a commit-like txn: allocation records of a few machines
            ops = []
            for mid in rng.sample(live + ["ghost"] + removed[-2:], rng.randint(1, 4)):
                held = assumed.pop(mid, []) if rng.random() < 0.5 else []
                ops.append(Put(keys.alloc(mid), _alloc_value(rng, _record(rng, rng.randrange(7), held))))
            out = store.txn([], ops)
            if rng.random() < 0.3:  # our own commit: its fresh views are confirmed before the watch
                mids = [keys.last_segment(op.key) for op in ops if keys.last_segment(op.key) in machines]
                fresh = read_machine_views(store, keys, mids)
                assert all(v.alloc_revision == out.revision for v in fresh.values())
                bulk.confirm(fresh)
                one.confirm(fresh)
        elif r < 0.7:  # a machine record changes: state and labels
            mid = rng.choice(live)
            m = machines[mid] = Machine(mid, (rng.choice((4000, 8000)), 16384, 0),
                                        {"zone": rng.choice("ab")} if rng.random() < 0.5 else {},
                                        rng.choice(STATES))
            store.txn([], [Put(keys.spec(mid), codec.encode_machine(m))])
        elif r < 0.76:  # a new machine
            serial += 1
            mid = f"new{serial}"
            machines[mid] = Machine(mid, (2000, 8192, 0))
            store.txn([], [Put(keys.spec(mid), codec.encode_machine(machines[mid])),
                           Put(keys.alloc(mid), codec.encode_alloc(AllocationRecord()))])
        elif r < 0.8 and len(live) > 3:  # a machine removed
            mid = rng.choice(live)
            del machines[mid]
            assumed.pop(mid, None)
            removed.append(mid)
            store.txn([], [Delete(keys.spec(mid)), Delete(keys.alloc(mid))])
        elif r < 0.9:  # a decision assumes claims
            mid = rng.choice([m for m in live if m in bulk.index and m in one.index] or live)
            if mid in bulk.index:
                serial += 1
                claims = [Claim(f"a{serial}/g/{k}", mid, (100, 256, 0)) for k in range(rng.randint(1, 2))]
                bulk.assume(claims)
                one.assume(claims)
                assumed.setdefault(mid, []).extend(claims)
        else:
            bulk.poll()
            one.poll()
            _same(bulk, one)
    bulk.poll()
    one.poll()
    _same(bulk, one)
    assert bulk.revision == store.current_revision()
    _same_as_a_snapshot(bulk, store, keys)


def test_a_poll_keeps_the_newest_of_several_records_of_one_machine():
    """Would fail if a run's dedupe kept the first record of a key, or skipped the run's last."""
    store = MemoryStore()
    keys = make_cell(store, 3)
    copy = SchedulerCache(store, keys)
    for n in (1, 3, 2):
        store.txn([], [Put(keys.alloc("m1"), codec.encode_alloc(_record(random.Random(n), n, [])))])
    last = _record(random.Random(2), 2, [])
    assert copy.poll() == 3
    i = copy.index["m1"]
    assert copy.alloc(i) == last and copy.task_count[i] == 2 and tuple(copy.used[i]) == last.used
    assert copy.alloc_rev[i] == store.current_revision() == copy.revision


def test_the_memory_store_hands_a_watch_one_list_per_txn_filtered_by_prefix_and_revision():
    store = MemoryStore()
    early = store.watch("/a/", 0)
    later = store.watch("/a/", store.current_revision() + 2)  # nothing before that revision
    other = store.watch("/b/", 0)
    store.txn([], [Put("/a/1", b"x"), Put("/b/1", b"y"), Put("/a/2", b"z")])
    store.txn([], [Put("/a/1", b"w"), Delete("/a/2"), Delete("/a/absent")])
    got = early.get()
    assert [(e.type, e.key, e.value) for e in got] == [
        (EventType.PUT, "/a/1", b"x"), (EventType.PUT, "/a/2", b"z"),
        (EventType.PUT, "/a/1", b"w"), (EventType.DELETE, "/a/2", b"")]
    assert [e.mod_revision for e in got] == [2, 2, 3, 3]
    assert [e.key for e in later.get()] == ["/a/1", "/a/2"]
    assert [e.key for e in other.get()] == ["/b/1"]
    got.clear()  # what a reader does with its list never reaches the other watches
    store.txn([], [Put("/a/3", b"v")])
    assert [e.key for e in early.get()] == ["/a/3"] and [e.key for e in later.get()] == ["/a/3"]
