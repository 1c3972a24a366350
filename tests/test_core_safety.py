"""The shared rule at commit: every defect the outside reproductions found, as a test.

Each test names the reproduction it stands for (c2: first-round fit, r1: the chunk race
behind the replay's overcommit, c1b: double bind after an outage, c3/c4: parked jobs).
"""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from cellsched import gpu
from cellsched.cellstate.claims import claim_jobs, claimed_jobs, list_parked, park_job, release_claim
from cellsched.cellstate.clock import SimClock
from cellsched.cellstate.commit import CommitEngine, Fence, Plan
from cellsched.cellstate.faults import CountingStore, ScriptedFaultStore
from cellsched.cellstate.invariants import check_store
from cellsched.cellstate.keys import CellKeys
from cellsched.cellstate.lifecycle import release_tasks
from cellsched.cellstate.machines import set_machine_state
from cellsched.cellstate.model import (
    Claim,
    Job,
    JobClass,
    JobStatus,
    Machine,
    MachineState,
    TaskGroup,
    task_id,
)
from cellsched.cellstate.store import StoreLimits
from cellsched.cellstate.store.memory import MemoryStore
from cellsched.cellstate.validation import RefusalKind, validate_claims
from cellsched.cellstate.views import JobView, MachineView, read_job_view
from cellsched.schedulers.core import Scheduler
from cellsched.schedulers.decide import decide_job
from cellsched.schedulers.settings import BATCH

from .cellfactory import make_cell, make_job, submit, views


def claims_for(job, machines, group=0):
    return [Claim(task_id(job.id, group, i), m, job.groups[group].request) for i, m in enumerate(machines)]


# -- c2: the engine is the validator, first round included ----------------------------------


def test_validator_refuses_first_round_overcommit_with_fields(store):
    keys = make_cell(store, 1)  # m0: 4000 mCPU
    job = make_job("over", 5)  # 5 x 1000 mCPU
    jobs = submit(store, keys, job)
    out = CommitEngine(store, keys).commit(Plan(claims_for(job, ["m0"] * 5), views(store, keys, 1), jobs))
    assert len(out.committed) == 4
    [(claim, why)] = out.conflicted
    assert (why.kind, why.machine_id, why.resource, why.requested, why.free, why.capacity) == \
        (RefusalKind.INSUFFICIENT_RESOURCE, "m0", "cpu", 1000, 0, 4000)
    assert check_store(store, keys, ["over"]).ok


def test_validator_refuses_claim_on_down_machine_and_writes_nothing(store):
    keys = make_cell(store, 1)
    set_machine_state(store, keys, "m0", MachineState.DOWN)
    job = make_job("down", 1)
    jobs = submit(store, keys, job)
    snap = views(store, keys, 1)
    rev = store.current_revision()
    out = CommitEngine(store, keys).commit(Plan(claims_for(job, ["m0"]), snap, jobs))
    assert out.committed == [] and out.stats.txns == 0
    assert [why.kind for _, why in out.conflicted] == [RefusalKind.MACHINE_NOT_UP]
    assert store.current_revision() == rev


def test_validator_refuses_wrong_labels_different_machines_and_task_limit():
    store = MemoryStore()
    keys = make_cell(store, 2)
    job = Job("lbl", (TaskGroup("g", 2, (100, 10, 0), labels={"zone": "a"}),))
    spread = Job("spr", (TaskGroup("g", 2, (100, 10, 0), different_machines=True),))
    jobs = submit(store, keys, job, spread)
    snap = views(store, keys, 2)
    accepted, refused = validate_claims(claims_for(job, ["m0"]) + claims_for(spread, ["m1", "m1"]), snap, jobs)
    assert [c.task_id for c in accepted] == ["spr/0/0"]
    assert [(c.task_id, r.kind) for c, r in refused] == [
        ("lbl/0/0", RefusalKind.LABEL_MISMATCH), ("spr/0/1", RefusalKind.DIFFERENT_MACHINES)]
    accepted, refused = validate_claims(claims_for(spread, ["m0", "m1"]), snap, jobs, max_tasks=1)
    assert len(accepted) == 2 and not refused
    full = {m: MachineView(v.machine, v.spec_revision, v.alloc.with_tasks({"x/0/0": (1, 1, 0)}), 1)
            for m, v in snap.items()}
    accepted, refused = validate_claims(claims_for(spread, ["m0"]), full, jobs, max_tasks=1)
    assert [(r.kind, r.capacity) for _, r in refused] == [(RefusalKind.TASK_LIMIT, 1)]


