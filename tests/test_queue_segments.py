"""Queue segments (cellstate/queue_segments.py): one queue entry for the jobs of one submission
txn, taken whole by a claim, left by its jobs through their records alone, split after a claim
that made no progress. Both backends; the invariant checker after every step."""

from __future__ import annotations

import random

import pytest

from cellsched.cellstate import codec
from cellsched.cellstate.cancel import cancel_job
from cellsched.cellstate.claims import claim_holders, claim_jobs, list_queue, release_claim
from cellsched.cellstate.clock import SimClock
from cellsched.cellstate.commit import CommitEngine, Plan
from cellsched.cellstate.index_entry import IndexEntry
from cellsched.cellstate.invariants import check_store
from cellsched.cellstate.lifecycle import release_tasks
from cellsched.cellstate.model import Claim, JobClass, JobStatus, TaskOutcome, task_id
from cellsched.cellstate.plan import Fence
from cellsched.cellstate.queue_segments import MAX_SEGMENT_JOBS, segment_limit
from cellsched.cellstate.store import Delete, Put
from cellsched.cellstate.store.memory import MemoryStore
from cellsched.cellstate.submission import submit_jobs
from cellsched.cellstate.views import read_job_view
from cellsched.schedulers.core import Scheduler
from cellsched.schedulers.settings import BATCH
from tests.cellfactory import make_cell, make_job, views
from tests.storespy import SpyStore


def queue_entries(store, keys):
    kvs, _ = store.get_prefix(keys.queue_prefix())
    return [(kv.key, IndexEntry.decode(kv)) for kv in kvs]


def claimed_segment(store, machines: int, jobs: int, limit: int):
    """A cell, one submission txn of `jobs` one-task jobs j0.. (a segment), and one claim of up to
    `limit` of them: (keys, lease, views)."""
    keys = make_cell(store, machines)
    submit_jobs(store, keys, [make_job(f"j{i}", 1) for i in range(jobs)], now=0.0)
    lease = store.grant_lease(30)
    return keys, lease, claim_jobs(store, keys, JobClass.BATCH, lease, "a", limit=limit)


def clean(store, keys, jobs=None):
    rep = check_store(store, keys, jobs)
    assert rep.ok, rep.violations


def test_a_submission_txn_writes_one_entry_per_class_and_priority(store):
    keys = make_cell(store, 2)
    jobs = [make_job(f"a{i}", 1) for i in range(5)] + [make_job("lone", 1, job_class=JobClass.SERVICE)]
    submit_jobs(store, keys, jobs, now=0.0)
    entries = queue_entries(store, keys)
    assert len(entries) == 2
    seg = next(e for _, e in entries if e.jobs)
    assert seg.job_id == "a0" and seg.jobs == tuple(f"a{i}" for i in range(5))
    assert [read_job_view(store, keys, f"a{i}").record.segment for i in range(5)] == ["a0+"] * 5
    assert read_job_view(store, keys, "lone").record.segment == ""  # alone in its class: its own entry
    assert list_queue(store, keys, JobClass.BATCH) == [f"a{i}" for i in range(5)]
    clean(store, keys, [j.id for j in jobs])


def test_segments_stay_within_one_claim_txn(store):
    keys = make_cell(store, 1)
    jobs = [make_job(f"j{i:03d}", 1) for i in range(300)]
    submit_jobs(store, keys, jobs, now=0.0)
    sizes = [len(e.members) for _, e in queue_entries(store, keys)]
    assert sum(sizes) == 300 and max(sizes) <= segment_limit(store.limits) <= MAX_SEGMENT_JOBS
    lease = store.grant_lease(30)
    got = claim_jobs(store, keys, JobClass.BATCH, lease, "a", limit=1000)  # a txn per segment: no TxnLimitError
    assert len(got) == 300
    clean(store, keys)


