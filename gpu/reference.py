"""Scalar pure-Python reference of every kernel: the test oracle, never the hot path.

One (machine, group) pair at a time, in float64, straight from the formulas in the
``kernels`` docstrings. Vectors are tuples of ints in RESOURCE_NAMES order.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import NamedTuple

from cellsched.cellstate import resources as res

from .policy import SCORER_ORDER, Policy, Scorer
from .spec import GPU_MODEL_LABEL, GroupSpec

GPU_DIM = res.RESOURCE_NAMES.index("gpu")


class RefMachine(NamedTuple):
    capacity: res.Vector
    used: res.Vector
    labels: Mapping[str, str] = {}
    schedulable: bool = True

    @property
    def free(self) -> res.Vector:
        return tuple(c - u for c, u in zip(self.capacity, self.used, strict=True))


def fits(free: Sequence[int], req: Sequence[int]) -> bool:
    return all(f >= r for f, r in zip(free, req, strict=True))


def eligible(machine: RefMachine, index: int, spec: GroupSpec) -> bool:
    """Label, GPU-model and avoid constraints, and schedulability (not resources)."""
    if not machine.schedulable or index in spec.avoid_machines:
        return False
    if any(machine.labels.get(k) != v for k, v in spec.labels.items()):
        return False
    return not spec.gpu_models or machine.labels.get(GPU_MODEL_LABEL) in spec.gpu_models


def feasible(machine: RefMachine, index: int, spec: GroupSpec, excluded: bool = False) -> bool:
    return not excluded and eligible(machine, index, spec) and fits(machine.free, spec.request)


def _dims(cap: Sequence[int]) -> list[int]:
    return [r for r, c in enumerate(cap) if c > 0]


def least_allocated(cap: Sequence[int], free: Sequence[int], req: Sequence[int]) -> float:
    d = _dims(cap)
    return sum((free[r] - req[r]) / cap[r] for r in d) / len(d) if d else 0.0


def most_allocated(cap: Sequence[int], free: Sequence[int], req: Sequence[int]) -> float:
    d = _dims(cap)
    return sum((cap[r] - free[r] + req[r]) / cap[r] for r in d) / len(d) if d else 0.0


def balanced_allocation(cap: Sequence[int], free: Sequence[int], req: Sequence[int]) -> float:
    d = _dims(cap)
    if not d:
        return 0.0
    u = [(cap[r] - free[r] + req[r]) / cap[r] for r in d]
    mean = sum(u) / len(u)
    return 1.0 - math.sqrt(sum((x - mean) ** 2 for x in u) / len(u))


def dot_product(cap: Sequence[int], free: Sequence[int], req: Sequence[int]) -> float:
    d = _dims(cap)
    return sum((req[r] / cap[r]) * (free[r] / cap[r]) for r in d) / len(d) if d else 0.0


def gpu_packing(cap: Sequence[int], free: Sequence[int], req: Sequence[int]) -> float:
    c, f, g = cap[GPU_DIM], free[GPU_DIM], req[GPU_DIM]
    if c == 0:
        return 1.0
    return 1.0 - (f - g) / c if g > 0 else 1.0 - f / c


SCORERS = {
    Scorer.LEAST_ALLOCATED: least_allocated,
    Scorer.MOST_ALLOCATED: most_allocated,
    Scorer.BALANCED: balanced_allocation,
    Scorer.DOT_PRODUCT: dot_product,
    Scorer.GPU_PACKING: gpu_packing,
}


def weighted_score(policy: Policy, cap: Sequence[int], free: Sequence[int], req: Sequence[int]) -> float:
    return sum(w * SCORERS[s](cap, free, req) for s, w in zip(SCORER_ORDER, policy.normalised_weights(), strict=True) if w)


def combined_score(policy: Policy, machine: RefMachine, index: int, spec: GroupSpec, excluded: bool = False) -> float:
    if not feasible(machine, index, spec, excluded):
        return -math.inf
    return weighted_score(policy, machine.capacity, machine.free, spec.request)


def topk(policy: Policy, machines: Sequence[RefMachine], spec: GroupSpec, k: int) -> list[tuple[int, float]]:
    """The k best feasible (index, score) pairs, best first, ties by lower index."""
    scored = [(combined_score(policy, m, i, spec), i) for i, m in enumerate(machines)]
    best = sorted((s, i) for s, i in scored if s != -math.inf)
    best.sort(key=lambda p: (-p[0], p[1]))
    return [(i, s) for s, i in best[:k]]


def fits_somewhere(machines: Sequence[RefMachine], spec: GroupSpec, excluded: Sequence[bool] = ()) -> bool:
    return any(feasible(m, i, spec, bool(excluded[i]) if excluded else False) for i, m in enumerate(machines))
