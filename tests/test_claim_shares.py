"""Schedulers side by side claim disjoint jobs (queue shares), and a dead scheduler's share
is taken by the others as it reaches the head: no job starves behind a missing scheduler."""

from __future__ import annotations

from cellsched.cellstate.claims import HELD_PATIENCE, Patience, claim_jobs, list_queue, shard_of
from cellsched.cellstate.clock import SimClock
from cellsched.cellstate.faults import CountingStore
from cellsched.cellstate.model import JobClass
from cellsched.cellstate.store.memory import MemoryStore

from .cellfactory import make_cell, make_job, submit_each


def _queue(n_jobs: int):
    clock = SimClock()
    store = CountingStore(MemoryStore(clock=clock))
    keys = make_cell(store, 2)
    jobs = [make_job(f"j{i:05d}", 1) for i in range(n_jobs)]
    # One job per submission: each has an entry of its own, as the share logic here is per entry
    # (a queue segment is one entry: test_queue_segments.py).
    for k in range(0, n_jobs, 500):
        submit_each(store, keys, jobs[k:k + 500], now=float(k))
    return store, keys


def test_shard_of_is_stable_and_spreads():
    counts = [0, 0, 0]
    for i in range(3000):
        counts[shard_of(f"job-{i}", 3)] += 1
    assert all(800 < c < 1200 for c in counts), counts
    assert shard_of("job-7", 3) == shard_of("job-7", 3)


def test_schedulers_with_shares_claim_disjoint_jobs_without_failed_claims():
    store, keys = _queue(1000)
    n = 4
    leases = [store.grant_lease(10) for _ in range(n)]
    store.reset()
    claimed = [claim_jobs(store, keys, JobClass.BATCH, leases[k], f"s{k}", 64, share=(k, n)) for k in range(n)]
    ids = [{v.record.job.id for v in views} for views in claimed]
    assert [len(s) for s in ids] == [64] * n
    assert sum(len(s) for s in ids) == len(set().union(*ids))  # disjoint
    own = sum(shard_of(j, n) == k for k, s in enumerate(ids) for j in s)
    assert own >= 0.85 * n * 64, own  # each mostly its own share (the rest: from the head when it ran short)
    # Claim txns that failed (a job another scheduler took first): few, against one per page otherwise.
    assert store.failed_txns <= n, (store.txns, store.write_txns)


def test_a_missing_schedulers_share_is_taken_as_it_reaches_the_head():
    store, keys = _queue(2000)
    lease = store.grant_lease(10)
    head = list_queue(store, keys, JobClass.BATCH)[:8]
    foreign = [j for j in head if shard_of(j, 2) == 1]
    assert foreign  # the head holds jobs of the absent scheduler's share
    got: set[str] = set()
    for _ in range(3):  # scheduler 0 of 2 alone: within a few rounds it takes the head
        got |= {v.record.job.id for v in claim_jobs(store, keys, JobClass.BATCH, lease, "s0", 16,
                                                    held=set(got), adopt=False, share=(0, 2))}
    assert set(foreign) <= got


def test_claims_stay_head_first_without_shares():
    store, keys = _queue(300)
    lease = store.grant_lease(10)
    views = claim_jobs(store, keys, JobClass.BATCH, lease, "s0", 10)
    assert [v.record.job.id for v in views] == [f"j{i:05d}" for i in range(10)]


def test_with_patience_another_shares_job_waits_one_call_and_only_while_unclaimed():
    store, keys = _queue(40)
    lease0, lease1 = store.grant_lease(10), store.grant_lease(10)
    patience: Patience = {}
    first = {v.record.job.id for v in claim_jobs(store, keys, JobClass.BATCH, lease0, "s0", 64, adopt=False,
                                                 share=(0, 2), patience=patience)}
    assert first and all(shard_of(j, 2) == 0 for j in first)  # its own share only, on the first look
    others = [j for j in list_queue(store, keys, JobClass.BATCH) if shard_of(j, 2) == 1]
    assert set(patience) == set(others)
    # Scheduler 1 claims two of its own meanwhile: their entries change, so they are not raced for.
    mine1 = {v.record.job.id for v in claim_jobs(store, keys, JobClass.BATCH, lease1, "s1", 2, adopt=False,
                                                 share=(1, 2))}
    assert len(mine1) == 2
    store.reset()
    second = {v.record.job.id for v in claim_jobs(store, keys, JobClass.BATCH, lease0, "s0", 64, adopt=False,
                                                  held=first, share=(0, 2), patience=patience)}
    assert second == set(others) - mine1  # the ones that sat unclaimed a whole call
    assert store.failed_txns == 0  # no claim txn failed on scheduler 1's jobs


