"""Property tests: the vectorised kernels equal the scalar reference on random cells.

Tolerance: SCORE_TOL (1e-5) absolute on scores in [0, 1]; feasibility must match exactly.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cellsched.gpu import PRESETS, Policy, Scorer, kernels, reference, score_topk, score_topk_by_class

from .helpers import SCORE_TOL, XPS, arrays, columns, host, ref_machines, resolve
from .strategies import cells, groups

SETTINGS = settings(max_examples=40, deadline=None)


@st.composite
def cell_and_groups(draw):
    cap, used, labels, sched = draw(cells())
    return (cap, used, labels, sched), draw(groups(len(cap)))


@pytest.mark.parametrize("xp_name", XPS)
@pytest.mark.parametrize("scorer", list(Scorer))
@SETTINGS
@given(case=cell_and_groups())
def test_kernel_matches_reference_random(xp_name, scorer, case):
    xp = resolve(xp_name)
    (cap, used, labels, sched), gs = case
    cols = columns(xp, cap, used, labels, sched)
    req = np.array([g.request for g in gs], dtype=np.int64)
    got = host(kernels.KERNELS[scorer](xp, arrays(cols), xp.asarray(req.astype(np.float32))))
    fn = reference.SCORERS[scorer]
    for t, g in enumerate(gs):
        for n, m in enumerate(ref_machines(cols)):
            if reference.fits(m.free, g.request):  # scores are defined where the task fits
                assert got[t, n] == pytest.approx(fn(m.capacity, m.free, g.request), abs=SCORE_TOL)


@pytest.mark.parametrize("xp_name", XPS)
@pytest.mark.parametrize("policy", list(PRESETS.values())[:4], ids=lambda p: p.name)
@SETTINGS
@given(case=cell_and_groups())
def test_combined_scores_match_reference_random(xp_name, policy, case):
    xp = resolve(xp_name)
    (cap, used, labels, sched), gs = case
    cols = columns(xp, cap, used, labels, sched)
    req = xp.asarray(np.array([g.request for g in gs], dtype=np.int64))
    eligible = xp.stack([cols.eligibility(g) for g in gs])
    got = host(kernels.combined_scores(xp, arrays(cols), req, policy.normalised_weights(), eligible))
    for t, g in enumerate(gs):
        for n, m in enumerate(ref_machines(cols)):
            want = reference.combined_score(policy, m, n, g)
            if want == -math.inf:
                assert got[t, n] == -np.inf
            else:
                assert got[t, n] == pytest.approx(want, abs=SCORE_TOL)


@pytest.mark.parametrize("xp_name", XPS)
@SETTINGS
@given(case=cell_and_groups(), k=st.integers(1, 5), budget=st.sampled_from([1, 200, 1 << 20]))
def test_score_topk_matches_reference_random(xp_name, case, k, budget):
    # budget=1 forces one group per chunk: chunking must not change the answer
    xp = resolve(xp_name)
    (cap, used, labels, sched), gs = case
    cols = columns(xp, cap, used, labels, sched)
    policy = Policy("mix", {s: 1.0 for s in Scorer}, top_k=k)
    machines = ref_machines(cols)
    results = [
        score_topk(cols, gs, policy, memory_budget=budget),  # fused kernel on CuPy
        score_topk(cols, gs, policy, memory_budget=budget, fused=False),  # xp path everywhere
        score_topk_by_class(cols, gs, policy),
    ]
    for top in results:
        for t, g in enumerate(gs):
            want = reference.topk(policy, machines, g, k)
            got = [(int(i), float(s)) for i, s in zip(top.indices[t], top.scores[t], strict=True) if i >= 0]
            assert len(got) == len(want)
            assert [s for _, s in got] == pytest.approx([s for _, s in want], abs=SCORE_TOL)
            for i, s in got:  # every returned machine really has that score
                assert reference.combined_score(policy, machines[i], i, g) == pytest.approx(s, abs=SCORE_TOL)
