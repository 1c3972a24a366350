"""More of the shared rule: schema refusal, one job's commit error isolated, bounded claim
reads, claims released on close, idle watches of dead incarnations closed."""

from __future__ import annotations

import pytest

from cellsched.cellstate import codec
from cellsched.cellstate.claims import claim_jobs, claimed_jobs
from cellsched.cellstate.clock import SimClock
from cellsched.cellstate.commit import CommitEngine
from cellsched.cellstate.errors import SchemaMismatchError, StoreUnavailableError, TxnLimitError
from cellsched.cellstate.faults import CountingStore
from cellsched.cellstate.index_entry import IndexEntry
from cellsched.cellstate.invariants import check_store
from cellsched.cellstate.keys import CellKeys
from cellsched.cellstate.model import JobClass, JobStatus, Machine
from cellsched.cellstate.store import Get, Put
from cellsched.cellstate.store.memory import MemoryStore
from cellsched.cellstate.submission import submit_jobs
from cellsched.cellstate.views import read_job_view
from cellsched.schedulers.cache import SchedulerCache
from cellsched.schedulers.core import Scheduler
from cellsched.schedulers.settings import BATCH

from .cellfactory import fills_room, make_cell, make_job, submit_each


def test_cell_in_another_layout_is_refused_with_a_message():
    store = MemoryStore()
    keys = make_cell(store, 1)
    store.put(keys.schema, codec.encode_obj({"layout": 1}))
    with pytest.raises(SchemaMismatchError, match="layout 1; this cellsched reads layout 2"):
        SchedulerCache(store, keys)


def test_cell_written_before_the_schema_key_is_refused():
    store = MemoryStore()
    keys = CellKeys("old")
    store.put(keys.spec("m0"), codec.encode_machine(Machine("m0", (1000, 1000, 0))))  # as layout 1 wrote it
    with pytest.raises(SchemaMismatchError, match="no /old/schema key"):
        Scheduler("b0", store, keys, BATCH, SimClock())


class RaisingEngine(CommitEngine):
    """Raises as a store would on a txn it cannot take, for plans that touch job `poison`."""

    def commit(self, plan):
        if any(c.job_id == "poison" for c in plan.claims):
            raise TxnLimitError("injected: this job's txn is over the request limit")
        return super().commit(plan)


def test_a_job_whose_commit_raises_is_parked_and_its_batch_mates_place():
    clock = SimClock()
    store = MemoryStore(clock=clock)
    keys = make_cell(store, 4)
    submit_jobs(store, keys, [make_job("poison", 1), make_job("ok1", 1), make_job("ok2", 1)], now=0.0)
    s = Scheduler("b0", store, keys, BATCH, clock, planner=RaisingEngine(store, keys))
    assert s.step()
    recs = {j: read_job_view(store, keys, j).record for j in ("poison", "ok1", "ok2")}
    assert recs["poison"].status is JobStatus.PARKED and "TxnLimitError" in recs["poison"].reason
    assert recs["ok1"].status is recs["ok2"].status is JobStatus.PLACED
    rep = check_store(store, keys)
    assert rep.ok, rep.violations


@pytest.mark.parametrize("queued", [1_000, 20_000])
def test_claim_step_reads_are_bounded_by_the_batch_not_the_queue(queued):
    store = CountingStore(MemoryStore())
    keys = make_cell(store, 1)
    submit_jobs(store, keys, [make_job(f"j{i:05d}", 1) for i in range(queued)], now=0.0)
    lease = store.grant_lease(30)
    store.reset()
    got = claim_jobs(store, keys, JobClass.BATCH, lease, "a", limit=128)
    assert fills_room(len(got), 128, store.limits)  # whole queue segments
    # One page of the queue (256 entries) and the 128 claimed job records, whatever the queue's length.
    assert store.keys_read[""] <= 256 + 128


def test_closing_a_scheduler_releases_its_claims_at_once():
    clock = SimClock()
    store = MemoryStore(clock=clock)
    keys = make_cell(store, 1, cpu=1000)
    submit_jobs(store, keys, [make_job(f"w{i}", 1) for i in range(3)], now=0.0)
    s = Scheduler("b0", store, keys, BATCH, clock)
    s._claim(s._keep_lease())
    assert set(claimed_jobs(store, keys)) == {"w0", "w1", "w2"}
    assert len(store.get_prefix(keys.claims_prefix)[0]) == 1  # one claim txn, one key for all three
    s.close()  # what stop() and SIGTERM run in the actor
    assert store.get_prefix(keys.claims_prefix)[0] == [] and claimed_jobs(store, keys) == {}


