"""Scoring kernels, written once against the array module ``xp`` (NumPy or CuPy).

Shapes: T task groups, N machines, R resources (``cellstate.resources.RESOURCE_NAMES``).
Machine columns are ``[R, N]`` (``MachineArrays``), requests ``[T, R]``; every kernel
returns ``[T, N]``. Resources are int64 in base units and fit checks are exact integer
comparisons; scores are float32 in [0, 1].

Notation, per machine n and resource r: ``cap_r``, ``free_r`` (before placement) and
the group's request ``req_r``. ``left_r = (free_r - req_r) / cap_r`` is the fraction left
free after placing one task, ``u_r = 1 - left_r`` the fraction in use. Resources with
``cap_r = 0`` drop out of every average, as in Kubernetes (``D`` = resources with
``cap_r > 0``). Kubernetes scales its scores to 0..100; these stay in 0..1.

``reference`` holds the scalar pure-Python twin of each kernel, used as the test oracle;
``cuda`` holds a fused CuPy kernel computing ``combined_scores`` plus top-k in one pass.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from cellsched.cellstate import resources as res

from .policy import SCORER_ORDER, Scorer

GPU_DIM = res.RESOURCE_NAMES.index("gpu")


# A NumPy or CuPy array: CuPy ships no type stubs, so the kernels' arrays are untyped.
XpArray = Any


class MachineArrays(NamedTuple):
    """The per-machine inputs of the kernels, all ``xp`` arrays."""

    free_t: XpArray  # int64[R, N]
    free_ft: XpArray  # float32[R, N], free as float for the scores
    inv_cap_t: XpArray  # float32[R, N], 1 / cap_r (0 where cap_r = 0)
    n_dims: XpArray  # float32[N], |D|
    schedulable: XpArray  # bool[N]


def fit_mask(xp, m: MachineArrays, req_i):
    """fits[t, n] = AND_r ( free_r[n] >= req_r[t] ), exact in int64."""
    ok = m.free_t[0][None, :] >= req_i[:, 0:1]
    for r in range(1, m.free_t.shape[0]):
        ok &= m.free_t[r][None, :] >= req_i[:, r : r + 1]
    return ok


def feasibility_mask(xp, m: MachineArrays, req_i, eligible=None):
    """feasible[t, n] = schedulable[n] AND eligible[t, n] AND fits[t, n].

    ``eligible`` ([T, N], [N] or None) carries label, GPU-model and anti-affinity
    constraints and machines excluded by different-machines (``columns.eligibility``).
    """
    ok = fit_mask(xp, m, req_i)
    ok &= m.schedulable[None, :]
    if eligible is not None:
        ok &= eligible if eligible.ndim == 2 else eligible[None, :]
    return ok


def _left(xp, m: MachineArrays, req_f, r: int):
    # (free_r - req_r) / cap_r, as float32; 0 where cap_r = 0.
    return (m.free_ft[r][None, :] - req_f[:, r : r + 1]) * m.inv_cap_t[r][None, :]


def _inv_dims(xp, m: MachineArrays):
    return xp.where(m.n_dims > 0, 1 / xp.maximum(m.n_dims, 1), 0).astype(xp.float32)


def least_allocated(xp, m: MachineArrays, req_f):
    """Kubernetes LeastAllocated: score = (1/|D|) * sum_{r in D} (free_r - req_r) / cap_r."""
    total = _left(xp, m, req_f, 0)
    for r in range(1, m.free_ft.shape[0]):
        total += _left(xp, m, req_f, r)
    return total * _inv_dims(xp, m)[None, :]


def most_allocated(xp, m: MachineArrays, req_f):
    """Kubernetes MostAllocated: score = (1/|D|) * sum_{r in D} (cap_r - free_r + req_r) / cap_r.

    With equal resource weights this is 1 - least_allocated (0 when D is empty).
    """
    return xp.where(m.n_dims[None, :] > 0, 1 - least_allocated(xp, m, req_f), 0).astype(xp.float32)


def balanced_allocation(xp, m: MachineArrays, req_f):
    """Kubernetes BalancedAllocation: score = 1 - std_{r in D}(u_r), population std.

    u_r = (cap_r - free_r + req_r) / cap_r; with two resources std = |u_cpu - u_mem| / 2.
    """
    inv_d = _inv_dims(xp, m)[None, :]
    used = [(1 - _left(xp, m, req_f, r)) * (m.inv_cap_t[r][None, :] > 0) for r in range(m.free_ft.shape[0])]
    mean = sum(used[1:], used[0]) * inv_d
    var = sum(((u - mean) ** 2) * (m.inv_cap_t[r][None, :] > 0) for r, u in enumerate(used)) * inv_d
    return xp.where(m.n_dims[None, :] > 0, 1 - xp.sqrt(var), 0).astype(xp.float32)


def dot_product(xp, m: MachineArrays, req_f):
    """Tetris alignment: score = (1/|D|) * sum_{r in D} (req_r / cap_r) * (free_r / cap_r).

    Both vectors are normalised by the machine's capacity; free is taken before placement,
    so large requests go where much of the same resource is free.
    """
    total = None
    for r in range(m.free_ft.shape[0]):
        term = (req_f[:, r : r + 1] * m.inv_cap_t[r][None, :]) * (m.free_ft[r] * m.inv_cap_t[r])[None, :]
        total = term if total is None else total + term
    return total * _inv_dims(xp, m)[None, :]


def gpu_packing(xp, m: MachineArrays, req_f):
    """GPU packing, against fragmenting multi-GPU machines (g = req_gpu):

        cap_gpu = 0:           1                                   (CPU-only machine)
        g > 0:                 1 - (free_gpu - g) / cap_gpu         (best fit: fewest GPUs left idle)
        g = 0, cap_gpu > 0:    1 - free_gpu / cap_gpu               (keep free GPUs for GPU tasks)
    """
    inv_g = m.inv_cap_t[GPU_DIM][None, :]
    free_g = m.free_ft[GPU_DIM][None, :]
    g = req_f[:, GPU_DIM : GPU_DIM + 1]
    score = xp.where(g > 0, 1 - (free_g - g) * inv_g, 1 - free_g * inv_g)
    return xp.where(inv_g > 0, score, 1).astype(xp.float32)


KERNELS = {
    Scorer.LEAST_ALLOCATED: least_allocated,
    Scorer.MOST_ALLOCATED: most_allocated,
    Scorer.BALANCED: balanced_allocation,
    Scorer.DOT_PRODUCT: dot_product,
    Scorer.GPU_PACKING: gpu_packing,
}


def weighted_scores(xp, m: MachineArrays, req_f, weights: tuple[float, ...]):
    """Weighted combination: score = sum_s w_s * score_s, with sum_s w_s = 1 (SCORER_ORDER)."""
    total = xp.zeros((req_f.shape[0], m.free_ft.shape[1]), dtype=xp.float32)
    for scorer, w in zip(SCORER_ORDER, weights, strict=True):
        if w:
            total += xp.float32(w) * KERNELS[scorer](xp, m, req_f)
    return total


def combined_scores(xp, m: MachineArrays, req_i, weights: tuple[float, ...], eligible=None):
    """weighted_scores where feasibility_mask holds, -inf elsewhere: float32[T, N]."""
    req_f = req_i.astype(xp.float32)
    scores = weighted_scores(xp, m, req_f, weights)
    return xp.where(feasibility_mask(xp, m, req_i, eligible), scores, xp.float32(-xp.inf))
