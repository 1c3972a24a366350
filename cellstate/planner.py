"""The planner seam: what a scheduler loop submits its plans to.

A scheduler decides on its local copy and hands the plan to a planner, which commits what
the shared rule allows and says, per claim, what was written and why the rest was not
(docs/architecture.md, "The commit protocol"). `CommitEngine` is the one production
planner. The seam exists so the loop receives its planner instead of building it: a test
gives it a recording planner that wraps a real engine (tests/harness.py), the stress run
an audited engine.

It lives in cellstate because the engine does: schedulers import it, never the reverse.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from .commit import CommitResult, Plan


@runtime_checkable
class Planner(Protocol):
    def commit(self, plan: Plan) -> CommitResult:
        """Commit as much of `plan` as the conflict and transaction modes allow.

        Every claim of the plan ends in exactly one of `committed` or `conflicted` (with a
        typed Refusal). Raises StoreUnavailableError when the store could not be reached,
        and a CellError for a plan refused whole (unknown machine, gang too large, ...).
        """
        ...

    def close(self) -> None:
        """Release what the planner holds (its txn threads); it commits nothing after."""
        ...
