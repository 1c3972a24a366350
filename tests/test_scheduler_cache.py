"""The scheduler cache: watch-fed, survives compaction and reconnects; assume, confirm, forget."""

from __future__ import annotations

import ast
import time
from pathlib import Path

import numpy as np
import pytest

from cellsched.cellstate.clock import SimClock
from cellsched.cellstate.commit import CommitEngine, Plan
from cellsched.cellstate.errors import UnknownMachineError
from cellsched.cellstate.lifecycle import release_tasks
from cellsched.cellstate.machines import add_machines, set_machine_state
from cellsched.cellstate.model import Claim, Machine, MachineState, task_id
from cellsched.cellstate.store.etcd import EtcdStore
from cellsched.cellstate.store.memory import MemoryStore
from cellsched.schedulers.cache import SchedulerCache
from cellsched.schedulers.core import Scheduler
from cellsched.schedulers.settings import BATCH
from tests.cellfactory import make_cell, make_job, submit, views


def drain(copy, until, timeout=5.0):
    deadline = time.monotonic() + timeout
    while not until() and time.monotonic() < deadline:
        copy.poll(timeout=0.2)
    return until()


def place(store, keys, jid, machine, n=1):
    job = make_job(jid, n)
    jobs = submit(store, keys, job)
    claims = [Claim(task_id(jid, 0, i), machine, job.groups[0].request) for i in range(n)]
    return CommitEngine(store, keys).commit(Plan(claims, views(store, keys, 4), jobs))


def test_cache_follows_commits_and_new_machines(store):
    keys = make_cell(store, 4)
    copy = SchedulerCache(store, keys)
    assert copy.size == 4 and int(copy.used[:4].sum()) == 0
    place(store, keys, "a", "m1", 2)
    add_machines(store, keys, [Machine("m9", (8000, 1024, 1))])
    set_machine_state(store, keys, "m2", MachineState.DRAINING)
    assert drain(copy, lambda: copy.size == 5 and not copy.schedulable[copy.index["m2"]])
    assert tuple(copy.used[copy.index["m1"]]) == (2000, 2048, 0)
    assert tuple(copy.capacity[copy.index["m9"]]) == (8000, 1024, 1)
    assert copy.revision == store.current_revision()
    assert copy.lag() == 0


def test_cache_applies_each_change_once(store):
    keys = make_cell(store, 4)
    copy = SchedulerCache(store, keys)
    out = place(store, keys, "a", "m0", 1)
    copy.confirm(out.machines)  # our own commit, folded in before the watch delivers it
    drain(copy, lambda: copy.revision >= out.revision)
    copy.poll(timeout=0.3)
    assert tuple(copy.used[copy.index["m0"]]) == (1000, 1024, 0)


def test_cache_resyncs_after_compaction(store):
    keys = make_cell(store, 4)
    copy = SchedulerCache(store, keys)
    copy.close()  # stop following: the copy falls behind while history is compacted
    copy._watch = None
    place(store, keys, "a", "m3", 3)
    store.compact(store.current_revision())
    assert drain(copy, lambda: copy.resyncs == 1)
    assert tuple(copy.used[copy.index["m3"]]) == (3000, 3072, 0)


def test_cache_reconnects_after_member_restart(etcd_member):
    store = EtcdStore(etcd_member.endpoints, failover_retry_s=0.1)
    keys = make_cell(store, 4)
    copy = SchedulerCache(store, keys)
    member = etcd_member.members[0]
    etcd_member.kill(member)
    drain(copy, lambda: copy.reconnects >= 1, timeout=5)
    etcd_member.start_member(member)
    etcd_member.wait_healthy()
    writer = EtcdStore(etcd_member.endpoints)
    deadline = time.monotonic() + 10
    while True:
        try:
            place(writer, keys, "after", "m2", 1)
            break
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
    assert drain(copy, lambda: int(copy.used[copy.index["m2"], 0]) == 1000, timeout=10)
    assert copy.reconnects >= 1
    writer.close()
    store.close()