def test_validator_refuses_a_gang_whole_when_one_task_fails():
    store = MemoryStore()
    keys = make_cell(store, 2)
    gang = make_job("gang", 3, cpu=3000, gang=True)
    jobs = submit(store, keys, gang)
    accepted, refused = validate_claims(claims_for(gang, ["m0", "m1", "m0"]), views(store, keys, 2), jobs)
    assert accepted == []
    assert sorted(r.kind.value for _, r in refused) == ["gang_dropped", "gang_dropped", "insufficient_resource"]


# -- r1: the chunk race (a later chunk built on a view an earlier chunk's failure refreshed) --


def test_commit_revalidates_later_chunk_against_view_refreshed_by_earlier_failure():
    """Chunk 1 (job a on m0, m1, m2) fails because another scheduler filled m0 after our
    snapshot; its failure reads refresh m0. Chunk 2 (job b on m0) was decided on the old m0
    and must be checked against the refreshed one, where it does not fit. Before the
    validator, chunk 2's compares passed against the refreshed revision and m0 overcommitted."""
    store = MemoryStore(StoreLimits(max_txn_ops=8))  # 3 machines + 1 job per txn at most
    keys = make_cell(store, 3)
    a, b, rival = make_job("a", 3), make_job("b", 1), make_job("rival", 1, cpu=3500)
    jobs = submit(store, keys, a, b, rival)
    snap = views(store, keys, 3)  # what our scheduler decided on
    CommitEngine(store, keys).commit(Plan(claims_for(rival, ["m0"]), views(store, keys, 3), {"rival": jobs["rival"]}))
    out = CommitEngine(store, keys).commit(
        Plan(claims_for(a, ["m0", "m1", "m2"]) + claims_for(b, ["m0"]), snap, {"a": jobs["a"], "b": jobs["b"]}))
    assert out.stats.conflicted_txns == 1  # chunk 1 failed once on m0
    refused = {c.task_id: why.kind for c, why in out.conflicted}
    assert refused == {"a/0/0": RefusalKind.INSUFFICIENT_RESOURCE, "b/0/0": RefusalKind.INSUFFICIENT_RESOURCE}
    assert sorted(c.task_id for c in out.committed) == ["a/0/1", "a/0/2"]
    rep = check_store(store, keys)
    assert rep.ok, rep.violations


# -- c1b: a commit cut short by an outage, retried on a stale job view ------------------------


def test_scheduler_never_binds_twice_after_partial_commit_and_outage():
    clock = SimClock()
    # The 3rd txn that writes a job record (after the submission and chunk 1) is refused before it is sent.
    store = ScriptedFaultStore(MemoryStore(clock=clock), CellKeys("t").jobs_prefix, unavailable_at={3})
    keys = make_cell(store, 300, cpu=64_000, mem=262_144)
    submit(store, keys, make_job("wide", 400, cpu=100, mem=10))
    s = Scheduler("b0", store, keys, BATCH, clock)
    s.run(clock.now() + 5.0)
    assert s.metrics()["store_errors"] == 1
    rep = check_store(store, keys, ["wide"])
    assert rep.ok, rep.violations[:3]
    assert rep.bound_tasks == 400
    assert read_job_view(store, keys, "wide").record.status is JobStatus.PLACED


# -- claims fence -----------------------------------------------------------------------------