def test_a_claim_takes_a_segment_whole_and_placing_writes_no_queue_key(store):
    keys, lease, got = claimed_segment(store, machines=4, jobs=8, limit=8)
    assert len(got) == 8
    [(seg_key, seg)] = queue_entries(store, keys)
    assert seg.holder == got[0].claim and seg.claims == 1
    assert set(claim_holders(store, keys)) == {f"j{i}" for i in range(8)}
    spy = SpyStore(store)
    plan = Plan([Claim(task_id(f"j{i}", 0, 0), f"m{i % 4}", (1000, 1024, 0)) for i in range(8)],
                views(store, keys, 4), {v.record.job.id: v for v in got},
                {v.record.job.id: Fence(v.claim, v.claim_revision) for v in got})
    out = CommitEngine(spy, keys).commit(plan)
    assert len(out.committed) == 8
    written = [op.key for _, ops in spy.txns for op in ops if isinstance(op, (Put, Delete))]
    assert not [k for k in written if k.startswith(keys.queue_prefix())]
    assert claim_holders(store, keys) == {}  # placed jobs left the segment with their records
    clean(store, keys)  # the segment lists placed jobs: allowed until its holder deletes it


def test_a_segment_claimed_after_a_dead_holder_is_split_per_job(store):
    keys = make_cell(store, 2)
    submit_jobs(store, keys, [make_job(f"j{i}", 1) for i in range(6)], now=0.0)
    dead = store.grant_lease(30)
    claim_jobs(store, keys, JobClass.BATCH, dead, "dead", limit=10)
    store.revoke_lease(dead)  # the holder crashed: its claim key went with the lease
    clean(store, keys)
    lease = store.grant_lease(30)
    got = claim_jobs(store, keys, JobClass.BATCH, lease, "b", limit=10)
    assert sorted(v.record.job.id for v in got) == [f"j{i}" for i in range(6)]
    entries = queue_entries(store, keys)
    assert all(not e.jobs for _, e in entries) and len(entries) == 6
    assert {e.claims for _, e in entries} == {2} and {e.holder for _, e in entries} == {got[0].claim}
    assert all(v.record.segment == "" and v.revision == read_job_view(store, keys, v.record.job.id).revision
               for v in got)
    clean(store, keys)


def test_a_split_keeps_only_the_claims_room_and_lets_the_rest_go(store):
    keys = make_cell(store, 2)
    submit_jobs(store, keys, [make_job(f"j{i}", 1) for i in range(6)], now=0.0)
    dead = store.grant_lease(30)
    assert len(claim_jobs(store, keys, JobClass.BATCH, dead, "dead", limit=6)) == 6
    store.revoke_lease(dead)
    lease = store.grant_lease(30)
    got = claim_jobs(store, keys, JobClass.BATCH, lease, "b", limit=2)
    assert [v.record.job.id for v in got] == ["j0", "j1"]  # a crash counts against a batch, not the segment
    entries = {e.job_id: e for _, e in queue_entries(store, keys)}
    assert all(not e.jobs for e in entries.values()) and len(entries) == 6
    assert {j: (e.claims, e.holder) for j, e in entries.items() if j in ("j0", "j1")} == \
        {"j0": (2, got[0].claim), "j1": (2, got[0].claim)}
    assert {(e.claims, e.holder) for j, e in entries.items() if j not in ("j0", "j1")} == {(1, "")}
    clean(store, keys)
    other = store.grant_lease(30)
    rest = claim_jobs(store, keys, JobClass.BATCH, other, "c", limit=10, held={"j0", "j1"})
    assert sorted(v.record.job.id for v in rest) == ["j2", "j3", "j4", "j5"]
    clean(store, keys)


def test_a_batch_smaller_than_a_segment_splits_it_and_holds_only_its_room(store):
    keys, lease, got = claimed_segment(store, machines=2, jobs=6, limit=2)
    assert [v.record.job.id for v in got] == ["j0", "j1"]
    entries = {e.job_id: e for _, e in queue_entries(store, keys)}
    assert all(not e.jobs for e in entries.values()) and len(entries) == 6  # the segment went
    assert {j: (e.claims, bool(e.holder)) for j, e in entries.items()} == \
        {"j0": (1, True), "j1": (1, True), **{f"j{i}": (0, False) for i in range(2, 6)}}
    clean(store, keys)
    # A batch that holds something already stops at a segment past its room.
    submit_jobs(store, keys, [make_job(f"k{i}", 1) for i in range(4)], now=1.0)
    more = claim_jobs(store, keys, JobClass.BATCH, lease, "a", limit=5, held={"j0", "j1"}, overshoot=False)
    assert sorted(v.record.job.id for v in more) == ["j2", "j3", "j4", "j5"]  # k0..k3 (4) no longer fit
    clean(store, keys)


