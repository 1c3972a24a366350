"""The queue and its claims: how a scheduler takes a job, parks it, or lets it go.

A queued job has exactly one index entry: /queue/... while PENDING, /parked/... while
PARKED (docs/architecture.md, "Key schema"). A scheduler claims a job by writing
/claims/<job> bound to its lease, in a txn that compares the claim absent and the
index entry unchanged; the same txn reads the job record. The claim key's
mod_revision is the claim's fence: every commit and every claim delete compares it,
so only the holder can commit for the job or release it.

Reads stay bounded as the queue grows: a claim step reads pages of the index from
its head and stops as soon as its batch is full, so its cost is O(batch + jobs other
schedulers hold), never O(queue).

Each claim also counts itself in the index entry (`claims`); a commit that binds tasks
resets the count. A job whose entry shows `crash_limit` claims without progress has
crashed (or hung) that many schedulers: it is parked for good, with that reason,
instead of being handed to the next one.
"""

from __future__ import annotations

import zlib
from collections.abc import Container, Sequence
from concurrent.futures import Executor

from . import codec
from .index_entry import IndexEntry
from .job_states import JobEvent, allowed, apply_event
from .keys import CellKeys
from .model import JobClass
from .resources import Vector
from .store import CellStore, Delete, Get, KeyValue, ModRevisionIs, Op, Put
from .views import JobView, complete_views

__all__ = ["IndexEntry", "shard_of", "claim_jobs", "claim_entries", "release_claim", "park_job",
           "park_for_good", "list_queue", "list_parked", "adopt_orphans"]

CLAIM_PAGE = 256  # index entries read per page
MAX_CLAIM_PAGES = 16  # a claim step reads at most this many pages
DEFAULT_CRASH_LIMIT = 3  # claims without progress before a job is parked for good
HELD_PATIENCE = 4  # claim calls that must see another share's claimed entry unchanged before taking it


def list_queue(store: CellStore, keys: CellKeys, job_class: JobClass) -> list[str]:
    kvs, _ = store.get_prefix(keys.queue_prefix(job_class))
    return [keys.last_segment(kv.key) for kv in kvs]


def list_parked(store: CellStore, keys: CellKeys, job_class: JobClass) -> list[str]:
    kvs, _ = store.get_prefix(keys.parked_prefix(job_class))
    return [keys.last_segment(kv.key) for kv in kvs]


def adopt_orphans(store: CellStore, keys: CellKeys, lease_id: int, held: Container[str]) -> list[JobView]:
    """Claims bound to `lease_id` that the caller does not know it holds.

    A claim txn whose ack was lost (or a call cut short by an outage) leaves such
    orphans, and nobody else may schedule those jobs while our lease lives.
    """
    claims, _ = store.get_prefix(keys.claims_prefix)
    orphans = [kv for kv in claims if kv.lease == lease_id and keys.last_segment(kv.key) not in held]
    out: list[JobView] = []
    per_txn = max(1, store.limits.max_txn_ops)
    for start in range(0, len(orphans), per_txn):
        part = orphans[start:start + per_txn]
        reads = store.txn([], [Get(keys.job(keys.last_segment(kv.key))) for kv in part]).reads
        for ckv, r in zip(part, reads, strict=True):
            for kv in r:
                out.append(JobView(codec.decode_job(kv.key, kv.value), kv.mod_revision, ckv.mod_revision))
    return complete_views(store, keys, out)


def shard_of(job_id: str, shards: int) -> int:
    """The queue share a job falls in among `shards`: stable across processes and runs."""
    return zlib.crc32(job_id.encode()) % shards


