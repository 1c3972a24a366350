"""A job's scheduling history on its record: how many attempts the schedulers made and its
last conflicts, for the explanation (GET /v1/jobs/{id}/explanation, docs/architecture.md,
"Job states").

Nothing here writes. A scheduler keeps what its attempts saw since the record last carried
it (HeldJob.unwritten_attempts and unwritten_conflicts) and merges that into the record it
hands to the placement or park write, so the history costs no write of its own; a conflicted
txn wrote nothing, so its conflicts wait for the next write that lands. A record says
nothing (None) while all there is to say is one attempt without conflicts: the common case
pays no bytes.
"""

from __future__ import annotations

from cellsched.cellstate.model import Claim
from cellsched.cellstate.validation import Refusal

MAX_CONFLICTS = 10  # the last ones, newest last


def conflict_entry(at: float, claim: Claim, why: Refusal) -> dict:
    """One refused claim: when, on which machine, and the structured reason."""
    reason = why.to_obj()
    reason.pop("machine_id", None)  # said once, as "machine"
    return {"at": round(at, 3), "machine": why.machine_id or claim.machine_id, "task": claim.task_id, **reason}


def merged(stored: dict | None, attempts: int, conflicts: list[dict], always: bool = False) -> dict | None:
    """The record's history with `attempts` more attempts and `conflicts` appended; None when
    it would say only "one attempt, no conflicts", unless `always` (a park says it anyway:
    a parked record has no placement time to tell that it was tried)."""
    total = (stored or {}).get("attempts", 0) + attempts
    last = ((stored or {}).get("conflicts", []) + conflicts)[-MAX_CONFLICTS:]
    if total <= 1 and not last and not always:
        return None
    return {"attempts": total, "conflicts": last}
