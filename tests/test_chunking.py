"""Cutting a commit into txns (cellstate/chunking.py): one-task jobs of one claim that a batch
put on one machine share a txn, so that machine's allocation record is written once for them;
a txn compares each claim key once, so more jobs fit a txn than with a key per job."""

from __future__ import annotations

import random

from cellsched.cellstate.chunking import chunk_claims, txn_ops_cost
from cellsched.cellstate.claims import claim_jobs
from cellsched.cellstate.commit import CommitEngine, Fence, Plan
from cellsched.cellstate.invariants import check_store
from cellsched.cellstate.model import Claim, JobClass, task_id
from cellsched.cellstate.store import StoreLimits
from cellsched.cellstate.store.memory import MemoryStore

from .cellfactory import make_cell, make_job, submit, submit_each, views


def test_one_task_jobs_on_one_machine_share_a_txn_and_its_allocation_write():
    store = MemoryStore()
    keys = make_cell(store, 20, cpu=64000, mem=1 << 20)
    jobs = [make_job(f"p{i:03d}", 1, cpu=100, mem=100) for i in range(200)]
    submit(store, keys, *jobs)
    lease = store.grant_lease(60)
    held = {v.record.job.id: v for v in claim_jobs(store, keys, JobClass.BATCH, lease, "s", 200)}
    rng = random.Random(7)
    claims = [Claim(task_id(j.id, 0, 0), f"m{rng.randrange(20)}", (100, 100, 0)) for j in jobs]
    machines = views(store, keys, 20)
    fences = {jid: Fence.of(v) for jid, v in held.items()}
    chunks = chunk_claims(claims, machines, held, store.limits, {j: f.claim for j, f in fences.items()})
    # a machine's pods are adjacent: only a chunk boundary splits them (one more write each)
    touched = [{c.machine_id for c in chunk} for chunk in chunks]
    assert len(set().union(*touched)) == 20 and sum(len(t) for t in touched) <= 20 + len(chunks) - 1
    before = store.current_revision()
    puts: list[str] = []
    inner_txn = store.txn

    def counting_txn(compares, success, failure=()):
        result = inner_txn(compares, success, failure)
        if result.succeeded:
            puts.extend(op.key for op in success if op.key.startswith(keys.alloc_prefix))
        return result

    store.txn = counting_txn
    out = CommitEngine(store, keys).commit(Plan(claims, machines, held, fences))
    assert len(out.committed) == 200 and store.current_revision() > before
    assert set(puts) == {keys.alloc(f"m{i}") for i in range(20)}
    assert len(puts) <= 20 + len(chunks) - 1  # about 20 allocation writes for 200 pods, not 200
    assert check_store(store, keys, [j.id for j in jobs]).ok


def test_a_txn_compares_each_claim_key_once():
    # 40 one-task jobs on 40 machines, all of one claim: compares 40 + 40 + 1, writes 40 + 40 + 40
    assert txn_ops_cost(40, 40, n_claims=1) == 120
    assert txn_ops_cost(40, 40, n_claims=1, n_entries=0) == 81
    # without knowing the claims: one per job, as many as a claim key per job needs
    assert txn_ops_cost(40, 40, n_entries=0) == 120
    store = MemoryStore()
    keys = make_cell(store, 100, cpu=64000, mem=1 << 20)
    jobs = [make_job(f"q{i:03d}", 1, cpu=100, mem=100) for i in range(100)]
    submit(store, keys, *jobs)
    held = {v.record.job.id: v for v in claim_jobs(store, keys, JobClass.BATCH, store.grant_lease(60), "s", 100)}
    claims = [Claim(task_id(j.id, 0, 0), f"m{i}", (100, 100, 0)) for i, j in enumerate(jobs)]
    limits = StoreLimits(max_txn_ops=128, max_request_bytes=store.limits.max_request_bytes)
    of = {jid: v.claim for jid, v in held.items()}
    shared = chunk_claims(claims, views(store, keys, 100), held, limits, of)
    unknown = chunk_claims(claims, views(store, keys, 100), held, limits)
    assert len(shared) < len(unknown)
    for chunk in shared:
        ms, js = {c.machine_id for c in chunk}, {c.job_id for c in chunk}
        assert txn_ops_cost(len(ms), len(js), n_claims=len({of[j] for j in js}),
                            n_entries=sum(not held[j].record.segment for j in js)) <= 128


def test_jobs_placed_from_a_queue_segment_count_no_queue_write():
    """One-task jobs of a queue segment write their record and an allocation share, no queue
    entry (cellstate/queue_segments.py): the compares bound a txn, not the writes, so more jobs
    fit one than with entries of their own; and the engine's txns stay within the limit."""
    # 100 one-task jobs two to a machine, one claim: compares 50 + 100 + 1, writes 50 + 100 (+ 100)
    assert txn_ops_cost(50, 100, n_claims=1, n_entries=0) == 151
    assert txn_ops_cost(25, 50, n_claims=1, n_entries=50) == 125 > txn_ops_cost(25, 50, n_claims=1, n_entries=0)

    def chunks_for(segmented: bool):
        store = MemoryStore()
        keys = make_cell(store, 60, cpu=64000, mem=1 << 20)
        jobs = [make_job(f"s{i:03d}", 1, cpu=100, mem=100) for i in range(120)]
        if segmented:
            submit(store, keys, *jobs)  # one submission txn: a segment
        else:
            submit_each(store, keys, jobs)
        held = {v.record.job.id: v for v in claim_jobs(store, keys, JobClass.BATCH, store.grant_lease(60), "s", 120)}
        assert all(bool(v.record.segment) is segmented for v in held.values())
        claims = [Claim(task_id(j.id, 0, 0), f"m{i // 2}", (100, 100, 0)) for i, j in enumerate(jobs)]
        fences = {jid: Fence.of(v) for jid, v in held.items()}
        chunks = chunk_claims(claims, views(store, keys, 60), held, store.limits, {j: f.claim for j, f in fences.items()})
        ops_seen: list[int] = []
        inner_txn = store.txn

        def counting_txn(compares, success, failure=()):
            if any(op.key.startswith(keys.alloc_prefix) for op in success):
                ops_seen.append(max(len(compares), len(success), len(failure)))
            return inner_txn(compares, success, failure)

        store.txn = counting_txn
        out = CommitEngine(store, keys).commit(Plan(claims, views(store, keys, 60), held, fences))
        assert len(out.committed) == 120 and max(ops_seen) <= store.limits.max_txn_ops
        assert check_store(store, keys, [j.id for j in jobs]).ok
        return len(chunks)

    assert chunks_for(True) < chunks_for(False)