def claim_jobs(store: CellStore, keys: CellKeys, job_class: JobClass, lease_id: int, owner: str,
               limit: int, executor: Executor | None = None, in_flight: int = 1,
               held: Container[str] = frozenset(), crash_limit: int = DEFAULT_CRASH_LIMIT,
               adopt: bool = True, share: tuple[int, int] = (0, 1),
               patience: dict[str, tuple[int, int]] | None = None) -> list[JobView]:
    """Claim up to `limit` pending jobs of a class: highest priority first, then first come.

    With `adopt`, orphans of `lease_id` are adopted first (that reads every claim key: the
    scheduler asks only after a claim call of its own was cut short). With an `executor`,
    up to `in_flight` claim txns (disjoint sets of jobs) are sent at once.

    `share` = (k, n): one of n schedulers of the class that claim side by side. Within the
    queue's first n x limit entries (what the n of them take in one round) it claims the jobs
    of its own share first (shard_of), then the rest from the head; so n schedulers claim
    disjoint jobs instead of racing for the same head, the queue is reordered by at most one
    round, and the share of a scheduler that died is taken by the others as it reaches the head.

    `patience`, the caller's memory between its calls (job id -> (index entry revision, calls
    that saw it so), kept here): with it, a job of another share is taken only once this
    caller's previous call saw its entry as it is now, that is after it sat a whole step
    unclaimed by its own scheduler; an entry that shows a claim (its count above 0: held now,
    or left by a scheduler that died) only after HELD_PATIENCE calls, since it is most likely
    held and the claim txn would fail. Schedulers that claim at the same moment then rarely
    race for each other's jobs (each such race is a failed claim txn, a round trip lost: 8
    schedulers on etcd lost 5,399 of 5,489 claim txns that way); a dead scheduler's share
    still goes, a few steps later.
    """
    out = adopt_orphans(store, keys, lease_id, held) if adopt else []
    k, n = share
    window: list[KeyValue] = []  # the first n x limit entries, for a share's first pick
    seen: dict[str, tuple[int, int]] = {}  # other shares' entries read by this call, for the next one
    after = ""

    def others_due(kvs: list[KeyValue]) -> list[KeyValue]:
        """Of `kvs`, the own share's entries and the others' whose patience ran out."""
        if patience is None or n == 1:
            return kvs
        due = []
        for kv in kvs:
            jid = keys.last_segment(kv.key)
            if shard_of(jid, n) == k:
                due.append(kv)
                continue
            rev, calls = patience.get(jid, (0, 0))
            calls = calls + 1 if rev == kv.mod_revision else 0
            if calls >= (1 if IndexEntry.decode(kv).claims == 0 else HELD_PATIENCE):
                due.append(kv)
            else:
                seen[jid] = (kv.mod_revision, calls)
        return due

    for _ in range(MAX_CLAIM_PAGES):
        if len(out) >= limit:
            break
        page = store.get_page(keys.queue_prefix(job_class), CLAIM_PAGE, after)
        if not page:
            break
        after = page[-1].key
        candidates = [kv for kv in page if keys.last_segment(kv.key) not in held]
        if n > 1 and len(window) < n * limit:
            fits = n * limit - len(window)
            window, beyond = window + candidates[:fits], candidates[fits:]
            if len(window) < n * limit and len(page) == CLAIM_PAGE:
                continue  # read on until the window is whole
            mine = [kv for kv in window if shard_of(keys.last_segment(kv.key), n) == k]
            out += claim_entries(store, keys, mine, lease_id, owner, limit - len(out), executor, in_flight,
                                 crash_limit)
            taken = {keys.last_segment(kv.key) for kv in mine}
            candidates = [kv for kv in window if keys.last_segment(kv.key) not in taken] + beyond
        out += claim_entries(store, keys, others_due(candidates), lease_id, owner, limit - len(out), executor,
                             in_flight, crash_limit)
        if len(page) < CLAIM_PAGE:
            break
    if patience is not None:
        patience.clear()
        patience.update(seen)
    return out


