"""Scoring policies: which scorers run, with what weight, and how the pick is made.

A policy is data, like Kubernetes' scoring strategy table: a weight per ``Scorer`` and
a ``Selection`` mode. The presets below are the ones the schedulers and the packing
benchmark use; callers may build their own.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from enum import Enum

from cellsched.cellstate.errors import InvalidInputError

from .home import WHOLE_CELL, Home


class Scorer(Enum):
    """Per-(group, machine) scores in [0, 1]; the formulas live in ``kernels``."""

    LEAST_ALLOCATED = "least_allocated"
    MOST_ALLOCATED = "most_allocated"
    BALANCED = "balanced"
    DOT_PRODUCT = "dot_product"
    GPU_PACKING = "gpu_packing"


# The order the fused CUDA kernel takes its weights in.
SCORER_ORDER: tuple[Scorer, ...] = tuple(Scorer)


class Selection(Enum):
    TOP_K = "top_k"  # uniform seeded pick among the k best-scoring feasible machines
    RANDOM_FIT = "random_fit"  # Omega's randomised first fit: any feasible machine, scores ignored


@dataclass(frozen=True)
class Policy:
    name: str
    weights: Mapping[Scorer, float] = field(default_factory=dict)
    selection: Selection = Selection.TOP_K
    top_k: int = 8
    # Where the picks are drawn from first (gpu/home.py): parallel schedulers get disjoint
    # homes so their commits touch disjoint machines; the whole cell is the fallback.
    home: Home = WHOLE_CELL

    def __post_init__(self) -> None:
        weights = {Scorer(s): float(w) for s, w in dict(self.weights).items() if float(w) != 0.0}
        if any(w < 0 for w in weights.values()):
            raise InvalidInputError(f"policy {self.name!r}: weights must be non-negative")
        if not 1 <= self.top_k <= 32:
            raise InvalidInputError(f"policy {self.name!r}: top_k must be in 1..32 (the fused kernel's limit)")
        if not isinstance(self.home, Home):
            raise InvalidInputError(f"policy {self.name!r}: home must be a gpu.Home, got {self.home!r}")
        object.__setattr__(self, "weights", weights)

    def at_home(self, index: int, count: int) -> Policy:
        """This policy, drawing first from home ``index`` of ``count`` (1: the whole cell)."""
        return replace(self, home=Home(index, count))

    def normalised_weights(self) -> tuple[float, ...]:
        """Weights in SCORER_ORDER, summing to 1 (all zero when the policy has none)."""
        total = sum(self.weights.values())
        return tuple((self.weights.get(s, 0.0) / total) if total else 0.0 for s in SCORER_ORDER)


# Kubernetes' default: spread load, and keep each machine's resources in proportion.
SPREAD = Policy("spread", {Scorer.LEAST_ALLOCATED: 1.0, Scorer.BALANCED: 1.0})
# Bin packing: fill the fullest machine that still fits.
PACK = Policy("pack", {Scorer.MOST_ALLOCATED: 1.0, Scorer.BALANCED: 1.0})
# Tetris (Grandl et al., SIGCOMM'14): align the request with the machine's free vector.
TETRIS = Policy("tetris", {Scorer.DOT_PRODUCT: 1.0})
# GPU jobs: keep whole multi-GPU machines free, otherwise pack.
GPU_PACK = Policy("gpu_pack", {Scorer.GPU_PACKING: 2.0, Scorer.MOST_ALLOCATED: 1.0})
# Omega's baseline.
RANDOM_FIRST_FIT = Policy("random_first_fit", selection=Selection.RANDOM_FIT)

PRESETS: dict[str, Policy] = {p.name: p for p in (SPREAD, PACK, TETRIS, GPU_PACK, RANDOM_FIRST_FIT)}
