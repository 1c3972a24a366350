"""Selection: the top-k machines per task group, and the seeded pick among them.

``score_topk`` never holds more than ``memory_budget`` bytes of the T x N score matrix:
it scores groups in chunks (xp path) or not at all (fused CuPy kernel, ``cuda``). The
pick is uniform among the k best, with a generator seeded from (job id, attempt): two
schedulers that race for the same cell then spread their choices, and a decision can
be replayed exactly from its seed.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from . import kernels
from .backend import is_cupy, to_host
from .columns import MachineColumns
from .policy import Policy
from .spec import GroupSpec

DEFAULT_MEMORY_BUDGET = 256 << 20  # bytes of [T, N] temporaries the xp path may hold
# Live bytes per (group, machine) pair on the xp path: the float32 score, the
# float32 temporaries of the scorers, the bool mask and argpartition's int64 output.
BYTES_PER_PAIR = 40


def seed_from(job_id: str, attempt: int) -> int:
    """A 64-bit seed from (job id, attempt), stable across processes and machines."""
    digest = hashlib.blake2b(f"{job_id}\x00{int(attempt)}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little")


def rng_for(seed: int | tuple[str, int] | np.random.Generator) -> np.random.Generator:
    if isinstance(seed, np.random.Generator):
        return seed
    if isinstance(seed, tuple):
        seed = seed_from(*seed)
    return np.random.default_rng(int(seed))


@dataclass(frozen=True)
class TopK:
    """Per group, the k best feasible machines, best first (the order among equal scores
    is deterministic per backend, otherwise unspecified).

    ``indices`` int64[T, k] (-1 past the last feasible machine), ``scores`` float32[T, k]
    (-inf there). Host NumPy arrays.
    """

    indices: np.ndarray
    scores: np.ndarray


def chunk_rows(n_machines: int, memory_budget: int = DEFAULT_MEMORY_BUDGET) -> int:
    """How many groups to score at once so [rows, N] temporaries fit the budget."""
    return max(1, int(memory_budget) // max(1, n_machines * BYTES_PER_PAIR))


def topk_rows(xp, scores, k: int):
    """Top-k of each row of ``scores`` (float32[T, N], -inf = infeasible),
    best first: (indices int64[T, k], scores float32[T, k])."""
    t, n = scores.shape
    kk = min(k, n)
    if kk < n:
        part = xp.argpartition(-scores, kk - 1, axis=1)[:, :kk]
    else:
        part = xp.broadcast_to(xp.arange(n, dtype=xp.int64)[None, :], (t, n))
    part = xp.sort(part, axis=1)  # by index, so the stable sort below breaks ties by index
    vals = xp.take_along_axis(scores, part, axis=1)
    order = xp.argsort(-vals, axis=1, kind="stable")
    idx = xp.take_along_axis(part, order, axis=1).astype(xp.int64)
    vals = xp.take_along_axis(vals, order, axis=1)
    idx = xp.where(vals == -xp.inf, -1, idx)
    if kk < k:  # fewer machines than k: pad
        idx = xp.concatenate([idx, xp.full((t, k - kk), -1, dtype=xp.int64)], axis=1)
        vals = xp.concatenate([vals, xp.full((t, k - kk), -xp.inf, dtype=xp.float32)], axis=1)
    return idx, vals


def eligibility_table(columns: MachineColumns, groups: Sequence[GroupSpec]):
    """(masks bool[M, N] on the device, mask_id int32[T] host): one row per distinct
    constraint set; -1 for groups whose only constraint is schedulability."""
    keys: dict[tuple, int] = {}
    rows: list[np.ndarray] = []
    ids = np.full(len(groups), -1, dtype=np.int32)
    for t, g in enumerate(groups):
        if not (g.labels or g.gpu_models or g.avoid_machines):
            continue
        key = g.constraint_key
        if key not in keys:
            keys[key] = len(rows)
            rows.append(columns.eligibility(g))
        ids[t] = keys[key]
    xp = columns.xp
    masks = xp.stack(rows) if rows else xp.ones((1, len(columns)), dtype=bool)
    return masks, ids


def score_topk(
    columns: MachineColumns,
    groups: Sequence[GroupSpec],
    policy: Policy,
    *,
    k: int | None = None,
    memory_budget: int = DEFAULT_MEMORY_BUDGET,
    fused: bool | None = None,
    arrays: kernels.MachineArrays | None = None,
) -> TopK:
    """The top-k machines of every group under ``policy``, without placing anything.

    ``fused`` (default: whenever columns live on CuPy) uses the fused CUDA kernel;
    otherwise the xp kernels score ``chunk_rows`` groups at a time. ``arrays`` overrides
    the machine columns (``assign`` passes its working copy).
    """
    xp = columns.xp
    k = policy.top_k if k is None else k
    m = arrays if arrays is not None else machine_arrays(columns)
    weights = policy.normalised_weights()
    req_i = xp.asarray(np.array([g.request for g in groups], dtype=np.int64).reshape(len(groups), len(m.free_t)))
    masks, mask_id = eligibility_table(columns, groups)
    if fused is None:
        fused = is_cupy(xp)
    if fused:
        from .cuda import fused_topk  # noqa: PLC0415 - GPU path only

        s, i = fused_topk(xp, m, req_i, masks, xp.asarray(mask_id), weights, k)
        return TopK(to_host(i), to_host(s))
    out_i = np.empty((len(groups), k), dtype=np.int64)
    out_s = np.empty((len(groups), k), dtype=np.float32)
    step = chunk_rows(len(columns), memory_budget)
    for lo in range(0, len(groups), step):
        hi = min(lo + step, len(groups))
        ids = mask_id[lo:hi]
        eligible = None
        if (ids >= 0).any():
            eligible = masks[xp.asarray(np.maximum(ids, 0))]
            eligible[xp.asarray(ids < 0)] = True
        scores = kernels.combined_scores(xp, m, req_i[lo:hi], weights, eligible)
        i, s = topk_rows(xp, scores, k)
        out_i[lo:hi], out_s[lo:hi] = to_host(i), to_host(s)
    return TopK(out_i, out_s)


def machine_arrays(columns: MachineColumns) -> kernels.MachineArrays:
    return kernels.MachineArrays(columns.free_t, columns.free_ft, columns.inv_cap_t, columns.n_dims, columns.schedulable)


def pick(rng: np.random.Generator, indices: np.ndarray, k: int) -> int:
    """Uniform seeded pick among the first ``k`` valid (>= 0) entries of a best-first list;
    -1 when there is none."""
    valid = indices[:k][indices[:k] >= 0]
    if len(valid) == 0:
        return -1
    return int(valid[rng.integers(len(valid))])