def test_with_patience_a_dead_schedulers_claimed_jobs_are_taken_after_held_patience_calls():
    store, keys = _queue(40)
    lease0, lease1 = store.grant_lease(10), store.grant_lease(10)
    patience: Patience = {}
    got = {v.record.job.id for v in claim_jobs(store, keys, JobClass.BATCH, lease0, "s0", 64, adopt=False,
                                               share=(0, 2), patience=patience)}
    dead = {v.record.job.id for v in claim_jobs(store, keys, JobClass.BATCH, lease1, "s1", 3, adopt=False,
                                                share=(1, 2))}
    store.revoke_lease(lease1)  # scheduler 1 died holding three: their entries still count a claim
    calls = 0
    while not dead <= got:
        calls += 1
        assert calls <= HELD_PATIENCE + 1, (calls, dead - got)
        got |= {v.record.job.id for v in claim_jobs(store, keys, JobClass.BATCH, lease0, "s0", 64, held=got,
                                                    adopt=False, share=(0, 2), patience=patience)}
        if calls < HELD_PATIENCE:
            assert not dead & got  # most likely held: left alone for a while
    assert len(got) == 40  # every job of the queue, its own share, the dead share and what it held


def test_with_patience_each_entry_is_taken_at_the_call_its_patience_allows_seeded():
    """Seeded: shares 1 and 2 of 3 are dead, some of their jobs claimed before they died; new
    jobs arrive between scheduler 0's calls. With the whole queue in its window, every job is
    taken exactly at the call patience allows: its own share at the first call that sees it,
    another share's unclaimed job at the second, another share's job that counts a claim at
    the (HELD_PATIENCE + 1)-th (patience keeps what the first decode of the entry said)."""
    import random

    rng = random.Random(2026)
    store, keys = _queue(0)
    lease0 = store.grant_lease(10)
    n, due_at, taken_at, made = 3, {}, {}, 0
    patience: Patience = {}
    got: set[str] = set()
    for call in range(12):
        if call < 6:  # a few new jobs, some taken and kept by a scheduler that then dies
            new = [make_job(f"r{made + i:04d}", 1) for i in range(rng.randrange(5, 25))]
            made += len(new)
            submit_each(store, keys, new, now=float(call))
            dead = store.grant_lease(10)
            victims = [j.id for j in new if shard_of(j.id, n) != 0 and rng.random() < 0.4]
            for share in (1, 2):
                mine = [j for j in victims if shard_of(j, n) == share]
                if mine:
                    older = set(due_at)  # only new jobs: a job claimed again and again is stuck at the crash limit
                    took = claim_jobs(store, keys, JobClass.BATCH, dead, f"d{share}", len(mine), held=older,
                                      adopt=False, share=(share, n))
                    assert {v.record.job.id for v in took} <= {j.id for j in new}
                    for v in took:  # its own share first, then any share's from the head
                        jid = v.record.job.id
                        due_at[jid] = call if shard_of(jid, n) == 0 else call + HELD_PATIENCE
            store.revoke_lease(dead)
            for j in new:
                due_at.setdefault(j.id, call if shard_of(j.id, n) == 0 else call + 1)
        views = claim_jobs(store, keys, JobClass.BATCH, lease0, "s0", 4096, held=got, adopt=False,
                           share=(0, n), patience=patience)
        for v in views:
            taken_at[v.record.job.id] = call
            got.add(v.record.job.id)
    assert taken_at == due_at


def test_shares_claim_disjoint_queue_segments():
    """Segments (one entry for a submission txn's jobs) go to shares by their id: n schedulers
    claim disjoint jobs, every job once, and each takes whole segments."""
    from cellsched.cellstate.submission import submit_jobs

    clock = SimClock()
    store = CountingStore(MemoryStore(clock=clock))
    keys = make_cell(store, 2)
    jobs = [make_job(f"j{i:05d}", 1) for i in range(2000)]
    for k in range(0, len(jobs), 200):
        submit_jobs(store, keys, jobs[k:k + 200], now=float(k))
    n = 4
    leases = [store.grant_lease(10) for _ in range(n)]
    claimed = [claim_jobs(store, keys, JobClass.BATCH, leases[k], f"s{k}", 256, share=(k, n)) for k in range(n)]
    ids = [{v.record.job.id for v in views} for views in claimed]
    assert all(ids) and sum(len(s) for s in ids) == len(set().union(*ids))  # disjoint, none empty
    segments = {v.record.segment for views in claimed for v in views}
    assert all(v.record.segment for views in claimed for v in views)
    assert len({v.record.segment for v in claimed[0]} & {v.record.segment for v in claimed[1]}) == 0
    assert len(segments) >= n