def test_crash_limit_after_a_split_counts_per_job(store):
    keys = make_cell(store, 2)
    submit_jobs(store, keys, [make_job(f"j{i}", 1) for i in range(4)], now=0.0)
    for _ in range(3):  # three holders die without progress
        lease = store.grant_lease(30)
        claim_jobs(store, keys, JobClass.BATCH, lease, "x", limit=10)
        store.revoke_lease(lease)
        clean(store, keys)
    lease = store.grant_lease(30)
    assert claim_jobs(store, keys, JobClass.BATCH, lease, "y", limit=10) == []
    assert {read_job_view(store, keys, f"j{i}").record.status for i in range(4)} == {JobStatus.PARKED}
    clean(store, keys)


def test_a_cancelled_job_leaves_its_segment_and_is_not_claimed(store):
    keys = make_cell(store, 2)
    submit_jobs(store, keys, [make_job(f"j{i}", 1) for i in range(3)], now=0.0)
    cancel_job(store, keys, "j1", now=1.0)
    clean(store, keys)
    lease = store.grant_lease(30)
    got = claim_jobs(store, keys, JobClass.BATCH, lease, "a", limit=10)
    assert sorted(v.record.job.id for v in got) == ["j0", "j2"]
    clean(store, keys)


def test_a_segment_with_no_job_left_in_it_goes_at_its_next_claim(store):
    keys = make_cell(store, 2)
    submit_jobs(store, keys, [make_job(f"j{i}", 1) for i in range(3)], now=0.0)
    for i in range(3):
        cancel_job(store, keys, f"j{i}", now=1.0)
    lease = store.grant_lease(30)
    assert claim_jobs(store, keys, JobClass.BATCH, lease, "a", limit=10) == []
    assert queue_entries(store, keys) == [] and store.get_prefix(keys.claims_prefix)[0] == []
    clean(store, keys)


def test_a_job_let_go_gets_its_own_entry_and_another_claims_it(store):
    keys = make_cell(store, 2)
    submit_jobs(store, keys, [make_job(f"j{i}", 1) for i in range(3)], now=0.0)
    lease = store.grant_lease(30)
    got = {v.record.job.id: v for v in claim_jobs(store, keys, JobClass.BATCH, lease, "a", limit=10)}
    assert release_claim(store, keys, got["j1"])
    rec = read_job_view(store, keys, "j1").record
    assert rec.segment == "" and rec.status is JobStatus.PENDING
    own = dict(queue_entries(store, keys))[keys.own_queue_of(rec)]
    assert own.holder == "" and own.claims == 1
    clean(store, keys)
    other = store.grant_lease(30)
    assert [v.record.job.id for v in claim_jobs(store, keys, JobClass.BATCH, other, "b", limit=10)] == ["j1"]
    clean(store, keys)


def test_partial_binding_and_eviction_give_the_job_its_own_entry(store):
    keys = make_cell(store, 1)
    submit_jobs(store, keys, [make_job("big", 6), make_job("small", 1)], now=0.0)  # 6 tasks: 4 fit
    lease = store.grant_lease(30)
    got = {v.record.job.id: v for v in claim_jobs(store, keys, JobClass.BATCH, lease, "a", limit=10)}
    plan = Plan([Claim(task_id("big", 0, i), "m0", (1000, 1024, 0)) for i in range(4)], views(store, keys, 1),
                {"big": got["big"]}, {"big": Fence(got["big"].claim, got["big"].claim_revision)})
    CommitEngine(store, keys).commit(plan)
    rec = read_job_view(store, keys, "big").record
    assert rec.status is JobStatus.PENDING and rec.segment == ""
    assert dict(queue_entries(store, keys))[keys.own_queue_of(rec)].holder == got["big"].claim
    clean(store, keys)
    release_tasks(store, keys, "big", [task_id("big", 0, 0)], 2.0, TaskOutcome.EVICTED)
    clean(store, keys)


