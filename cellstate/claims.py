"""The queue and its claims: how a scheduler takes a job, parks it, or lets it go.

A queued job has exactly one index entry: /queue/... while PENDING, /parked/... while
PARKED (docs/architecture.md, "Key schema"). A scheduler claims jobs many at a time: one
claim txn writes one key, /claims/<claim id>, bound to its lease, and names that claim as
the holder in the index entry of every job it takes. The txn compares each entry
unchanged and, for an entry that names an earlier holder, that holder's claim key gone
(its scheduler's lease expired, or it let the job go); the same txn reads the job
records. The claim key's mod_revision is the fence: every commit and park for one of its
jobs compares it, so only the holder can commit for a job. A claim key is never rewritten;
its holder deletes it once every job it took is placed, parked or let go, and the lease
takes it with the scheduler. One key per claim txn instead of one per job: a placed job
costs its entry's claim write, its record, its entry's delete and its allocations; a job of a
queue segment (cellstate/queue_segments.py: one entry for the jobs of one submission txn,
taken whole) its record and allocations, and a share of its segment's claim write and delete.

Reads stay bounded as the queue grows: a claim step reads pages of the index from
its head and stops as soon as its batch is full, so its cost is O(batch + jobs other
schedulers hold), never O(queue).

Each claim also counts itself in the index entry (`claims`); a commit that binds tasks
resets the count. A job whose entry shows `crash_limit` claims without progress has
crashed (or hung) that many schedulers: it is parked for good, with that reason,
instead of being handed to the next one.
"""

from __future__ import annotations

import itertools
import zlib
from collections.abc import Container, Sequence
from concurrent.futures import Executor

from . import codec, queue_segments
from .claim_reads import claim_holders, claimed_jobs, list_parked, list_queue
from .index_entry import IndexEntry, listed_count
from .job_states import JobEvent, allowed, apply_event
from .keys import CellKeys
from .model import JobClass
from .orphans import adopt_orphans
from .resources import Vector
from .store import CellStore, Get, KeyValue, ModRevisionIs, Op, Put
from .views import JobView, complete_views

__all__ = ["IndexEntry", "Patience", "shard_of", "claim_jobs", "claim_entries", "release_claim",
           "park_job", "park_for_good", "list_queue", "list_parked", "adopt_orphans", "claimed_jobs", "claim_holders",
           "new_claim_id"]

CLAIM_PAGE = 256  # index entries read per page, at most
FIRST_CLAIM_PAGE = 8  # the first page: a queue segment lists up to a claim txn's worth of jobs
MAX_CLAIM_PAGES = 17  # a claim step reads at most this many pages (a first small one, then 16 whole)
DEFAULT_CRASH_LIMIT = 3  # claims without progress before a job is parked for good
HELD_PATIENCE = 4  # claim calls that must see another share's claimed entry unchanged before taking it
# A claimer's memory of other shares' entries between its calls (claim_jobs' `patience`): job id ->
# (the entry's mod_revision, calls that saw it so, whether it counts no claim; None: not decoded yet).
Patience = dict[str, tuple[int, int, bool | None]]


def new_claim_id(lease_id: int) -> str:
    """A claim key's id, unique in the cell: the lease is the cell's (one per scheduler life),
    the count this process's (claim txns of one lease may go from several threads)."""
    return f"{lease_id:x}.{next(_CLAIM_SEQ)}"


_CLAIM_SEQ = itertools.count(1)


def _claim_value(owner: str, job_ids: list[str]) -> bytes:
    return codec.encode_obj({"owner": owner, "jobs": job_ids})


def shard_of(job_id: str, shards: int) -> int:
    """The queue share a job falls in among `shards`: stable across processes and runs."""
    return zlib.crc32(job_id.encode()) % shards


