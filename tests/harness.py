"""A recording planner for scheduler tests, after Nomad's scheduler test Harness.

`RecordingPlanner` wraps a real CommitEngine and is handed to a Scheduler as its planner
(cellstate.planner.Planner). It records every plan the scheduler submits and what came
back, so a test asserts on the plans themselves (which claims, decided on which machine
revisions), and it can be told what to do with the next plans:

- `reject_next()`: the plan is not sent. Every claim is refused with a Refusal of kind
  MACHINE_CHANGED and the result carries fresh views of the plan's machines and jobs,
  read from the store: what a commit whose every compare failed returns
  (docs/architecture.md, "The commit protocol"). Nothing is written. (Nomad's RejectPlan:
  reject the whole plan and make the scheduler plan again on refreshed state.)
- `drop_ack_next()`: the plan is committed for real, then the ack is "lost": the
  scheduler is told every claim conflicted (MACHINE_CHANGED, detail "ack dropped") and
  gets no fresh views back, as a lost ack carries none. It must find out from the store
  that its tasks were bound. This is a scheduler-level model of a lost ack: the engine
  settles a lost txn ack itself (CommitEngine._settle), so a store that drops acks tests
  the engine; this tests the loop above it when a commit's answer is wrong.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from cellsched.cellstate.clock import Clock
from cellsched.cellstate.commit import CommitEngine, CommitResult, CommitStats, Plan
from cellsched.cellstate.keys import CellKeys
from cellsched.cellstate.store import CellStore
from cellsched.cellstate.validation import Refusal, RefusalKind
from cellsched.cellstate.views import read_job_view, read_machine_views
from cellsched.schedulers.settings import SchedulerSettings

COMMIT, REJECT, DROP_ACK = "commit", "reject", "drop_ack"


@dataclass
class Submission:
    """One plan the scheduler submitted, what the harness did with it, and what came back."""

    plan: Plan
    action: str  # COMMIT, REJECT or DROP_ACK
    result: CommitResult  # what the scheduler was told
    applied: CommitResult | None  # what the engine really did; None when the plan was not sent
    revision_before: int
    revision_after: int

    @property
    def task_ids(self) -> list[str]:
        return [c.task_id for c in self.plan.claims]

    @property
    def wrote(self) -> bool:
        return self.revision_after != self.revision_before


@dataclass
class RecordingPlanner:
    engine: CommitEngine
    submissions: list[Submission] = field(default_factory=list)
    _script: deque[str] = field(default_factory=deque)

    @classmethod
    def like_scheduler(cls, store: CellStore, keys: CellKeys, settings: SchedulerSettings,
                       clock: Clock) -> RecordingPlanner:
        """Around the engine a Scheduler with these settings builds for itself."""
        return cls(CommitEngine(store, keys, settings.conflict_mode, clock, settings.txns_in_flight,
                                settings.max_tasks_per_machine))

    # -- what to do with the next plans --------------------------------------------

    def reject_next(self, n: int = 1) -> None:
        self._script.extend([REJECT] * n)

    def drop_ack_next(self, n: int = 1) -> None:
        self._script.extend([DROP_ACK] * n)

    # -- the Planner protocol ----------------------------------------------------------

    def commit(self, plan: Plan) -> CommitResult:
        action = self._script.popleft() if self._script else COMMIT
        store = self.engine.store
        before = store.current_revision()
        applied: CommitResult | None = None
        if action == REJECT:
            result = self._rejected(plan)
        else:
            applied = self.engine.commit(plan)
            result = applied if action == COMMIT else self._ack_dropped(plan, applied)
        self.submissions.append(Submission(plan, action, result, applied, before, store.current_revision()))
        return result

    def close(self) -> None:
        self.engine.close()

    # -- reading ------------------------------------------------------------------------

    def plans(self, action: str | None = None) -> list[Submission]:
        return [s for s in self.submissions if action is None or s.action == action]

    def committed_tasks(self) -> list[str]:
        """Every task the engine really committed, over all submissions, in order."""
        return [c.task_id for s in self.submissions if s.applied is not None for c in s.applied.committed]

    # -- the scripted answers ---------------------------------------------------------

    def _rejected(self, plan: Plan) -> CommitResult:
        store, keys = self.engine.store, self.engine.keys
        machines = read_machine_views(store, keys, sorted({c.machine_id for c in plan.claims}))
        jobs = {}
        for jid in {c.job_id for c in plan.claims}:
            view = read_job_view(store, keys, jid)
            if view is not None:
                jobs[jid] = view
        refused = [(c, Refusal(RefusalKind.MACHINE_CHANGED, c.machine_id, detail="plan rejected by the harness"))
                   for c in plan.claims]
        return CommitResult([], refused, machines, jobs, CommitStats(), store.current_revision())

    @staticmethod
    def _ack_dropped(plan: Plan, applied: CommitResult) -> CommitResult:
        refused = [(c, Refusal(RefusalKind.MACHINE_CHANGED, c.machine_id, detail="ack dropped by the harness"))
                   for c in plan.claims]
        stats = CommitStats()
        stats.add(applied.stats)
        stats.unknown_outcomes += 1
        return CommitResult([], refused, {}, {}, stats, 0)