# -- assume, confirm, forget -----------------------------------------------------------------


def claim(jid, i, machine, cpu=1000, mem=1024):
    return Claim(task_id(jid, 0, i), machine, (cpu, mem, 0))


def columns_used(cache, mid):
    return tuple(int(v) for v in cache.columns.host_used[cache.index[mid]])


def confirmed_used(cache, mid):
    return tuple(int(v) for v in cache.used[cache.index[mid]])


def test_assume_holds_requests_in_the_columns_and_forget_gives_them_back(store):
    keys = make_cell(store, 2)
    cache = SchedulerCache(store, keys)
    a, b = claim("a", 0, "m0"), claim("a", 1, "m0", cpu=500)
    cache.assume([a, b])
    assert columns_used(cache, "m0") == (1500, 2048, 0)
    assert confirmed_used(cache, "m0") == (0, 0, 0)  # the store said nothing yet
    free = cache.columns.free[cache.index["m0"]]  # the device arrays follow the host ones
    assert [int(v) for v in free] == [2500, 16384 - 2048, 0]
    cache.forget([a])
    assert columns_used(cache, "m0") == (500, 1024, 0) and cache.is_assumed(b.task_id)
    cache.forget([a, claim("a", 1, "m1")])  # no longer assumed / assumed on another machine: no-op
    assert columns_used(cache, "m0") == (500, 1024, 0) and cache.assumed_count == 1
    cache.forget([b])
    assert columns_used(cache, "m0") == (0, 0, 0) and cache.assumed_count == 0


def test_assuming_a_task_again_replaces_its_earlier_assumption(store):
    keys = make_cell(store, 2)
    cache = SchedulerCache(store, keys)
    cache.assume([claim("a", 0, "m0")])
    cache.assume([claim("a", 0, "m1")])
    assert columns_used(cache, "m0") == (0, 0, 0) and columns_used(cache, "m1") == (1000, 1024, 0)
    assert cache.assumed_count == 1


def test_assume_on_an_unknown_machine_is_refused(store):
    keys = make_cell(store, 1)
    cache = SchedulerCache(store, keys)
    with pytest.raises(UnknownMachineError):
        cache.assume([claim("a", 0, "nowhere")])
    assert cache.assumed_count == 0


def test_confirm_adds_what_committed_and_keeps_the_rest_assumed_until_forgotten(store):
    keys = make_cell(store, 4)
    cache = SchedulerCache(store, keys)
    jobs = submit(store, keys, make_job("a", 2))
    landed, lost = claim("a", 0, "m1"), claim("a", 1, "m2")
    cache.assume([landed, lost])
    # Only the first claim goes to the store (the second "conflicted" elsewhere).
    out = CommitEngine(store, keys).commit(Plan([landed], cache.views(["m1", "m2"]), jobs))
    assert out.committed == [landed]
    cache.confirm(out.machines)
    assert not cache.is_assumed(landed.task_id)  # Added: part of the confirmed record now
    assert confirmed_used(cache, "m1") == columns_used(cache, "m1") == (1000, 1024, 0)
    assert cache.is_assumed(lost.task_id) and columns_used(cache, "m2") == (1000, 1024, 0)
    cache.forget([landed, lost])  # complete() forgets whatever is left: the Added claim is untouched
    assert columns_used(cache, "m1") == (1000, 1024, 0) and columns_used(cache, "m2") == (0, 0, 0)
    cache.poll(timeout=0.3)  # the watch then delivers the same commit: applied once
    cache.refresh()
    assert columns_used(cache, "m1") == (1000, 1024, 0) and cache.assumed_count == 0


def test_the_watch_confirms_an_assumed_claim_too(store):
    keys = make_cell(store, 2)
    cache = SchedulerCache(store, keys)
    jobs = submit(store, keys, make_job("a", 1))
    c = claim("a", 0, "m0")
    cache.assume([c])
    CommitEngine(store, keys).commit(Plan([c], cache.views(["m0"]), jobs))
    assert drain(cache, lambda: not cache.is_assumed(c.task_id))
    cache.refresh()
    assert columns_used(cache, "m0") == (1000, 1024, 0)  # counted once, not assumed + confirmed


