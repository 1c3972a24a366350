"""Committing one attempt's batch so that one bad job never stalls its class (docs/architecture.md,
"The path of one job").

The batch commits as one plan. Should that raise on something other than the store being
unreachable, it commits job by job instead, and each job whose own commit raises is handed
back with the error, for the loop to park with it as the reason.
"""

from __future__ import annotations

from collections.abc import Callable

from cellsched.cellstate.commit import CommitResult, Plan
from cellsched.cellstate.errors import StoreUnavailableError
from cellsched.cellstate.planner import Planner

from .decide import Decision


def commit_isolated(engine: Planner, plan_of: Callable[[dict[str, Decision]], Plan],
                    decisions: dict[str, Decision], on_error: Callable[[str, str], None]) -> CommitResult:
    """Commit `decisions`; a job whose own commit raises is passed to `on_error(job_id, reason)`,
    its decision replaced by one that claims nothing (so settling skips it)."""
    try:
        return engine.commit(plan_of(decisions))
    except StoreUnavailableError:
        raise
    except Exception:
        pass
    total = CommitResult()
    for jid, decision in list(decisions.items()):
        if not decision.claims:
            continue
        try:
            part = engine.commit(plan_of({jid: decision}))
        except StoreUnavailableError:
            raise
        except Exception as exc:
            decisions[jid] = Decision([], len(decision.claims), "", decision.tasks_decided)
            on_error(jid, f"scheduler error while committing: {exc!r}")
            continue
        total.add(part)
    return total