def test_commit_of_a_scheduler_whose_claim_expired_writes_nothing():
    clock = SimClock()
    store = MemoryStore(clock=clock)
    keys = make_cell(store, 2)
    submit(store, keys, make_job("j", 2))
    lease = store.grant_lease(10)
    [view] = claim_jobs(store, keys, JobClass.BATCH, lease, "a", 1)
    store.revoke_lease(lease)  # our lease died mid-commit; another scheduler may hold the job now
    other = store.grant_lease(10)
    [theirs] = claim_jobs(store, keys, JobClass.BATCH, other, "b", 1)
    rev = store.current_revision()
    out = CommitEngine(store, keys).commit(
        Plan(claims_for(view.record.job, ["m0", "m1"]), views(store, keys, 2), {"j": view}, {"j": Fence.of(view)}))
    assert out.committed == [] and {why.kind for _, why in out.conflicted} == {RefusalKind.CLAIM_LOST}
    assert store.current_revision() == rev
    # Neither can the old holder release or park the new holder's claim.
    assert not release_claim(store, keys, view)
    assert park_job(store, keys, view, "gone", need=None) is None
    assert store.get(keys.claim(theirs.claim)).mod_revision == theirs.claim_revision
    assert claimed_jobs(store, keys) == {"j": theirs.claim}
    assert release_claim(store, keys, theirs)
    assert claimed_jobs(store, keys) == {}  # let go: anyone may claim it


# -- the loop never dies on one job ----------------------------------------------------------


def test_scheduler_parks_a_job_whose_decision_raises_and_places_the_rest():
    clock = SimClock()
    store = MemoryStore(clock=clock)
    keys = make_cell(store, 2)
    submit(store, keys, make_job("bad", 1), make_job("good", 1))

    def flaky_decide(columns, index, record, policy, seed):
        if record.job.id == "bad":
            raise KeyError("a bug in a decide function")
        return decide_job(columns, index, record, policy, seed)

    s = Scheduler("b0", store, keys, BATCH, clock, decide_fn=flaky_decide)
    assert s.step()
    bad, good = read_job_view(store, keys, "bad").record, read_job_view(store, keys, "good").record
    assert bad.status is JobStatus.PARKED and "KeyError" in bad.reason
    assert good.status is JobStatus.PLACED
    assert list_parked(store, keys, JobClass.BATCH) == ["bad"]
    assert check_store(store, keys).ok


def test_job_claimed_without_progress_by_crashing_schedulers_is_parked_for_good():
    clock = SimClock()
    store = MemoryStore(clock=clock)
    keys = make_cell(store, 1)
    submit(store, keys, make_job("killer", 1))
    for _ in range(3):  # three schedulers claim it and die before committing anything
        lease = store.grant_lease(10)
        assert [v.record.job.id for v in claim_jobs(store, keys, JobClass.BATCH, lease, "x", 1)] == ["killer"]
        store.revoke_lease(lease)
    lease = store.grant_lease(10)
    assert claim_jobs(store, keys, JobClass.BATCH, lease, "x", 1) == []  # the fourth parks it
    rec = read_job_view(store, keys, "killer").record
    assert rec.status is JobStatus.PARKED and rec.refusal == {"kind": "crash_limit", "claims": 3}
    assert check_store(store, keys).ok


# -- c3 / c4: parked jobs cost nothing while they wait, and never starve pending ones --------


def _parked_cell(parked: int):
    clock = SimClock()
    store = CountingStore(MemoryStore(clock=clock), [CellKeys("t").jobs_prefix])
    keys = make_cell(store, 4, cpu=4000)
    submit(store, keys, make_job("fill", 4, cpu=4000))  # fills every machine
    s = Scheduler("b0", store, keys, BATCH.with_(parked_retry_s=5.0), clock)
    s.step()
    submit(store, keys, *[make_job(f"p{i:04d}", 1, cpu=1000 + i) for i in range(parked)])
    while s.step():
        pass
    assert len(list_parked(store, keys, JobClass.BATCH)) == parked
    return clock, store, keys, s


def test_idle_scheduler_with_1000_parked_jobs_writes_nothing_and_reads_no_job_record():
    clock, store, keys, s = _parked_cell(1000)
    for _ in range(5):
        store.reset()
        clock.advance(3.0)  # past parked_retry_s every other step: the index is looked at
        assert not s.step()
        assert (store.write_txns, store.gets[keys.jobs_prefix]) == (0, 0)
    # Free exactly what one parked job lacks: 1000 mCPU on one machine fits p0000 only.
    release_tasks(store, keys, "fill", ["fill/0/0"], now=clock.now())
    rec = read_job_view(store, keys, "fill").record
    assert rec.status is JobStatus.PENDING or rec.done
    assert s.step()
    assert read_job_view(store, keys, "p0000").record.status is JobStatus.PLACED
    rep = check_store(store, keys)
    assert rep.ok, rep.violations[:3]