def test_the_watch_tells_held_tasks_without_decoding_records_and_confirm_keeps_them_decoded(store, monkeypatch):
    # Loops sharing a copy see each other's commits on machines where they hold claims; the
    # watch must tell whether a record holds an assumed task without parsing the record.
    from cellsched.cellstate import codec

    keys = make_cell(store, 2)
    cache = SchedulerCache(store, keys)
    jobs = submit(store, keys, make_job("a", 1))
    c = claim("a", 0, "m0")
    cache.assume([c])
    decoded = []
    real_decode = codec.decode_alloc
    monkeypatch.setattr(codec, "decode_alloc", lambda key, raw: decoded.append(key) or real_decode(key, raw))
    other = place(store, keys, "a1", "m0")  # another scheduler's task lands on m0 ("a1/0/0": "a/0/0" is not it)
    decoded.clear()  # place() read its views from the store; what counts is the copy's own decoding
    assert drain(cache, lambda: cache.revision >= other.revision)
    cache.refresh()
    assert cache.is_assumed(c.task_id) and decoded == []
    assert columns_used(cache, "m0") == (2000, 2048, 0)  # a1's confirmed task + our assumed one
    plan_views = cache.views(["m0"])  # the commit needs the record decoded: once
    out = CommitEngine(store, keys).commit(Plan([c], plan_views, jobs))
    assert len(decoded) == 1
    assert drain(cache, lambda: not cache.is_assumed(c.task_id))  # the watch's record holds it: Added
    assert len(decoded) == 1
    cache.confirm(out.machines)  # the ack after the watch: its decoded record is kept
    assert cache.views(["m0"])["m0"].alloc.tasks.keys() == {"a1/0/0", c.task_id} and len(decoded) == 1
    cache.refresh()
    assert columns_used(cache, "m0") == confirmed_used(cache, "m0") == (2000, 2048, 0)


def test_refresh_reports_freed_capacity_and_keeps_assumptions(store):
    keys = make_cell(store, 2)
    cache = SchedulerCache(store, keys)
    place(store, keys, "a", "m0", 2)
    assert drain(cache, lambda: confirmed_used(cache, "m0") == (2000, 2048, 0))
    assert not cache.refresh()  # used went up: nothing freed
    cache.assume([claim("b", 0, "m0")])
    release_tasks(store, keys, "a", [task_id("a", 0, 0)], now=1.0)
    assert drain(cache, lambda: confirmed_used(cache, "m0") == (1000, 1024, 0))
    assert cache.refresh()  # used dropped: the cue to retry parked jobs
    assert columns_used(cache, "m0") == (2000, 2048, 0)  # the confirmed 1000 + our assumed 1000


def test_resync_replaces_assumptions_on_their_machines_and_expires_those_whose_machine_went(store):
    keys = make_cell(store, 3)
    cache = SchedulerCache(store, keys)
    cache.close()
    cache._watch = None
    cache.assume([claim("a", 0, "m1"), claim("a", 1, "m2")])
    store.delete(keys.spec("m2"))  # m2 leaves the cell while the cache is not following
    set_machine_state(store, keys, "m0", MachineState.UP)  # and history moves past it
    store.compact(store.current_revision())
    assert drain(cache, lambda: cache.resyncs == 1)
    assert cache.refresh()  # rows renumbered: the columns are rebuilt
    assert "m2" not in cache.index and cache.size == 2
    assert cache.is_assumed(task_id("a", 0, 0)) and not cache.is_assumed(task_id("a", 1, 0))
    assert columns_used(cache, "m1") == (1000, 1024, 0)


