"""Retention and compaction: what keeps a long run under etcd's space quota.

Terminal jobs (FINISHED, FAILED, CANCELLED) stay readable for a retention period, then,
once no task of theirs is left on a machine, are deleted, each delete compared against the record it judged so a job that changed
meanwhile is left alone. The jobs prefix is read in pages and a sweep does a bounded
amount of work per call, resuming from a cursor (the last key it looked at): a cell
with millions of retained jobs costs each housekeeping tick the same.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from . import codec
from .errors import CompactedError, CorruptValueError, InvalidInputError
from .job_states import JobEvent, allowed, apply_event
from .keys import CellKeys
from .store import CellStore, Delete, KeyValue, ModRevisionIs

PAGE_SIZE = 256
PAGES_PER_STEP = 4


def compact_history(store: CellStore, keep_revisions: int) -> int | None:
    """Compact the store's history, keeping the last `keep_revisions` revisions for watchers.

    Run on a schedule so a long run stays under etcd's space quota. Returns the
    compaction revision, or None when there is nothing to compact.
    """
    target = store.current_revision() - keep_revisions
    if target <= 1:
        return None
    try:
        store.compact(target)
    except CompactedError:
        return None
    return target


def holds_tasks(rec) -> bool:
    """Whether some task of the job still sits on a machine. A FAILED or CANCELLED job can:
    the tasks that were running when it failed run on, and a cancel cut short has not
    released them all yet. Its record accounts for them, so it is kept until they leave
    (a sharded record read alone carries the count)."""
    return bool(rec.bound) if rec.loaded else rec.shard_counts[0] > 0


def _expired(kv: KeyValue, now: float, retention_s: float) -> str | None:
    """The job id if this record may be purged (terminal, holding no task) and is past
    retention, else None."""
    rec = codec.decode_job(kv.key, kv.value)
    if allowed(rec.status, JobEvent.PURGE) and rec.finished_at is not None \
            and rec.finished_at + retention_s <= now and not holds_tasks(rec):
        return rec.job.id
    return None


def purge_job(store: CellStore, keys: CellKeys, kv: KeyValue, jid: str) -> bool:
    """Delete a job record read as `kv`, and its binding shards first, each txn guarded by
    the record's revision (a record changed since the read is left alone). PURGE is a job
    event: a record that is not terminal raises IllegalTransitionError, nothing deleted; one
    whose tasks still sit on machines is left alone (False): deleting it would orphan them."""
    rec = codec.decode_job(kv.key, kv.value)
    if holds_tasks(rec):
        return False
    ops = apply_event(rec, JobEvent.PURGE, keys)  # terminal jobs hold no index entry: no ops today
    shard_keys = [s.key for s in store.get_prefix(keys.bind_prefix(jid))[0]]
    guard = [ModRevisionIs(kv.key, kv.mod_revision)]
    per_txn = max(1, store.limits.max_txn_ops - 1)
    for start in range(0, len(shard_keys), per_txn):
        if not store.txn(guard, [Delete(k) for k in shard_keys[start:start + per_txn]]).succeeded:
            return False
    return store.txn(guard, [*ops, Delete(kv.key)]).succeeded


@dataclass
class RetentionSweep:
    """Walks the jobs prefix a few pages per step, deleting terminal jobs past retention."""

    page_size: int = PAGE_SIZE
    pages_per_step: int = PAGES_PER_STEP
    cursor: str = ""  # last key looked at; "" starts at the beginning of the prefix
    sweeps: int = 0  # full passes completed
    corrupt: int = 0  # records that could not be decoded: skipped, never deleted

    def __post_init__(self) -> None:
        if self.page_size < 1 or self.pages_per_step < 1:
            raise InvalidInputError(f"retention sweep needs page_size and pages_per_step >= 1, "
                                    f"not {self.page_size} and {self.pages_per_step}")

    def step(self, store: CellStore, keys: CellKeys, now: float, retention_s: float,
             on_purged: Callable[[str], None]) -> bool:
        """Look at up to page_size * pages_per_step records from the cursor; `on_purged` gets
        each deleted job id as it goes (so a step cut short by an error loses no report).
        Returns whether the step reached the end of the prefix (the next starts over)."""
        for _ in range(self.pages_per_step):
            page = store.get_page(keys.jobs_prefix, self.page_size, self.cursor)
            for kv in page:
                try:
                    jid = _expired(kv, now, retention_s)
                except CorruptValueError:
                    self.corrupt += 1  # the invariant checker reports it; retention must move on
                    jid = None
                if jid is not None and purge_job(store, keys, kv, jid):
                    on_purged(jid)
                self.cursor = kv.key
            if len(page) < self.page_size:
                self.cursor = ""
                self.sweeps += 1
                return True
        return False


def purge_finished(store: CellStore, keys: CellKeys, now: float, retention_s: float,
                   page_size: int = PAGE_SIZE) -> list[str]:
    """One full pass: delete every terminal job past retention. Returns their ids.

    Reads stay paged; the work is not bounded. The housekeeper uses RetentionSweep."""
    purged: list[str] = []
    sweep = RetentionSweep(page_size=page_size)
    while not sweep.step(store, keys, now, retention_s, purged.append):
        pass
    return purged