def claim_entries(store: CellStore, keys: CellKeys, entries: Sequence[KeyValue], lease_id: int, owner: str,
                  limit: int, executor: Executor | None = None, in_flight: int = 1,
                  crash_limit: int = DEFAULT_CRASH_LIMIT) -> list[JobView]:
    """Claim the jobs of these index entries (queue or parked), up to `limit`.

    An entry claimed by someone else, or changed meanwhile, is skipped. A job that has
    used up its crash limit is parked for good here instead of being returned.
    """
    claim_value = codec.encode_obj({"owner": owner})
    per_txn = max(1, store.limits.max_txn_ops // 3)  # success: claim put, entry put, job read

    def send(batch: list[KeyValue]):
        compares: list[ModRevisionIs] = []
        success: list[Op] = []
        failure: list[Op] = []
        for qkv in batch:
            jid = keys.last_segment(qkv.key)
            entry = IndexEntry.decode(qkv)
            bumped = IndexEntry(entry.job_id, entry.claims + 1, entry.need, entry.stuck)
            compares += [ModRevisionIs(keys.claim(jid), 0), ModRevisionIs(qkv.key, qkv.mod_revision)]
            success += [Put(keys.claim(jid), claim_value, lease_id), Put(qkv.key, bumped.encode()),
                        Get(keys.job(jid))]
            failure += [Get(keys.claim(jid)), Get(qkv.key)]
        return store.txn(compares, success, failure)

    out: list[JobView] = []
    todo = [kv for kv in entries if not IndexEntry.decode(kv).stuck]
    wave_size = in_flight if executor is not None else 1
    while todo and len(out) < limit:
        wave: list[list[KeyValue]] = []
        room = limit - len(out)
        while todo and room > 0 and len(wave) < wave_size:
            batch = todo[:min(per_txn, room)]
            todo = todo[len(batch):]
            room -= len(batch)
            wave.append(batch)
        if len(wave) > 1 and executor is not None:
            results = list(executor.map(send, wave))
        else:
            results = [send(wave[0])]
        for batch, result in zip(wave, results, strict=True):
            if result.succeeded:
                for qkv, r in zip(batch, result.reads, strict=True):
                    for kv in r:
                        view = JobView(codec.decode_job(kv.key, kv.value), kv.mod_revision, result.revision)
                        if IndexEntry.decode(qkv).claims + 1 > crash_limit:
                            for whole in complete_views(store, keys, [view]):  # a large job's shards
                                park_for_good(store, keys, whole, crash_limit)
                        else:
                            out.append(view)
                continue
            # Somebody claimed or changed part of the batch first: retry only entries still as read.
            reads = iter(result.reads)
            for qkv in batch:
                claim_now, entry_now = next(reads), next(reads)
                if not claim_now and entry_now and entry_now[0].mod_revision == qkv.mod_revision:
                    todo.append(qkv)
    return complete_views(store, keys, out)  # a large job's shards: one more read for each


def release_claim(store: CellStore, keys: CellKeys, job_id: str, claim_revision: int) -> bool:
    """Drop our claim on a job, only if it is still ours. Returns whether it was."""
    key = keys.claim(job_id)
    return store.txn([ModRevisionIs(key, claim_revision)], [Delete(key)]).succeeded


def park_job(store: CellStore, keys: CellKeys, view: JobView, reason: str, need: Vector | None,
             refusal: dict | None = None, history: dict | None = None) -> JobView | None:
    """Mark a claimed job as not placeable now, move it to the parked index, drop the claim.

    `need` is the smallest request it lacks: the scheduler retries it only once its copy
    shows that much free somewhere. Fenced: compares the job record and our claim.
    Returns the new view, or None when the job or the claim changed meanwhile, or the job
    as read can no longer be parked (placed, finished, failed or cancelled).
    """
    rec = view.record.copy()
    if not allowed(rec.status, JobEvent.PARK):
        return None
    if history is not None:  # the attempts and conflicts that led here, written with the park
        rec.history = history
    ops = apply_event(rec, JobEvent.PARK, keys, reason=reason, refusal=refusal, need=need)
    return _park_txn(store, keys, view, rec, ops)


def park_for_good(store: CellStore, keys: CellKeys, view: JobView, crash_limit: int) -> bool:
    """Park a job that crashed or hung `crash_limit` schedulers in a row: no automatic retry.
    Fenced like park_job; returns whether it was parked."""
    rec = view.record.copy()
    if not allowed(rec.status, JobEvent.PARK):
        return False
    reason = (f"claimed {crash_limit} times without progress: it crashed or hung the schedulers that "
              f"held it; parked until an operator retries it")
    ops = apply_event(rec, JobEvent.PARK, keys, reason=reason, refusal={"kind": "crash_limit", "claims": crash_limit},
                      need=None, claims=crash_limit, stuck=True)
    return _park_txn(store, keys, view, rec, ops) is not None


def _park_txn(store: CellStore, keys: CellKeys, view: JobView, rec, ops) -> JobView | None:
    jid = rec.job.id
    compares = [ModRevisionIs(keys.job(jid), view.revision), ModRevisionIs(keys.claim(jid), view.claim_revision)]
    result = store.txn(compares, [Put(keys.job(jid), codec.encode_job(rec)), *ops])
    return JobView(rec, result.revision) if result.succeeded else None
