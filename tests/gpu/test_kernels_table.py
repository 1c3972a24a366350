"""Table-driven kernel tests: the expected arithmetic is written above each case."""

from __future__ import annotations

import numpy as np
import pytest

from cellsched.gpu import kernels
from cellsched.gpu.policy import SCORER_ORDER, Policy, Scorer

from .helpers import XPS, arrays, columns, host, resolve

# Each case: capacity, used, request (cpu, memory, gpu) -> expected score.
SCORE_CASES = {
    Scorer.LEAST_ALLOCATED: [
        # left = (2000-1000)/4000 = 0.25, (8000-4000)/16000 = 0.25; gpu has cap 0: dropped; mean 0.25
        ((4000, 16000, 0), (2000, 8000, 0), (1000, 4000, 0), 0.25),
        # left = 3000/4000 = 0.75, 1000/8000 = 0.125, (4-2)/8 = 0.25; mean 1.125/3 = 0.375
        ((4000, 8000, 8), (0, 6000, 4), (1000, 1000, 2), 0.375),
        # empty machine, tiny request: left = 3999/4000, 15999/16000 -> (0.99975 + 0.9999375)/2
        ((4000, 16000, 0), (0, 0, 0), (1, 1, 0), (0.99975 + 0.9999375) / 2),
    ],
    Scorer.MOST_ALLOCATED: [
        # u = (2000+1000)/4000 = 0.75, (8000+4000)/16000 = 0.75; mean 0.75
        ((4000, 16000, 0), (2000, 8000, 0), (1000, 4000, 0), 0.75),
        # u = 0.25, 0.875, 0.75; mean 1.875/3 = 0.625
        ((4000, 8000, 8), (0, 6000, 4), (1000, 1000, 2), 0.625),
        # exactly full after placement: u = 1, 1 -> 1
        ((4000, 16000, 0), (3000, 12000, 0), (1000, 4000, 0), 1.0),
    ],
    Scorer.BALANCED: [
        # u = 0.75, 0.75: std 0 -> 1
        ((4000, 16000, 0), (2000, 8000, 0), (1000, 4000, 0), 1.0),
        # u = 0.25, 0.875, 0.75, mean 0.625; deviations -0.375, 0.25, 0.125;
        # var = (0.140625 + 0.0625 + 0.015625)/3 = 0.0729166..; 1 - sqrt(var) = 0.72996..
        ((4000, 8000, 8), (0, 6000, 4), (1000, 1000, 2), 1 - (0.21875 / 3) ** 0.5),
        # two resources: std = |u_cpu - u_mem|/2 = |1.0 - 0.5|/2 = 0.25 -> 0.75
        ((4000, 16000, 0), (3000, 4000, 0), (1000, 4000, 0), 0.75),
    ],
    Scorer.DOT_PRODUCT: [
        # (1000/4000)(2000/4000) + (4000/16000)(8000/16000) = 0.125 + 0.125; / 2 dims = 0.125
        ((4000, 16000, 0), (2000, 8000, 0), (1000, 4000, 0), 0.125),
        # (1000/4000)(4000/4000) + (1000/8000)(2000/8000) + (2/8)(4/8) = 0.25 + 0.03125 + 0.125; / 3
        ((4000, 8000, 8), (0, 6000, 4), (1000, 1000, 2), 0.40625 / 3),
    ],
    Scorer.GPU_PACKING: [
        # CPU-only machine: 1
        ((4000, 16000, 0), (2000, 8000, 0), (1000, 4000, 0), 1.0),
        # g = 2 of 4 free on 8: 1 - (4 - 2)/8 = 0.75
        ((4000, 8000, 8), (0, 6000, 4), (1000, 1000, 2), 0.75),
        # g = 4 on an idle 8-GPU machine: 1 - (8 - 4)/8 = 0.5 (worse than the half-used one above)
        ((4000, 8000, 8), (0, 0, 0), (1000, 1000, 4), 0.5),
        # CPU task on a GPU machine with 6 of 8 GPUs free: 1 - 6/8 = 0.25
        ((4000, 8000, 8), (0, 0, 2), (1000, 1000, 0), 0.25),
    ],
}


