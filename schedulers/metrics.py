"""Omega's scheduler metrics (Schwarzkopf et al. 2013, §4-5), as plain data.

- busyness: fraction of the scheduler's lifetime spent deciding and committing;
- conflict fraction: conflicted claims per successful txn (Omega's "conflicts per
  successful transaction"), and the fraction of txns that failed their compares;
- job wait time: submit -> first attempt, and submit -> fully placed (p50, p99);
- useful vs wasted decision time: decision time whose claims committed vs conflicted;
- attempts per job until it was fully placed.

All times come from the scheduler's Clock, so they are simulated seconds in a
simulation and wall seconds otherwise.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from cellsched.cellstate.plan import CommitStats


def percentile(values: list[float], p: float) -> float | None:
    """Nearest-rank percentile (no interpolation, so the value is one that happened)."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100.0 * len(ordered)))
    return ordered[rank - 1]


@dataclass
class SchedulerMetrics:
    started_at: float
    busy_s: float = 0.0
    useful_decision_s: float = 0.0
    wasted_decision_s: float = 0.0
    no_claim_decision_s: float = 0.0  # decisions that found nowhere to put anything
    iterations: int = 0  # step()s that did work
    commits: CommitStats = field(default_factory=CommitStats)
    committed_claims: int = 0
    conflicted_claims: int = 0
    jobs_placed: int = 0
    tasks_placed: int = 0
    jobs_parked: int = 0
    jobs_parked_no_progress: int = 0  # parked after max_retries conflicted attempts
    lease_losses: int = 0
    store_errors: int = 0  # iterations cut short by an unreachable store
    loop_errors: int = 0  # iterations cut short by anything else (a bug; after 5 in a row the loop exits)
    jobs_lost_to_lease: int = 0
    wait_first_attempt_s: list[float] = field(default_factory=list)
    wait_placed_s: list[float] = field(default_factory=list)
    attempts_per_job: list[int] = field(default_factory=list)

    # -- recording ------------------------------------------------------------

    def record_decision(self, decision_s: float, committed: int, conflicted: int) -> None:
        """Split one attempt's decision time by the share of its claims that committed."""
        claims = committed + conflicted
        if claims == 0:
            self.no_claim_decision_s += decision_s
            return
        self.useful_decision_s += decision_s * committed / claims
        self.wasted_decision_s += decision_s * conflicted / claims

    def record_commit(self, stats: CommitStats, committed: int, conflicted: int) -> None:
        self.commits.add(stats)
        self.committed_claims += committed
        self.conflicted_claims += conflicted
        self.tasks_placed += committed

    def record_placed(self, submitted_at: float, placed_at: float, attempts: int) -> None:
        self.jobs_placed += 1
        self.wait_placed_s.append(placed_at - submitted_at)
        self.attempts_per_job.append(attempts)

    # -- reading --------------------------------------------------------------

    @property
    def successful_txns(self) -> int:
        return self.commits.txns - self.commits.conflicted_txns

    def snapshot(self, now: float) -> dict:
        lifetime = now - self.started_at
        decided = self.useful_decision_s + self.wasted_decision_s
        return {
            "busyness": self.busy_s / lifetime if lifetime > 0 else 0.0,
            "busy_s": self.busy_s,
            "lifetime_s": lifetime,
            "iterations": self.iterations,
            "conflict_fraction": self.conflicted_claims / self.successful_txns if self.successful_txns else 0.0,
            "failed_txn_fraction": self.commits.conflicted_txns / self.commits.txns if self.commits.txns else 0.0,
            "txns": self.commits.txns,
            "failed_txns": self.commits.conflicted_txns,
            "unknown_outcomes": self.commits.unknown_outcomes,
            "recommitted_claims": self.commits.recommitted,
            "committed_claims": self.committed_claims,
            "conflicted_claims": self.conflicted_claims,
            "useful_decision_s": self.useful_decision_s,
            "wasted_decision_s": self.wasted_decision_s,
            "no_claim_decision_s": self.no_claim_decision_s,
            "wasted_fraction": self.wasted_decision_s / decided if decided else 0.0,
            "jobs_placed": self.jobs_placed,
            "tasks_placed": self.tasks_placed,
            "jobs_parked": self.jobs_parked,
            "jobs_parked_no_progress": self.jobs_parked_no_progress,
            "lease_losses": self.lease_losses,
            "store_errors": self.store_errors,
            "loop_errors": self.loop_errors,
            "jobs_lost_to_lease": self.jobs_lost_to_lease,
            "wait_first_attempt_p50_s": percentile(self.wait_first_attempt_s, 50),
            "wait_first_attempt_p99_s": percentile(self.wait_first_attempt_s, 99),
            "wait_placed_p50_s": percentile(self.wait_placed_s, 50),
            "wait_placed_p99_s": percentile(self.wait_placed_s, 99),
            "attempts_per_job_mean": (sum(self.attempts_per_job) / len(self.attempts_per_job)
                                      if self.attempts_per_job else None),
            "attempts_per_job_max": max(self.attempts_per_job, default=None),
        }
