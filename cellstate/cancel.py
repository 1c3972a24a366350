"""Cancelling a job: CANCELLED is terminal (docs/architecture.md, "Job states").

`cancel_job` is the release protocol of cellstate/lifecycle.py with the CANCEL event:
its first txn sets CANCELLED, deletes the job's index entry and releases a first batch of
its bound tasks (allocation records updated as any release does); later txns, if the job
spans more machines than one txn holds, release the rest. A task released by a cancel
is neither done nor pending again: it is CANCELLED (job_states.task_state).

Commits in flight are fenced by the job record: every commit compares the record it
decided on, the cancel rewrote it, so the commit's failure branch reads CANCELLED and the
validator refuses every claim with JOB_NOT_SCHEDULABLE; nothing of it is written. The
claim key, if any, stays with its holder (only it deletes its claim, fenced): its next
commit finds the job not schedulable and releases the claim.

Cancelling twice is idempotent: cancelling a CANCELLED job writes nothing, except that
it finishes the releases of a cancel cut short (a crash between its txns). Cancelling a
FINISHED or FAILED job raises IllegalTransitionError, nothing written.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .job_states import JobEvent, apply_event, transition
from .keys import CellKeys
from .lifecycle import release_loop
from .model import JobRecord, JobStatus
from .store import CellStore, Delete, Put


@dataclass
class CancelResult:
    job_id: str
    revision: int = 0  # the store revision of the last write (or of the read, when nothing was written)
    already_cancelled: bool = False  # the job was CANCELLED before this call
    released: list[str] = field(default_factory=list)  # tasks this call took off their machines


def cancel_job(store: CellStore, keys: CellKeys, job_id: str, now: float, reason: str = "") -> CancelResult:
    """Cancel a job and release every task it holds. Unknown job: InvalidInputError."""
    out = CancelResult(job_id, already_cancelled=True)
    cancelling = False  # whether the txn being built is the one that cancels

    def select(rec: JobRecord) -> list[str]:
        if rec.status is not JobStatus.CANCELLED:
            transition(rec.status, JobEvent.CANCEL, job_id)  # FINISHED, FAILED: IllegalTransitionError
        return list(rec.bound)

    def apply(new: JobRecord, released: list[str]) -> list[Put | Delete]:
        nonlocal cancelling
        cancelling = new.status is not JobStatus.CANCELLED
        if cancelling:
            return apply_event(new, JobEvent.CANCEL, keys, now, reason=reason or None)
        return apply_event(new, JobEvent.TASK_LEFT, keys, now)

    def finished(new: JobRecord, released: list[str]) -> bool:
        if cancelling:
            out.already_cancelled = False
        out.released += released
        return not new.bound

    out.revision = release_loop(store, keys, job_id, select, apply, finished,
                                must_write=lambda rec: rec.status is not JobStatus.CANCELLED)
    return out
