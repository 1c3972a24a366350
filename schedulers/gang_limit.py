"""A gang wider than one txn, refused at decide time with a reason (docs/architecture.md,
"The commit protocol"): a gang commits in one txn (no reservation protocol yet), so a decision that
spans more machines than one txn holds would make the engine refuse the whole batch."""

from __future__ import annotations

from cellsched.cellstate.codec import is_sharded
from cellsched.cellstate.commit import max_gang_machines
from cellsched.cellstate.model import TransactionMode

from .decide import Decision


def fit_gang_in_one_txn(rec, max_txn_ops: int, decision: Decision) -> Decision:
    if rec.job.mode is not TransactionMode.ALL_OR_NOTHING or not decision.claims:
        return decision
    spans = len({c.machine_id for c in decision.claims})
    widest = max_gang_machines(max_txn_ops, is_sharded(rec.job))
    if spans <= widest:
        return decision
    return Decision([], len(decision.claims),
                    f"gang spans {spans} machines; one txn holds at most {widest} "
                    f"with max_txn_ops={max_txn_ops}", decision.tasks_decided)