def test_columns_are_confirmed_plus_assumed_through_a_random_history():
    # A seeded walk of assumes, re-assumes, forgets and commits (confirmed by the commit's
    # views or only by the watch): after every sync the columns hold exactly the confirmed
    # used vectors plus the requests of the claims still assumed, per machine.
    rng = np.random.default_rng(11)
    store = MemoryStore()
    keys = make_cell(store, 4, cpu=400_000, mem=1_638_400)
    cache = SchedulerCache(store, keys)
    engine = CommitEngine(store, keys)
    model: dict[str, Claim] = {}  # what must be Assumed
    for step in range(150):
        op = rng.choice(["assume", "forget", "commit"])
        if op == "assume":  # tasks of never-submitted jobs: nothing will confirm them
            cs = [claim(f"x{int(rng.integers(6))}", int(rng.integers(3)), f"m{int(rng.integers(4))}",
                        cpu=int(rng.integers(1, 500))) for _ in range(int(rng.integers(1, 4)))]
            cache.assume(cs)
            model.update({c.task_id: c for c in cs})
        elif op == "forget" and model:
            cs = [c for c in model.values() if rng.random() < 0.5]
            cache.forget(cs)
            for c in cs:
                del model[c.task_id]
        elif op == "commit":
            jid = f"c{step}"
            jobs = submit(store, keys, make_job(jid, 2))
            cs = [claim(jid, i, f"m{int(rng.integers(4))}") for i in range(2)]
            cache.assume(cs)
            out = engine.commit(Plan(cs, views(store, keys, 4), jobs))
            assert len(out.committed) == 2
            if rng.random() < 0.5:
                cache.confirm(out.machines)  # else only the watch confirms them
            else:
                cache.poll(timeout=0.5)
        cache.sync()
        assert set(cache._assumed) == set(model), step
        expected = cache.used[:cache.size].copy()
        for c in model.values():
            expected[cache.index[c.machine_id]] += c.request
        assert (cache.columns.host_used == expected).all(), step
        assert (cache.columns.host_free == cache.columns.host_capacity - expected).all()


def test_the_scheduler_leaves_nothing_assumed_after_each_step():
    clock = SimClock()
    store = MemoryStore(clock=clock)
    keys = make_cell(store, 2, cpu=2000)
    # Five one-task jobs, two machines with room for two each: each decision sees the
    # earlier ones' assumptions, so four fill both machines exactly and the fifth is parked.
    submit(store, keys, *[make_job(f"j{i}", 1) for i in range(5)])
    s = Scheduler("b0", store, keys, BATCH, clock)
    attempt = s.prepare()
    assert attempt is not None and s.cache.assumed_count == 4
    assert all(columns_used(s.cache, m) == (2000, 2048, 0) for m in ("m0", "m1"))
    out = s.complete(attempt)
    assert len(out.committed) == 4 and list(out.parked) == ["j4"]
    assert s.cache.assumed_count == 0
    n = s.cache.size
    assert (s.cache.columns.host_used == s.cache.used[:n]).all()
    s.close()


def test_the_scheduler_forgets_what_a_lost_lease_kept_from_committing():
    clock = SimClock()
    store = MemoryStore(clock=clock)
    keys = make_cell(store, 2)
    submit(store, keys, make_job("a", 3))
    s = Scheduler("b0", store, keys, BATCH, clock)
    attempt = s.prepare()
    assert attempt is not None and s.cache.assumed_count == 3
    clock.advance(BATCH.lease_ttl_s + 1)  # the lease expires before the commit
    out = s.complete(attempt)
    assert out.lease_lost and not out.committed
    assert s.cache.assumed_count == 0 and int(s.cache.columns.host_used.sum()) == 0
    s.close()


# -- one owner: only schedulers/cache.py assumes, confirms, forgets or writes the columns ----

REPO = Path(__file__).resolve().parent.parent
PACKAGES = ("cellstate", "schedulers", "gpu", "cellsched", "loadtests", "api")
CACHE = "schedulers/cache.py"
COLUMN_WRITERS = {"update_rows", "update_machines"}
CACHE_API = {"assume", "confirm", "forget", "assume_into", "unassume"}
# A kernel benchmark whose columns are the whole cell (no store, no scheduler): nothing to
# keep in step, so it writes its own columns. It defines no assume API.
STANDALONE_COLUMNS = {"loadtests/packing_quality.py"}


