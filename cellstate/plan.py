"""What the commit engine (cellstate/commit.py) takes and gives back: a plan of claims with
the views and fences they rest on, and the result of committing it (docs/architecture.md,
"The commit protocol")."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

from .model import Claim
from .validation import Refusal
from .views import JobView, MachineView


@dataclass
class CommitStats:
    txns: int = 0
    conflicted_txns: int = 0  # txns whose compares failed
    unknown_outcomes: int = 0
    recommitted: int = 0  # RESOURCE_FIT claims on a changed machine that still fit

    def add(self, other: CommitStats) -> None:
        self.txns += other.txns
        self.conflicted_txns += other.conflicted_txns
        self.unknown_outcomes += other.unknown_outcomes
        self.recommitted += other.recommitted


@dataclass
class CommitResult:
    committed: list[Claim] = field(default_factory=list)
    conflicted: list[tuple[Claim, Refusal]] = field(default_factory=list)  # claim, why not written
    machines: dict[str, MachineView] = field(default_factory=dict)  # fresh views of every touched machine
    jobs: dict[str, JobView] = field(default_factory=dict)  # fresh views of every touched job
    stats: CommitStats = field(default_factory=CommitStats)
    revision: int = 0

    def add(self, part: CommitResult) -> None:
        """Fold in the result of another commit (a chunk of a wave, or one job's own commit)."""
        self.committed += part.committed
        self.conflicted += part.conflicted
        self.machines.update(part.machines)
        self.jobs.update(part.jobs)
        self.stats.add(part.stats)
        self.revision = max(self.revision, part.revision)


class Fence(NamedTuple):
    """A job's fence: the planner's claim on it (cellstate/claims.py), by id and mod_revision."""

    claim: str
    revision: int

    @classmethod
    def of(cls, view: JobView) -> Fence:
        """The fence of a view claim_jobs returned."""
        return cls(view.claim, view.claim_revision)


@dataclass
class Plan:
    claims: list[Claim]
    machines: dict[str, MachineView]
    jobs: dict[str, JobView]
    # job id -> the planner's claim on it. Every txn compares the claim key's mod_revision, so
    # only the holder of a job's claim can commit for the job (a fence); jobs absent here
    # are not fenced (tools and tests that plan without claiming).
    fences: dict[str, Fence] = field(default_factory=dict)