def test_store_host_closes_watches_left_unread_by_dead_incarnations(monkeypatch):
    from cellsched.schedulers import ray_actors

    host = ray_actors.StoreHost()
    dead = host.watch_open("/c/node/", 1)
    live = host.watch_open("/c/node/", 1)
    now = [1000.0]
    monkeypatch.setattr(ray_actors.time, "monotonic", lambda: now[0])
    host.last_read = dict.fromkeys(host.last_read, now[0])
    now[0] += ray_actors.WATCH_IDLE_S / 2
    host.store.txn([], [Put("/c/node/spec/m0", b"{}")])
    assert host.watch_get(live)  # the live one keeps reading
    now[0] += ray_actors.WATCH_IDLE_S / 2 + 1
    host.watch_open("/c/node/", 1)  # any open sweeps the idle ones
    assert dead not in host.watches and live in host.watches
    with pytest.raises(StoreUnavailableError, match="closed"):
        host.watch_get(dead)
    assert host.store.txn([], [Get("/c/node/", prefix=True)]).reads[0]


def test_parked_jobs_beyond_one_look_still_get_their_turn():
    clock = SimClock()
    store = MemoryStore(clock=clock)
    keys = make_cell(store, 2, cpu=4000)
    submit_jobs(store, keys, [make_job("fill", 2, cpu=4000)], now=0.0)
    s = Scheduler("b0", store, keys, BATCH.with_(parked_pages=1, parked_retry_s=1.0), clock)
    s.step()
    # 600 jobs that need more than a whole machine's worth... and one, submitted last, that fits later.
    submit_jobs(store, keys, [make_job(f"huge{i:03d}", 1, cpu=3900 + i % 50, mem=16384) for i in range(600)],
                now=1.0)
    submit_jobs(store, keys, [make_job("zz-small", 1, cpu=500)], now=2.0)
    while s.step():
        pass
    assert read_job_view(store, keys, "zz-small").record.status is JobStatus.PARKED
    from cellsched.cellstate.lifecycle import release_tasks

    release_tasks(store, keys, "fill", ["fill/0/0"], now=clock.now())
    store.put(keys.spec("m0"), codec.encode_machine(Machine("m0", (4000, 8192, 0))))  # huge jobs still never fit
    for _ in range(6):  # one parked-index page per look: the tail comes round within a few looks
        clock.advance(1.5)
        s.step()
        if read_job_view(store, keys, "zz-small").record.status is JobStatus.PLACED:
            break
    assert read_job_view(store, keys, "zz-small").record.status is JobStatus.PLACED
    assert check_store(store, keys).ok


def test_parked_job_keeps_its_structured_reason_field_by_field():
    clock = SimClock()
    store = MemoryStore(clock=clock)
    keys = make_cell(store, 3, cpu=4000)
    submit_jobs(store, keys, [make_job("wide", 2, cpu=3000), make_job("zlate", 2, cpu=3000)], now=0.0)
    s = Scheduler("b0", store, keys, BATCH, clock)
    while s.step():
        pass
    rec = read_job_view(store, keys, "zlate").record  # submitted with "wide", after it by id
    assert rec.status is JobStatus.PARKED
    [group] = rec.refusal["groups"]
    assert rec.refusal["kind"] == "unplaceable"
    # 3 machines of 4000 mCPU; "wide" takes 3000 on two, "zlate" 3000 on the third: its second
    # task finds 1000 free everywhere.
    assert (group["group"], group["tasks_unplaced"], group["reason"], group["resource"],
            group["machines_evaluated"]) == ("g", 1, "insufficient_resource", "cpu", 3)
    assert group["rejected"] == {"insufficient cpu": 3}
    assert "insufficient cpu" in rec.reason  # the sentence beside the data


class BrokenPagingStore(MemoryStore):
    """Paged reads fail with a non-store error: a bug in the loop's own path, not one job's."""

    def get_page(self, prefix, limit, after=""):
        raise KeyError("injected: the loop itself is broken")


def test_loop_gives_up_after_repeated_step_errors_so_its_process_restarts():
    from cellsched.schedulers.core import MAX_LOOP_ERRORS_IN_A_ROW

    clock = SimClock()
    store = BrokenPagingStore(clock=clock)
    keys = make_cell(store, 1)
    s = Scheduler("b0", store, keys, BATCH, clock)
    with pytest.raises(KeyError, match="injected"):
        s.run(clock.now() + 3600.0)
    assert s.metrics()["loop_errors"] == MAX_LOOP_ERRORS_IN_A_ROW


def test_invariants_catch_a_bad_claim_key_and_an_entry_its_claim_did_not_take():
    store = MemoryStore()
    keys = make_cell(store, 2)
    submit_each(store, keys, [make_job("a", 1), make_job("b", 1)])  # own entries
    lease = store.grant_lease(60)
    claim_jobs(store, keys, JobClass.BATCH, lease, "s", 1)  # takes a
    assert check_store(store, keys, ["a", "b"]).ok
    (cid,) = claimed_jobs(store, keys).values()
    (b_entry,) = [kv for kv in store.get_prefix(keys.queue_prefix())[0] if IndexEntry.decode(kv).job_id == "b"]
    store.txn([], [Put(b_entry.key, IndexEntry("b", 1, holder=cid).encode()),  # b "held" by a claim that took only a
                   Put(keys.claim("junk"), codec.encode_obj({"owner": "x"}), lease)])
    violations = check_store(store, keys, ["a", "b"]).violations
    assert f"index entry of job b names claim {cid}, which did not take it" in violations
    assert "claim junk is unreadable (owner and a list of jobs expected)" in violations