def package_modules():
    for pkg in PACKAGES:
        for path in sorted((REPO / pkg).rglob("*.py")):
            yield path.relative_to(REPO).as_posix(), ast.parse(path.read_text(), str(path))


def test_the_package_walk_sees_the_cache_and_the_scheduler():
    names = {rel for rel, _ in package_modules()}
    assert {CACHE, "schedulers/core.py", "gpu/columns.py", "cellsched/demo_store.py"} <= names


def test_copy_columns_is_gone():
    found = []
    for rel, tree in package_modules():
        for node in ast.walk(tree):
            name = (node.id if isinstance(node, ast.Name) else node.attr if isinstance(node, ast.Attribute)
                    else node.name if isinstance(node, ast.ClassDef | ast.FunctionDef | ast.alias) else None)
            if name == "CopyColumns" or (isinstance(node, ast.alias) and node.asname == "CopyColumns"):
                found.append(f"{rel}:{node.lineno}")
    assert found == []


def test_only_the_cache_writes_the_columns():
    writers = {}
    for rel, tree in package_modules():
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) \
                    and node.func.attr in COLUMN_WRITERS:
                writers.setdefault(rel, []).append(node.lineno)
    assert CACHE in writers  # the walk does see the calls
    assert set(writers) - STANDALONE_COLUMNS == {CACHE}, writers


def test_only_the_cache_defines_assume_confirm_forget():
    defined = {}
    for rel, tree in package_modules():
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name in CACHE_API:
                defined.setdefault(node.name, set()).add(rel)
    assert defined == {"assume": {CACHE}, "confirm": {CACHE}, "forget": {CACHE}}


def test_snapshot_reads_allocation_heads_and_decodes_task_maps_on_use(store):
    keys = make_cell(store, 3)
    place(store, keys, "full", "m0", n=3)
    place(store, keys, "one", "m1", n=1)
    copy = SchedulerCache(store, keys, max_tasks=3)
    i0, i1 = copy.index["m0"], copy.index["m1"]
    assert copy.task_count[[i0, i1]].tolist() == [3, 1]  # off the values' heads
    assert not copy.schedulable[i0] and copy.schedulable[i1]  # m0 is at its task limit
    assert sorted(copy.view("m0").alloc.tasks) == [task_id("full", 0, k) for k in range(3)]
    assert copy.used[i1].tolist() == list(copy.view("m1").alloc.used)
    copy.close()


class _RecordByRecord(SchedulerCache):
    """The snapshot applied one record at a time, as the watch applies changes."""

    def _load_snapshot(self, spec_kvs, alloc_kvs):
        return False  # resync then applies every record in turn


@pytest.mark.parametrize("odd_values", [True, False])
def test_the_bulk_snapshot_equals_applying_its_records_one_by_one(odd_values):
    from cellsched.cellstate import codec
    from cellsched.cellstate.model import AllocationRecord
    from cellsched.cellstate.store import Put

    store = MemoryStore()
    keys = make_cell(store, 7)
    set_machine_state(store, keys, "m3", MachineState.DRAINING)
    for jid, machine, n in (("a", "m0", 1), ("b", "m1", 3), ("c", "m1", 1)):
        place(store, keys, jid, machine, n)  # m1 reaches the task limit below (max_tasks=4)
    odd = AllocationRecord((5, 5, 0), {"x/0/0": (5, 5, 0)})
    if odd_values:  # off the codec's fast paths: record by record
        store.txn([], [Put(keys.alloc("m5"), codec.encode_alloc(odd).replace(b'"n":1,', b"")),
                       Put(keys.spec("m6"), codec.encode_machine(Machine("m6", (8000, 32768, 0), {"z": "\u00e9"})))])
    else:
        store.txn([], [Put(keys.alloc("m5"), codec.encode_alloc(odd))])
    store.txn([], [Put(keys.alloc("gone"), codec.encode_alloc(odd))])  # a record of no known machine
    bulk, one = SchedulerCache(store, keys, max_tasks=4), _RecordByRecord(store, keys, max_tasks=4)
    assert bulk.ids == one.ids and bulk.size == 7
    assert [bulk.machine(i) for i in range(7)] == [one.machine(i) for i in range(7)]
    assert bulk.all_labels() == one.all_labels() == [bulk.machine(i).labels for i in range(7)]
    for name in ("capacity", "used", "spec_rev", "alloc_rev", "schedulable", "task_count"):
        assert np.array_equal(getattr(bulk, name), getattr(one, name)), name
    assert [bulk.alloc(i) for i in range(7)] == [one.alloc(i) for i in range(7)]
    assert bulk.schedulable[:7].tolist() == [True, False, True, False, True, True, True]
    assert bulk.task_count[5] == 1 and bulk.dirty == one.dirty == set()  # both refreshed into columns
    assert np.array_equal(bulk.columns.host_used, one.columns.host_used)