def _score(xp, scorer, cap, used, req):
    m = arrays(columns(xp, [cap], [used]))
    req_f = xp.asarray(np.array([req], dtype=np.float32))
    return float(host(kernels.KERNELS[scorer](xp, m, req_f))[0, 0])


@pytest.mark.parametrize("xp_name", XPS)
@pytest.mark.parametrize(
    ("scorer", "cap", "used", "req", "expected"),
    [(s, *case) for s, cases in SCORE_CASES.items() for case in cases],
)
def test_kernel_score_table(xp_name, scorer, cap, used, req, expected):
    assert _score(resolve(xp_name), scorer, cap, used, req) == pytest.approx(expected, abs=1e-6)


# capacity, used, request -> fits
FIT_CASES = [
    # free (1000, 1000, 0) >= request (1000, 1000, 0) in every resource: fits exactly
    ((2000, 2000, 0), (1000, 1000, 0), (1000, 1000, 0), True),
    # cpu 1001 > 1000 free: one milli-CPU too many
    ((2000, 2000, 0), (1000, 1000, 0), (1001, 1000, 0), False),
    # 1 GPU requested, 0 on the machine
    ((2000, 2000, 0), (0, 0, 0), (1, 1, 1), False),
    # large integers stay exact: 2**40 free, 2**40 requested
    ((2**41, 2**41, 0), (2**40, 2**40, 0), (2**40, 2**40, 0), True),
    ((2**41, 2**41, 0), (2**40, 2**40, 0), (2**40 + 1, 2**40, 0), False),
]


@pytest.mark.parametrize("xp_name", XPS)
@pytest.mark.parametrize(("cap", "used", "req", "fits"), FIT_CASES)
def test_fit_mask_table(xp_name, cap, used, req, fits):
    xp = resolve(xp_name)
    m = arrays(columns(xp, [cap], [used]))
    assert bool(host(kernels.fit_mask(xp, m, xp.asarray(np.array([req], dtype=np.int64))))[0, 0]) is fits


@pytest.mark.parametrize("xp_name", XPS)
def test_feasibility_mask_schedulable_and_eligible(xp_name):
    xp = resolve(xp_name)
    # three identical machines; #1 is draining, #2 is not eligible (labels) -> only #0
    m = arrays(columns(xp, [(4000, 4000, 0)] * 3, schedulable=[True, False, True]))
    req = xp.asarray(np.array([[1, 1, 0]], dtype=np.int64))
    eligible = xp.asarray(np.array([True, True, False]))
    assert host(kernels.feasibility_mask(xp, m, req, eligible)).tolist() == [[True, False, False]]


@pytest.mark.parametrize("xp_name", XPS)
def test_combined_scores_weights(xp_name):
    xp = resolve(xp_name)
    # weights least 1, gpu 3 -> normalised 0.25, 0.75; machine of LEAST case 2 (0.375) and
    # GPU case 2 (0.75): 0.25 * 0.375 + 0.75 * 0.75 = 0.65625
    policy = Policy("t", {Scorer.LEAST_ALLOCATED: 1, Scorer.GPU_PACKING: 3})
    assert policy.normalised_weights() == tuple(
        {Scorer.LEAST_ALLOCATED: 0.25, Scorer.GPU_PACKING: 0.75}.get(s, 0.0) for s in SCORER_ORDER
    )
    m = arrays(columns(xp, [(4000, 8000, 8), (4000, 8000, 8)], [(0, 6000, 4), (4000, 0, 0)]))
    req = xp.asarray(np.array([[1000, 1000, 2]], dtype=np.int64))
    got = host(kernels.combined_scores(xp, m, req, policy.normalised_weights()))
    # the second machine has no CPU free: infeasible -> -inf
    assert got[0, 0] == pytest.approx(0.65625, abs=1e-6)
    assert got[0, 1] == -np.inf