def claim_jobs(store: CellStore, keys: CellKeys, job_class: JobClass, lease_id: int, owner: str,
               limit: int, executor: Executor | None = None, in_flight: int = 1,
               held: Container[str] = frozenset(), crash_limit: int = DEFAULT_CRASH_LIMIT,
               adopt: bool = True, share: tuple[int, int] = (0, 1),
               patience: Patience | None = None, overshoot: bool = True) -> list[JobView]:
    """Claim up to `limit` pending jobs of a class: highest priority first, then first come.
    Queue segments go whole; with `overshoot` (the caller holds nothing) the first may go
    past `limit` (claim_entries).

    With `adopt`, orphans of `lease_id` are adopted first (that reads every claim key: the
    scheduler asks only after a claim call of its own was cut short). With an `executor`,
    up to `in_flight` claim txns (disjoint sets of jobs) are sent at once.

    `share` = (k, n): one of n schedulers of the class that claim side by side. Within the
    queue's first n x limit entries (what the n of them take in one round) it claims the jobs
    of its own share first (shard_of), then the rest from the head; so n schedulers claim
    disjoint jobs instead of racing for the same head, the queue is reordered by at most one
    round, and the share of a scheduler that died is taken by the others as it reaches the head.

    `patience`, the caller's memory between its calls (job id -> (index entry revision, calls
    that saw it so, whether that entry counts no claim if known), kept here): with it, a job of another share is taken only once this
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
    window: list[tuple[str, KeyValue]] = []  # the entries of the first n x limit jobs (job id, entry), for a share's first pick
    window_jobs = 0
    seen: Patience = {}  # other shares' entries read by this call, for the next one
    after = ""
    last_segment = keys.last_segment

    def others_due(pairs: list[tuple[str, KeyValue]]) -> list[KeyValue]:
        """Of `pairs`, the own share's entries and the others' whose patience ran out. At n
        schedulers most of a window is the others' (n - 1 in n): their entries are decoded
        only once patience could make them due (a call that saw them at this revision before),
        and what the decode says is kept with the patience, so each is decoded once per revision."""
        if patience is None or n == 1:
            return [kv for _, kv in pairs]
        due = []
        for jid, kv in pairs:
            if shard_of(jid, n) == k:
                due.append(kv)
                continue
            rev, calls, unclaimed = patience.get(jid, (0, 0, None))
            if rev == kv.mod_revision:
                calls += 1
            else:
                calls, unclaimed = 0, None
            if calls:  # 0 is below every patience
                if unclaimed is None:
                    unclaimed = IndexEntry.decode(kv).claims == 0
                if calls >= (1 if unclaimed else HELD_PATIENCE):
                    due.append(kv)
                    continue
            seen[jid] = (kv.mod_revision, calls, unclaimed)
        return due

    size, entries_read, jobs_listed = FIRST_CLAIM_PAGE, 0, 0
    no_room: list[bool] = []
    for _ in range(MAX_CLAIM_PAGES):
        if len(out) >= limit:
            break
        page = store.get_page(keys.queue_prefix(job_class), size, after)
        full_page = len(page) == size
        if not page and not (n > 1 and window):
            break
        listed = {kv.key: listed_count(kv) for kv in page}  # a segment decoded once per page
        if page:  # (an empty page still ends a window that the page before left open)
            after = page[-1].key
            entries_read += len(page)
            jobs_listed += sum(listed.values())
            # The next page: as many entries as the jobs still wanted take at the mean seen so far
            # (a queue segment lists up to a claim txn's worth), with a margin; never past CLAIM_PAGE.
            wanted = max(limit - len(out), n * limit - window_jobs if n > 1 else 0)
            size = min(CLAIM_PAGE, max(FIRST_CLAIM_PAGE, 1 + (5 * wanted * entries_read) // (4 * jobs_listed)))
        candidates = [(jid, kv) for kv in page if (jid := last_segment(kv.key)) not in held]
        if n > 1 and window_jobs < n * limit:
            beyond = []
            for pair in candidates:  # the window counts jobs: a queue segment lists many
                if window_jobs < n * limit:
                    window.append(pair)
                    window_jobs += listed[pair[1].key]
                else:
                    beyond.append(pair)
            if window_jobs < n * limit and full_page:
                continue  # read on until the window is whole
            own = [shard_of(jid, n) == k for jid, _ in window]
            mine = [kv for (_, kv), o in zip(window, own, strict=True) if o]
            out += claim_entries(store, keys, mine, lease_id, owner, limit - len(out), executor, in_flight,
                                 crash_limit, overshoot and not out, no_room)
            candidates = [pair for pair, o in zip(window, own, strict=True) if not o] + beyond
        out += claim_entries(store, keys, others_due(candidates), lease_id, owner, limit - len(out), executor,
                             in_flight, crash_limit, overshoot and not out, no_room)
        if not full_page or no_room:  # the queue ended, or its next entry is a segment past the room
            break
    if patience is not None:
        patience.clear()
        patience.update(seen)
    return out


def claim_entries(store: CellStore, keys: CellKeys, entries: Sequence[KeyValue], lease_id: int, owner: str,
                  limit: int, executor: Executor | None = None, in_flight: int = 1,
                  crash_limit: int = DEFAULT_CRASH_LIMIT, overshoot: bool = True,
                  no_room: list[bool] | None = None) -> list[JobView]:
    """Claim the jobs of these index entries (queue or parked), up to `limit`. A queue
    segment (cellstate/queue_segments.py) is claimed whole or not at all: the first entry that
    would go past `limit` ends the call, unless it is the first (and `overshoot`: the caller
    holds nothing yet): then it is split, and `limit` of its jobs kept (_claimed), so a batch
    is never empty for want of room. `no_room` gets True appended
    when that ended the call.

    An entry claimed by someone else, or changed meanwhile, is skipped. A job that has
    used up its crash limit is parked for good here instead of being returned.
    """
    # A claim txn: the claim key and each entry rewritten, compared unchanged, with its earlier
    # holder's key compared gone; a compare per earlier holder too, so half the ops for entries.
    # Its records are read after it, in parallel: one claim key for many segments, so a commit
    # txn compares fewer claim keys (docs/architecture.md, "Queue segments").
    max_entries = max(1, (store.limits.max_txn_ops - 1) // 2)
    budget = int(store.limits.max_request_bytes * 0.5)

    def send(batch: list[tuple[KeyValue, IndexEntry]]):
        cid = new_claim_id(lease_id)
        compares: list[ModRevisionIs] = []
        success: list[Op] = [Put(keys.claim(cid), _claim_value(owner, [j for _, e in batch for j in e.members]),
                                 lease_id)]
        failure: list[Op] = []
        earlier: dict[str, None] = {}  # earlier holders named by the entries: their keys must be gone
        for qkv, entry in batch:
            if entry.holder:
                earlier.setdefault(entry.holder)
            compares.append(ModRevisionIs(qkv.key, qkv.mod_revision))
            success.append(Put(qkv.key, entry.with_claim(cid, entry.claims + 1).encode()))
            failure.append(Get(qkv.key))
        compares += [ModRevisionIs(keys.claim(h), 0) for h in earlier]
        failure += [Get(keys.claim(h)) for h in earlier]
        return cid, store.txn(compares, success, failure)

    out: list[JobView] = []
    todo = [(kv, e) for kv in entries if not (e := IndexEntry.decode(kv)).stuck]
    wave_size = in_flight if executor is not None else 1
    while todo and len(out) < limit:
        wave: list[list[tuple[KeyValue, IndexEntry]]] = []
        room = limit - len(out)
        while todo and room > 0 and len(wave) < wave_size:
            batch: list[tuple[KeyValue, IndexEntry]] = []
            size = 0  # bytes: the entries twice (the rewrite and the claim key's list)
            while todo and room > 0 and (not batch or (len(batch) < max_entries
                                                       and size + 2 * len(todo[0][0].value) <= budget)):
                if len(todo[0][1].members) > room and (out or wave or batch or not overshoot):
                    todo = []  # no room for it: the rest waits for the next step, in queue order
                    if no_room is not None:
                        no_room.append(True)
                    break
                pair = todo.pop(0)
                batch.append(pair)
                size += 2 * len(pair[0].value) + len(pair[0].key)
                room -= len(pair[1].members)
            if batch:
                wave.append(batch)
        if not wave:
            break
        if len(wave) > 1 and executor is not None:
            results = list(executor.map(send, wave))
        else:
            results = [send(wave[0])]
        won = [jid for batch, (_, result) in zip(wave, results, strict=True) if result.succeeded
               for _, entry in batch for jid in entry.members]
        records = _read_jobs(store, keys, won, executor)
        for batch, (cid, result) in zip(wave, results, strict=True):
            if result.succeeded:
                out += _claimed(store, keys, batch, cid, result.revision, records, crash_limit, limit - len(out))
                continue
            # Somebody claimed or changed part of the batch first: retry only entries still as
            # read whose earlier holder (if any) is gone.
            entries_now = result.reads[:len(batch)]
            holders_alive = {keys.last_segment(kv.key) for r in result.reads[len(batch):] for kv in r}
            for (qkv, entry), entry_now in zip(batch, entries_now, strict=True):
                if entry_now and entry_now[0].mod_revision == qkv.mod_revision and entry.holder not in holders_alive:
                    todo.append((qkv, entry))
    return complete_views(store, keys, out)  # a large job's shards: one more read for each


def _read_jobs(store: CellStore, keys: CellKeys, job_ids: list[str], executor: Executor | None
               ) -> dict[str, KeyValue]:
    """The records of `job_ids` (those that exist), a read txn per max_txn_ops, in parallel."""
    per_txn = max(1, store.limits.max_txn_ops)
    parts = [job_ids[i:i + per_txn] for i in range(0, len(job_ids), per_txn)]

    def read(part: list[str]):
        return store.txn([], [Get(keys.job(j)) for j in part]).reads

    done = list(executor.map(read, parts)) if executor is not None and len(parts) > 1 else [read(p) for p in parts]
    return {kv[0].key: kv[0] for reads in done for kv in reads if kv}


def _claimed(store: CellStore, keys: CellKeys, batch: list[tuple[KeyValue, IndexEntry]], cid: str, revision: int,
             records: dict[str, KeyValue], crash_limit: int, room: int) -> list[JobView]:
    """The views of a claim txn that succeeded: a segment's jobs that still wait in it, an own
    entry's job; the jobs past the crash limit parked for good instead. A segment is split
    when an earlier claim of it made no progress, or when more of its jobs wait than `room`
    (a batch that held nothing took it whole): the claim keeps `room` of them (at least one)
    and lets the rest go, so a batch never holds more than its room and a crash counts
    against a batch, not a whole segment. Segments with no job waiting go at once, and the
    claim key too when no job of it is held."""
    out: list[JobView] = []
    empty: dict[str, int] = {}
    for qkv, entry in batch:
        views = []
        for jid in entry.members:
            kv = records.get(keys.job(jid))
            if kv is None:
                continue
            rec = codec.decode_job(kv.key, kv.value)
            if not entry.jobs or queue_segments.waits_in(rec, keys.last_segment(qkv.key)):
                views.append(JobView(rec, kv.mod_revision, revision, cid))
        keep = max(1, room - len(out))
        if entry.jobs and not views:
            empty[qkv.key] = revision
        elif entry.jobs and (entry.claims or len(views) > keep):
            views = queue_segments.split_segment(store, keys, qkv.key, entry, complete_views(store, keys, views),
                                                 entry.claims + 1, keep)
            # (complete: a large job's record is written whole)
        for view in views:
            if entry.claims + 1 > crash_limit:
                for whole in complete_views(store, keys, [view]):  # a large job's shards
                    park_for_good(store, keys, whole, crash_limit)
            else:
                out.append(view)
    if empty or not out:  # nobody will hold the empty segments, nor the claim if it holds no job
        queue_segments.drop_claims(store, keys, [] if out else [cid], empty)
    return out


def release_claim(store: CellStore, keys: CellKeys, view: JobView) -> bool:
    """Let one job of our claim go, so another scheduler may claim it: its index entry no longer
    names the claim. Only if it still does and the claim is still ours. Returns whether it was.
    A job that waits in a queue segment gets its own entry (cellstate/queue_segments.py)."""
    if view.record.segment:
        return queue_segments.release_from_segment(store, keys, view)
    entry_keys = (keys.queue_of(view.record), keys.parked_of(view.record))
    for entry_key, found in zip(entry_keys, store.txn([], [Get(k) for k in entry_keys]).reads, strict=True):
        if not found:
            continue
        kv = found[0]
        entry = IndexEntry.decode(kv)
        if entry.holder != view.claim or not view.claim:
            return False
        let_go = IndexEntry(entry.job_id, entry.claims, entry.need, entry.stuck)
        return store.txn([ModRevisionIs(entry_key, kv.mod_revision),
                          ModRevisionIs(keys.claim(view.claim), view.claim_revision)],
                         [Put(entry_key, let_go.encode())]).succeeded
    return False


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
    compares = [ModRevisionIs(keys.job(jid), view.revision), ModRevisionIs(keys.claim(view.claim), view.claim_revision)]
    result = store.txn(compares, [Put(keys.job(jid), codec.encode_job(rec)), *ops])
    return JobView(rec, result.revision) if result.succeeded else None
