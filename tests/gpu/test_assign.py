"""Batch assignment: table cases, then properties against the reference fit check."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cellsched.gpu import PRESETS, SPREAD, GroupSpec, Reason, assign_job, reference

from .helpers import XPS, columns, ref_machines, resolve
from .strategies import cells, groups

POLICIES = list(PRESETS.values())


@pytest.mark.parametrize("xp_name", XPS)
@pytest.mark.parametrize("policy", POLICIES, ids=lambda p: p.name)
def test_assign_job_fills_exactly_without_overcommit(xp_name, policy):
    # 3 machines x 4000 mCPU; 1000-mCPU tasks: 12 fit exactly, the 13th cannot (cpu)
    cols = columns(resolve(xp_name), [(4000, 8000, 0)] * 3)
    a = assign_job(cols, [GroupSpec((1000, 100, 0), count=13)], policy, seed=("job", 0))
    assert a.placed == 12
    assert np.bincount(a.machines[0][a.machines[0] >= 0], minlength=3).tolist() == [4, 4, 4]
    u = a.reason(0)
    assert (u.reason, u.resource, u.tasks) == (Reason.INSUFFICIENT_RESOURCE, "cpu", (12,))
    assert "insufficient cpu" in u.message


@pytest.mark.parametrize("xp_name", XPS)
def test_assign_job_different_machines_spreads(xp_name):
    # 4 tasks that each fit 4 times on any machine, but different-machines: 3 machines -> 3 placed
    cols = columns(resolve(xp_name), [(4000, 8000, 0)] * 3)
    a = assign_job(cols, [GroupSpec((1000, 100, 0), count=4, different_machines=True)], SPREAD, seed=("j", 1))
    placed = a.machines[0][a.machines[0] >= 0]
    assert sorted(placed.tolist()) == [0, 1, 2]
    assert a.reason(0).reason is Reason.DIFFERENT_MACHINES


# groups -> the reason of group 0
REASON_CASES = [
    # machine 0 is draining, the only other one is down -> not schedulable
    (dict(schedulable=[False, False]), GroupSpec((1, 1, 0)), Reason.NOT_SCHEDULABLE, None),
    # no machine has zone=c
    (dict(labels=[{"zone": "a"}, {"zone": "b"}]), GroupSpec((1, 1, 0), labels={"zone": "c"}), Reason.LABEL_MISMATCH, None),
    # both avoided (anti-affinity with running tasks)
    ({}, GroupSpec((1, 1, 0), avoid_machines={0, 1}), Reason.ANTI_AFFINITY, None),
    # a GPU task on CPU-only machines: 1 > 0 GPUs
    ({}, GroupSpec((1, 1, 1)), Reason.INSUFFICIENT_RESOURCE, "gpu"),
    # 9000 MiB > 8000 MiB on every machine
    ({}, GroupSpec((1, 9000, 0)), Reason.INSUFFICIENT_RESOURCE, "memory"),
    # H100 wanted; machines carry A100 and none
    (dict(labels=[{"gpu.model": "A100"}, {}]), GroupSpec((1, 1, 0), gpu_models={"H100"}), Reason.GPU_MODEL_MISMATCH, None),
]


@pytest.mark.parametrize("xp_name", XPS)
@pytest.mark.parametrize(("cell", "group", "reason", "resource"), REASON_CASES)
def test_assign_job_reports_reason(xp_name, cell, group, reason, resource):
    cols = columns(resolve(xp_name), [(4000, 8000, 0)] * 2, **cell)
    a = assign_job(cols, [group], SPREAD, seed=("j", 0))
    assert a.placed == 0
    assert (a.reason(0).reason, a.reason(0).resource) == (reason, resource)


@pytest.mark.parametrize("xp_name", XPS)
def test_assign_job_anti_affinity_between_groups(xp_name):
    # group 1 must not share a machine with group 0: 2 machines, group 0 takes one -> group 1 the other
    cols = columns(resolve(xp_name), [(4000, 8000, 0)] * 2)
    gs = [GroupSpec((1000, 1, 0), count=1), GroupSpec((1000, 1, 0), count=2, anti_affinity={0})]
    a = assign_job(cols, gs, PRESETS["pack"], seed=("j", 0))
    assert set(a.machines[1].tolist()).isdisjoint(a.machines[0].tolist())
    assert a.placed == 3


@pytest.mark.parametrize("xp_name", XPS)
def test_assign_job_seed_replays_and_spreads(xp_name):
    cols = columns(resolve(xp_name), [(4000, 8000, 0)] * 64)
    g = [GroupSpec((1000, 1, 0), count=1)]
    first = [int(assign_job(cols, g, SPREAD, seed=("job", 0)).machines[0][0]) for _ in range(3)]
    assert len(set(first)) == 1  # same (job, attempt): same decision
    picks = {int(assign_job(cols, g, SPREAD, seed=("job", a)).machines[0][0]) for a in range(20)}
    assert len(picks) > 1  # attempts spread over the top k equally good machines


@pytest.mark.parametrize("xp_name", XPS)
def test_assign_job_leaves_columns_until_assumed(xp_name):
    cols = columns(resolve(xp_name), [(4000, 8000, 0)] * 2)
    a = assign_job(cols, [GroupSpec((1000, 1000, 0), count=3)], SPREAD, seed=("j", 0))
    assert cols.host_used.sum() == 0
    cols.update_rows(list(a.used), list(a.used.values()))  # what the scheduler cache assumes
    assert cols.host_used.sum(axis=0).tolist() == [3000, 3000, 0]


@pytest.mark.parametrize("xp_name", XPS)
@pytest.mark.parametrize("policy", POLICIES, ids=lambda p: p.name)
@settings(max_examples=30, deadline=None)
@given(case=cells(max_machines=8).flatmap(lambda c: st.tuples(st.just(c), groups(len(c[0]), max_count=10))))
def test_assign_job_never_overcommits_and_is_complete(xp_name, policy, case):
    (cap, used, labels, sched), gs = case
    cols = columns(resolve(xp_name), cap, used, labels, sched)
    a = assign_job(cols, gs, policy, seed=("prop", 0))
    added = np.zeros_like(cols.host_used)
    for g, _, m in a.placements():
        added[m] += gs[g].request
    final_used = cols.host_used + added
    # never overcommits: used + everything placed <= capacity, per machine and resource
    assert (final_used <= cols.host_capacity).all()
    assert all(final_used[i].tolist() == list(u) for i, u in a.used.items())
    after = [m._replace(used=tuple(map(int, final_used[i]))) for i, m in enumerate(ref_machines(cols))]
    for g, spec in enumerate(gs):
        mine = a.machines[g][a.machines[g] >= 0].tolist()
        partners = {h for h in range(len(gs)) if h in spec.anti_affinity or g in gs[h].anti_affinity} - {g}
        theirs = {m for h in partners for m in a.machines[h].tolist() if m >= 0}
        # every placement honours the constraints
        assert all(reference.eligible(after[m], m, spec) and m not in theirs for m in mine)
        if spec.different_machines:
            assert len(set(mine)) == len(mine)
        # complete: a task is left unplaced only if the reference finds no machine for it
        if len(mine) < spec.count:
            excluded = [i in theirs or (spec.different_machines and i in mine) for i in range(len(after))]
            assert not reference.fits_somewhere(after, spec, excluded)
            assert a.reason(g) is not None


class _RescanEveryTime:
    """Random first fit as written before the running fit mask and the checked probe
    blocks: the same draws (a block of probe rows per group, drawn again when used up or
    when the group widens), but every probe and every scan judged afresh on the whole free
    matrix at its own task's turn (the reference for the test below)."""

    @staticmethod
    def place(run, g, spec):
        from cellsched.gpu.assign import PROBE_BLOCK

        req = np.asarray(spec.request, dtype=np.int64)
        eligible = run.columns.host_eligibility(spec) & ~run._excluded(g, spec)
        block = {"rows": np.zeros((0, 0), dtype=np.int64), "next": 0, "pool": None}
        for task in range(spec.count):
            machine = _RescanEveryTime.pick(run, g, eligible, req, block, min(spec.count - task, PROBE_BLOCK))
            if machine < 0:
                return task
            run._assume(g, task, machine, spec)
            if spec.different_machines:
                eligible[machine] = False
        return spec.count

    @staticmethod
    def pick(run, g, eligible, req, block, rows):
        pool = None if run.widened[g] else run.home_rows
        size = len(run.columns) if pool is None else len(pool)
        if size:
            if block["next"] >= len(block["rows"]) or block["pool"] is not pool:
                drawn = run.rng.integers(size, size=(rows, min(64, size)))
                block.update(rows=drawn if pool is None else pool[drawn], next=0, pool=pool)
            probes = block["rows"][block["next"]]
            block["next"] += 1
            ok = eligible[probes] & (run.free[probes] >= req).all(axis=1)
            if ok.any():
                return int(probes[np.argmax(ok)])
        fit = eligible & (run.free >= req).all(axis=1)
        if pool is not None:
            at_home = pool[fit[pool]]
            if len(at_home):
                return int(at_home[run.rng.integers(len(at_home))])
            run.widened[g] = True
        fits = np.flatnonzero(fit)
        if len(fits) == 0:
            return -1
        return int(fits[run.rng.integers(len(fits))])


@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_random_fit_running_mask_draws_what_rescanning_draws(data):
    from cellsched.gpu.assign import _Batch
    from cellsched.gpu.policy import Selection

    cap, used, labels, sched = data.draw(cells(max_machines=12))
    cols = columns(np, cap, used, labels, sched)
    gs = data.draw(groups(len(cap), max_count=24))
    policy = next(p for p in POLICIES if p.selection is Selection.RANDOM_FIT)
    homes = data.draw(st.sampled_from([1, 2, 3]))
    policy = policy.at_home(data.draw(st.integers(0, homes - 1)), homes)
    seed = data.draw(st.integers(0, 2**32))
    new, old = _Batch(cols, gs, policy, seed), _Batch(cols, gs, policy, seed)
    for g, spec in enumerate(gs):
        if spec.count:
            assert new._place_random(g, spec) == _RescanEveryTime.place(old, g, spec)
    assert [r.tolist() for r in new.result] == [r.tolist() for r in old.result]
    assert new.widened == old.widened and np.array_equal(new.free, old.free)