def _run_to_drained(store, keys, clock, jobs):
    s = Scheduler("s0", store, keys, BATCH, clock)  # a batch of 128: a segment (126) fits, no split
    clock.advance(1.0)
    s.run(clock.now() + 5.0)
    return s


def test_a_scheduler_places_segments_and_leaves_no_queue_or_claim_key():
    clock = SimClock()
    inner = MemoryStore(clock=clock)
    keys = make_cell(inner, 60)
    jobs = [make_job(f"j{i:03d}", 1) for i in range(200)]
    submit_jobs(inner, keys, jobs, now=0.0)
    spy = SpyStore(inner)
    _run_to_drained(spy, keys, clock, jobs)
    assert {read_job_view(inner, keys, j.id).record.status for j in jobs} == {JobStatus.PLACED}
    assert queue_entries(inner, keys) == [] and inner.get_prefix(keys.claims_prefix)[0] == []
    written = [op for _, ops in spy.txns for op in ops if isinstance(op, (Put, Delete))]
    per_pod = len(written) / len(jobs)
    assert per_pod <= 2.0, (per_pod, sorted({op.key.split("/")[2] for op in written}))
    clean(inner, keys, [j.id for j in jobs])


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_randomized_segments_with_crashes_cancels_and_releases(seed):
    """Random submissions, claims, crashes, cancels, releases and placements on one store; the
    invariant checker after every step, and at the end every job placed or cancelled."""
    rng = random.Random(seed)
    clock = SimClock()
    store = MemoryStore(clock=clock)
    keys = make_cell(store, 8, cpu=64000, mem=65536)
    accepted: list[str] = []
    held: dict[str, object] = {}
    lease = store.grant_lease(30)
    for step in range(120):
        act = rng.random()
        if act < 0.25:
            jobs = [make_job(f"s{step}-{i}", rng.choice([1, 1, 2]), cpu=100, mem=64,
                             job_class=rng.choice([JobClass.BATCH, JobClass.BATCH, JobClass.SERVICE]))
                    for i in range(rng.randint(1, 9))]
            accepted += submit_jobs(store, keys, jobs, now=clock.now()).accepted
        elif act < 0.45:
            cls = rng.choice([JobClass.BATCH, JobClass.SERVICE])
            for v in claim_jobs(store, keys, cls, lease, "r", limit=rng.randint(1, 12), held=held):
                held[v.record.job.id] = v
        elif act < 0.55 and held:  # the holder crashes
            store.revoke_lease(lease)
            held.clear()
            lease = store.grant_lease(30)
        elif act < 0.65 and accepted:
            jid = rng.choice(accepted)
            if read_job_view(store, keys, jid).record.status in (JobStatus.PENDING, JobStatus.PARKED):
                cancel_job(store, keys, jid, now=clock.now())
        elif act < 0.75 and held:
            jid = rng.choice(sorted(held))
            release_claim(store, keys, held.pop(jid))
        elif held:
            jid = rng.choice(sorted(held))
            v = held.pop(jid)
            tasks = [t for t, _, _ in v.record.unbound_tasks()]
            plan = Plan([Claim(t, f"m{rng.randrange(8)}", (100, 64, 0)) for t in tasks], views(store, keys, 8),
                        {jid: v}, {jid: Fence(v.claim, v.claim_revision)})
            CommitEngine(store, keys).commit(plan)
        clean(store, keys, accepted)
    # Drain: a scheduler per class places what is left; nothing is lost.
    store.revoke_lease(lease)
    for cls_settings in (BATCH, BATCH.with_(job_class=JobClass.SERVICE)):
        s = Scheduler(f"d-{cls_settings.job_class.value}", store, keys, cls_settings, clock)
        clock.advance(1.0)
        s.run(clock.now() + 5.0)
    statuses = {read_job_view(store, keys, j).record.status for j in accepted}
    assert statuses <= {JobStatus.PLACED, JobStatus.CANCELLED, JobStatus.PARKED}, statuses
    parked = [j for j in accepted if read_job_view(store, keys, j).record.status is JobStatus.PARKED]
    for j in parked:  # only crash-limit parks: every job fits
        assert codec.decode_job(keys.job(j), store.get(keys.job(j)).value).refusal["kind"] == "crash_limit"
    clean(store, keys, accepted)
