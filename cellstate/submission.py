"""Durable submission of jobs (claiming and parking live in `claims`, retention in `retention`).

- A job and its queue entry are written in one txn (the bulk form packs many jobs per
  txn); a job id that already exists is refused, never overwritten.
- The queue entry's key carries the submission sequence, so within a priority the queue
  is first come, first served. The jobs of one txn with the same class and priority share
  one queue entry, a segment (cellstate/queue_segments.py), keyed by the first of them; each
  record names it. A job alone in its txn's class and priority gets its own entry. The job itself never leaves the store until it is
  finished and its retention has passed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from . import codec
from . import resources as res
from .errors import InvalidJobError, UnplaceableRequestError
from .index_entry import index_entry_for_new_job
from .keys import CellKeys
from .model import Job, JobRecord, Machine, submission_seq
from .queue_segments import group_segments, segment_entry, segment_id, segment_limit
from .store import CellStore, Get, ModRevisionIs, Op, Put, TxnResult

# Sends one submission txn: (compares, success, failure, [(job, the keys written for it)]).
# The API's group commit passes one that adds each job's audit record (cellstate/audit.py).
SendTxn = Callable[[list[ModRevisionIs], list[Op], list[Op], list[tuple[Job, list[str]]]], TxnResult]
# One submission txn as built: compares, success ops, failure ops, and each job with the keys written for it.
Step = tuple[list[ModRevisionIs], list[Op], list[Op], list[tuple[Job, list[str]]]]


@dataclass
class SubmitResult:
    accepted: list[str] = field(default_factory=list)
    rejected: dict[str, str] = field(default_factory=dict)  # job id -> why
    revision: int = 0
    # job id -> the value already at its guard key, for jobs refused because the key exists
    guard_taken: dict[str, bytes] = field(default_factory=dict)


def check_placeable(job: Job, machines: Iterable[Machine]) -> None:
    """Refuse a job with a task group that no machine in the cell could ever hold."""
    caps = [m.capacity for m in machines]
    for g in job.groups:
        if not any(res.dominates(c, g.request) for c in caps):
            raise UnplaceableRequestError(
                f"job {job.id}: task group {g.name!r} requests {res.as_dict(g.request)}, "
                f"more than any machine in the cell offers")


def submit_jobs(store: CellStore, keys: CellKeys, jobs: Sequence[Job], now: float,
                guards: Mapping[str, Put] | None = None, send: SendTxn | None = None,
                per_txn: int | None = None, sizes: Sequence[int] | None = None, max_bytes: int = 0,
                job_parts: Mapping[str, bytes] | None = None, held_by: str = "") -> SubmitResult:
    """Write each job with its queue entry. Atomic per job; packed many jobs per txn.

    `guards` (job id -> Put) adds a key that must be absent and is written in the job's
    own txn, so "this key is new" and "this job is written" are one fact: the API's
    Idempotency-Key record. A job whose guard key exists is refused (`guard_taken`).
    `send` replaces `store.txn` (same txn, plus what it adds); `per_txn` caps the jobs per
    txn below what the store's limits allow (a caller that adds ops per job); `sizes` (each
    job's bytes in a txn) with `max_bytes` cuts txns by bytes too; `job_parts` (job id ->
    codec.encode_job_part) spares encoding a job's part twice. `held_by` names a claim
    (cellstate/claims.py) as the new entries' holder: a benchmark's gate, whose claim key the
    caller wrote first, so no scheduler takes the jobs before it lets them go.

    Without `send`, the txns go to `store.txn_sequence` together (one call to a store in another
    process), each still its own atomic txn: the first that fails (a job that exists) is
    retried without those jobs, with the txns after it."""
    guards = guards or {}
    ids = [j.id for j in jobs]
    if len(set(ids)) != len(ids):
        dup = sorted({i for i in ids if ids.count(i) > 1})
        raise InvalidJobError(f"duplicate job ids in one submission: {dup[:5]}")
    out = SubmitResult()
    # A txn's jobs: a record each (and a guard), one queue entry per class and priority; at most
    # as many as one claim txn reads (a segment's claim: its claim key, the segment, a read per job).
    most = max(1, segment_limit(store.limits) // (2 if guards else 1))
    per_txn = min(most, per_txn) if per_txn else most
    seq = submission_seq(now)  # one submission, one place in the queue; ties go by job id
    parts = job_parts or {}
    tails: dict[tuple[bool, str], bytes] = {}  # codec.record_tail of a new job, by sharded and segment

    def step(batch: list[Job]) -> Step:
        compares = [ModRevisionIs(keys.job(j.id), 0) for j in batch]
        compares += [ModRevisionIs(guards[j.id].key, 0) for j in batch if j.id in guards]
        success: list[Op] = []
        written: list[tuple[Job, list[str]]] = []
        segments = group_segments(batch)
        for j in batch:
            sharded = codec.is_sharded(j)
            members = segments[(j.job_class, j.priority)]
            head = segment_id(members[0].id) if len(members) > 1 else ""
            tail = tails.get((sharded, head))
            if tail is None:  # a new job's record after its part: the same for every job of a segment
                tail = tails[(sharded, head)] = codec.record_tail(JobRecord(j, submitted_at=now, queue_seq=seq,
                                                                            segment=head))
            part = parts.get(j.id)
            ops: list[Op] = [Put(keys.job(j.id), codec.splice_record(
                part if part is not None else codec.encode_job_part(j), tail))]
            if not head:
                ops.append(Put(keys.queue(j.job_class, j.priority, seq, j.id), index_entry_for_new_job(j.id, held_by)))
            elif j is members[0]:
                ops.append(Put(keys.queue(j.job_class, j.priority, seq, head),
                               segment_entry([m.id for m in members], held_by)))
            if j.id in guards:
                ops.append(guards[j.id])
            success += ops
            written.append((j, [op.key for op in ops]))
        failure: list[Op] = [Get(keys.job(j.id)) for j in batch]
        failure += [Get(guards[j.id].key) for j in batch if j.id in guards]
        return compares, success, failure, written

    # Each batch's txn is built once: after a failed txn only its own batch, less the jobs that
    # exist, is built again (rebuilding every later batch's ops made a bulk with many taken ids
    # quadratic in its size).
    pending: list[tuple[list[Job], Step | None]] = [
        (b, None) for b in _batches(jobs, per_txn, sizes, max_bytes, 1 + bool(guards), store.limits.max_txn_ops)]
    while pending:
        todo = pending[:1] if send is not None else pending
        built = [(b, st if st is not None else step(b)) for b, st in todo]
        pending = built + pending[len(todo):]
        results = ([send(*built[0][1])] if send is not None
                   else store.txn_sequence([(c, s_, f) for _, (c, s_, f, _) in built]))
        for (batch, _), result in zip(pending, results, strict=False):  # results stop at the first failure
            if result.succeeded:
                out.accepted += [j.id for j in batch]
                out.revision = result.revision
        done, last = len(results), results[-1]
        if last.succeeded:
            pending = pending[done:]
            continue
        batch = pending[done - 1][0]
        existing = {keys.last_segment(kv.key) for r in last.reads[:len(batch)] for kv in r}
        for jid in existing:
            out.rejected[jid] = "a job with this id already exists"
        guarded = [j.id for j in batch if j.id in guards]
        for jid, r in zip(guarded, last.reads[len(batch):], strict=True):
            if r:
                out.rejected.setdefault(jid, "its guard key already exists")
                out.guard_taken[jid] = r[0].value
                existing.add(jid)
        retry = [j for j in batch if j.id not in existing]
        pending = ([(retry, None)] if retry else []) + pending[done:]
    return out


def _batches(jobs: Sequence[Job], per_txn: int, sizes: Sequence[int] | None, max_bytes: int,
             ops_per_job: int, max_ops: int) -> list[list[Job]]:
    """Jobs in order, at most `per_txn` per txn, at most `max_ops` success ops (`ops_per_job`
    each, and one queue entry per class and priority) and, with `sizes`, at most `max_bytes`
    (a job larger than that alone)."""
    out: list[list[Job]] = []
    cur: list[Job] = []
    groups: set[tuple] = set()
    size = 0
    for i, j in enumerate(jobs):
        b = sizes[i] if sizes is not None else 0
        group = (j.job_class, j.priority)
        ops = (len(cur) + 1) * ops_per_job + len(groups | {group})
        if cur and (len(cur) >= per_txn or ops > max_ops or (sizes is not None and size + b > max_bytes)):
            out.append(cur)
            cur, size, groups = [], 0, set()
        cur.append(j)
        groups.add(group)
        size += b
    if cur:
        out.append(cur)
    return out