def test_pending_job_is_placed_on_first_step_behind_many_parked_jobs():
    clock, store, keys, s = _parked_cell(200)
    release_tasks(store, keys, "fill", ["fill/0/1"], now=clock.now())
    submit(store, keys, make_job("fresh", 1, cpu=500))
    assert s.step()
    assert read_job_view(store, keys, "fresh").record.status is JobStatus.PLACED


def test_queue_is_first_come_first_served_within_a_priority():
    store = MemoryStore()
    keys = make_cell(store, 1)
    from cellsched.cellstate.submission import submit_jobs

    submit_jobs(store, keys, [make_job("zz-first", 1)], now=1.0)
    submit_jobs(store, keys, [make_job("aa-second", 1)], now=2.0)
    lease = store.grant_lease(10)
    assert [v.record.job.id for v in claim_jobs(store, keys, JobClass.BATCH, lease, "a", 1)] == ["zz-first"]


# -- the kernels' feasibility mask and the validator agree -----------------------------------


@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_validator_agrees_with_kernel_feasibility_mask(data):
    n = data.draw(st.integers(1, 8))
    zones, models = ["a", "b"], ["A100", "H100"]
    machines, used = [], []
    for i in range(n):
        cap = (data.draw(st.integers(0, 4000)), data.draw(st.integers(0, 4000)), data.draw(st.integers(0, 4)))
        used.append(tuple(data.draw(st.integers(0, c)) for c in cap))
        labels = {"zone": data.draw(st.sampled_from(zones))}
        if data.draw(st.booleans()):
            labels["gpu.model"] = data.draw(st.sampled_from(models))
        state = data.draw(st.sampled_from(list(MachineState)))
        machines.append(Machine(f"m{i}", cap, labels, state))
    req = (data.draw(st.integers(0, 3000)), data.draw(st.integers(0, 3000)), data.draw(st.integers(0, 3)))
    if not any(req):
        req = (1, 0, 0)
    glabels = {}
    if data.draw(st.booleans()):
        glabels["zone"] = data.draw(st.sampled_from(zones))
    if data.draw(st.booleans()):
        glabels["gpu.model"] = ",".join(data.draw(st.lists(st.sampled_from(models), min_size=1, max_size=2)))
    group = TaskGroup("g", 1, req, glabels)
    job = Job("j", (group,))
    cols = gpu.MachineColumns([m.id for m in machines], np.array([m.capacity for m in machines]),
                              np.array(used), [m.labels for m in machines],
                              np.array([m.schedulable for m in machines]), xp=np)
    spec = gpu.GroupSpec.from_task_group(group)
    free = cols.host_capacity - cols.host_used
    mask = cols.host_eligibility(spec) & (free >= np.array(req)).all(axis=1)
    views_ = {m.id: MachineView(m, 1, _alloc(u), 1) for m, u in zip(machines, used, strict=True)}
    jobs = {"j": JobView(_record(job), 1)}
    for i, m in enumerate(machines):
        accepted, _ = validate_claims([Claim("j/0/0", m.id, req)], views_, jobs)
        assert bool(accepted) == bool(mask[i]), (m, used[i], req, glabels)


def _alloc(used):
    from cellsched.cellstate.model import AllocationRecord

    return AllocationRecord(tuple(used), {})


def _record(job):
    from cellsched.cellstate.model import JobRecord

    return JobRecord(job)


def test_validator_uses_conflict_mode_sequence_for_changed_machines():
    store = MemoryStore()
    keys = make_cell(store, 1)
    job = make_job("s", 1)
    jobs = submit(store, keys, job)
    _, refused = validate_claims(claims_for(job, ["m0"]), views(store, keys, 1), jobs, changed={"m0"})
    assert [r.kind for _, r in refused] == [RefusalKind.MACHINE_CHANGED]
