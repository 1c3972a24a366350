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

from collections.abc import Mapping
from dataclasses import replace

from cellsched.cellstate.model import Claim
from cellsched.cellstate.validation import Refusal
from cellsched.cellstate.views import JobView

from .attempts import HeldJob

MAX_CONFLICTS = 10  # the last ones, newest last


def conflict_entry(at: float, claim: Claim, why: Refusal) -> dict:
    """One refused claim: when, on which machine, and the structured reason (about 100 bytes:
    it rides on job records, so no task id, no capacity)."""
    reason = why.to_obj()
    reason.pop("machine_id", None)  # said once, as "machine"
    reason.pop("capacity", None)
    return {"at": round(at, 3), "machine": why.machine_id or claim.machine_id, **reason}


def merged(stored: dict | None, attempts: int, conflicts: list[dict], always: bool = False) -> dict | None:
    """The record's history with `attempts` more attempts and `conflicts` appended; None when
    it would say only "one attempt, no conflicts", unless `always` (a park says it anyway:
    a parked record has no placement time to tell that it was tried)."""
    total = (stored or {}).get("attempts", 0) + attempts
    last = ((stored or {}).get("conflicts", []) + conflicts)[-MAX_CONFLICTS:]
    if total <= 1 and not last and not always:
        return None
    return {"attempts": total, "conflicts": last}


def view_with_history(held: HeldJob) -> JobView:
    """The view a placement write builds on: its record carries the attempts and conflicts
    not yet written; the held view itself when there is nothing new to say."""
    rec = held.view.record
    history = merged(rec.history, held.unwritten_attempts, held.unwritten_conflicts)
    if history == rec.history:
        return held.view
    return JobView(replace(rec, history=history), held.view.revision, held.view.claim_revision,
                   held.view.claim)


def note_commit(held: Mapping[str, HeldJob], committed: Mapping[str, int],
                conflicted: list[tuple[Claim, Refusal]], now: float) -> None:
    """After a commit: what a landed write carried is written; its conflicts wait."""
    for jid in committed:
        h = held.get(jid)
        if h is not None and merged(h.view.record.history, h.unwritten_attempts, h.unwritten_conflicts) is not None:
            h.unwritten_attempts, h.unwritten_conflicts = 0, []
    for c, why in conflicted:
        h = held.get(c.job_id)
        if h is not None:
            h.unwritten_conflicts = (h.unwritten_conflicts + [conflict_entry(now, c, why)])[-MAX_CONFLICTS:]


def settled_view(held: HeldJob, fresh: JobView, written: bool) -> JobView:
    """The commit's fresh view of a job, without the history _plan merged in unless it landed."""
    if written or fresh.record.history == held.view.record.history:
        return fresh
    return JobView(replace(fresh.record, history=held.view.record.history), fresh.revision, fresh.claim_revision,
                   fresh.claim)


def park_history(held: HeldJob) -> dict | None:
    """The history a park writes: always said, since a parked record has no placement time."""
    return merged(held.view.record.history, held.unwritten_attempts, held.unwritten_conflicts, always=True)
