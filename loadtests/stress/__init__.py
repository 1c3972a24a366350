"""Seeded, randomized concurrency stress harness for the scheduler core.

    python -m loadtests.stress --schedulers 8 --seconds 120 [--seed N] [--backend memory|etcd] [--json]
"""

from .harness import MIN_CONFLICTS, MIN_EACH_FAULT, run_stress

__all__ = ["MIN_CONFLICTS", "MIN_EACH_FAULT", "run_stress"]