class _EventByEvent(SchedulerCache):
    """Every allocation record the watch brings applied in turn, as before _apply_allocs."""

    def _apply_allocs(self, events):
        for ev in events:
            self._apply_event(ev)


def test_a_poll_applies_allocation_records_per_column_as_one_by_one():
    from cellsched.cellstate import codec
    from cellsched.cellstate.model import AllocationRecord
    from cellsched.cellstate.store import Put

    store = MemoryStore()
    keys = make_cell(store, 6)
    bulk, one = SchedulerCache(store, keys, max_tasks=3), _EventByEvent(store, keys, max_tasks=3)
    out = place(store, keys, "own", "m2", 1)
    bulk.confirm(out.machines)  # our own commit, folded in before the watch brings it
    one.confirm(out.machines)
    mine = Claim(task_id("held", 0, 0), "m5", (1000, 1024, 0))
    bulk.assume([mine])  # a row with an assumed claim sees every record in turn
    one.assume([mine])
    for jid, machine, n in (("a", "m0", 1), ("b", "m0", 2), ("c", "m1", 3), ("d", "m2", 1)):
        place(store, keys, jid, machine, n)  # m0 twice in one poll; m0 and m1 reach the task limit
    set_machine_state(store, keys, "m3", MachineState.DRAINING)  # a spec event between allocation runs
    odd = AllocationRecord((5, 5, 0), {"x/0/0": (5, 5, 0)})
    store.txn([], [Put(keys.alloc("m3"), codec.encode_alloc(odd))])
    store.txn([], [Put(keys.alloc("m5"), codec.encode_alloc(AllocationRecord((1000, 1024, 0), {mine.task_id: mine.request})))])
    store.txn([], [Put(keys.alloc("m5"), codec.encode_alloc(AllocationRecord()))])  # and released, in the same poll
    assert bulk.poll(timeout=0.2) == one.poll(timeout=0.2) > 0
    for name in ("capacity", "used", "spec_rev", "alloc_rev", "schedulable", "task_count"):
        assert np.array_equal(getattr(bulk, name), getattr(one, name)), name
    assert [bulk.alloc(i) for i in range(6)] == [one.alloc(i) for i in range(6)]
    assert bulk.schedulable[:6].tolist() == [False, False, True, False, True, True]
    assert bulk.task_count[:6].tolist() == [3, 3, 2, 1, 0, 0]
    assert bulk.revision == one.revision == store.current_revision()
    assert bulk.assumed_count == one.assumed_count == 0  # the held claim was Added by its record
    bulk.refresh()
    one.refresh()
    assert np.array_equal(bulk.columns.host_used, one.columns.host_used)
    store.txn([], [Put(keys.alloc("m2"), codec.encode_alloc(odd).replace(b'"n":1,', b""))])  # off the fast path
    bulk.poll(timeout=0.2)
    assert bulk.alloc(bulk.index["m2"]) == odd and tuple(bulk.used[bulk.index["m2"]]) == (5, 5, 0)
