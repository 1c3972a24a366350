"""What the scheduler loop keeps per job and per attempt (schedulers/core.py): the jobs it
holds a claim on, what prepare() decided, and what complete() did."""

from __future__ import annotations

from dataclasses import dataclass, field

from cellsched.cellstate.model import Claim
from cellsched.cellstate.views import JobView

from .decide import Decision


@dataclass
class HeldJob:
    """A job this scheduler holds a claim on, across attempts."""

    view: JobView
    claim_revision: int = 0  # our claim key's mod_revision: the fence every commit and release compares
    claim: str = ""  # the id of that claim key (cellstate.claims): one per claim txn, shared by its jobs
    attempts: int = 0  # by this scheduler, including earlier claims of the job
    no_progress: int = 0  # conflicted attempts in a row that placed nothing
    # Seen since the record last carried its history (schedulers/history.py): merged into the
    # next placement or park write, then cleared.
    unwritten_attempts: int = 0
    unwritten_conflicts: list[dict] = field(default_factory=list)


@dataclass
class Attempt:
    """What prepare() decided; complete() commits it."""

    started_at: float
    think_s: float
    lease_id: int
    decisions: dict[str, Decision] = field(default_factory=dict)  # job id -> decision
    assumed: list[Claim] = field(default_factory=list)  # claims this attempt assumed in the cache
    crashed: dict[str, str] = field(default_factory=dict)  # job id -> the error that stopped its decision

    @property
    def claims(self) -> list[Claim]:
        return [c for d in self.decisions.values() for c in d.claims]


@dataclass
class Outcome:
    """What complete() did, for drivers and tests."""

    committed: list[Claim] = field(default_factory=list)
    placed: list[str] = field(default_factory=list)  # job ids fully placed by this commit
    parked: dict[str, str] = field(default_factory=dict)  # job id -> reason
    retrying: list[str] = field(default_factory=list)
    lease_lost: bool = False
