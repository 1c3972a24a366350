"""Queue segments: one queue entry for the jobs of one submission txn (docs/architecture.md,
"Queue segments").

A submission txn writes its jobs of one class and priority under one /queue/ key, keyed by the
first of them and a mark (`segment_id`), whose value lists them all (`IndexEntry.jobs`); each
job's record names that segment (`JobRecord.segment`). A listed job waits in the segment only while its record is
PENDING and names it: placing, parking, failing or cancelling the job rewrites its record
anyway, and that write takes it out of the segment (cellstate/job_states.py), with no queue
write. So a job placed from a segment costs its record and its share of the allocations, and
its segment costs a claim rewrite and a delete shared by up to `segment_limit` jobs.

The segment's lifecycle:
- a claim txn takes it whole: the segment is rewritten with the claim as its holder and its
  claim count bumped, the claim key lists every job it lists, and the same txn reads every
  listed record; the jobs that wait in it are the claim's (cellstate/claims.py);
- the holder deletes it with the claim key once it holds none of its jobs (`drop_claims`,
  comparing the segment unchanged since the claim: a segment someone else took over is left);
- a job let go without being placed or parked gets its own entry (`release_from_segment`);
- a segment claimed again after a claim that made no progress (its holder died or hung) is
  split (`split_segment`): each job still waiting in it gets its own entry with the claim
  count, so the crash limit counts per job and a job that crashes schedulers cannot take the
  rest of its segment with it; and so is a segment with more waiting jobs than the room of
  the batch that claims it (a batch smaller than a segment): the claim keeps its room and lets
  the rest go, each with an entry of its own.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from . import codec
from .index_entry import IndexEntry
from .keys import CellKeys
from .model import Job, JobRecord, JobStatus
from .store import CellStore, Delete, Get, ModRevisionIs, Op, Put, StoreLimits
from .views import JobView

# A segment's id, the last part of its key: its first job's id and a mark no job id has
# (model.check_id), so the first job's own entry (after a split or a release) has another key.
SEGMENT_MARK = "+"
MAX_SEGMENT_JOBS = 126  # one claim txn of etcd's 128 ops: the claim key, the segment, a read per job


def segment_limit(limits: StoreLimits) -> int:
    """The most jobs one segment lists: its claim txn reads every one of them."""
    return max(1, min(MAX_SEGMENT_JOBS, limits.max_txn_ops - 2))


def group_segments(batch: Sequence[Job]) -> dict[tuple, list[Job]]:
    """(class, priority) -> the batch's jobs of it, in order: one queue entry each."""
    out: dict[tuple, list[Job]] = {}
    for j in batch:
        out.setdefault((j.job_class, j.priority), []).append(j)
    return out


def segment_id(first_job: str) -> str:
    return first_job + SEGMENT_MARK


def segment_entry(job_ids: Sequence[str], holder: str = "") -> bytes:
    return IndexEntry(job_ids[0], holder=holder, jobs=tuple(job_ids)).encode()


def waits_in(rec: JobRecord, segment: str) -> bool:
    """Whether the job of `rec` waits in the segment with id `segment` (its key's last part)."""
    return rec.status is JobStatus.PENDING and rec.segment == segment


def split_segment(store: CellStore, keys: CellKeys, segment_key: str, entry: IndexEntry,
                  views: list[JobView], claims: int, keep: int) -> list[JobView]:
    """Give each job of `views` (claimed from the segment at `segment_key` as `entry`, under
    one claim) its own queue entry, and delete the segment: the first `keep` held by the same
    claim and counting `claims`, the others let go (no holder, the segment's count: this
    claim does not hold them). A txn per max_txn_ops // 2 jobs, each comparing the claim and
    the records; the segment goes with the last, compared unchanged since the claim. Returns
    the kept views as written (new record revisions); a job whose txn failed (its record
    changed: cancelled meanwhile) is left out, and the segment is left to the claim's holder."""
    if not views:
        return []
    cid, claim_rev = views[0].claim, views[0].claim_revision
    per_txn = max(1, (store.limits.max_txn_ops - 1) // 2)
    out: list[JobView] = []
    whole = True
    for start in range(0, len(views), per_txn):
        part = views[start:start + per_txn]
        last = start + per_txn >= len(views)
        compares = [ModRevisionIs(keys.claim(cid), claim_rev)]
        success: list[Op] = []
        recs = []
        for i, v in enumerate(part, start):
            rec = v.record.copy()
            rec.segment = ""
            own = IndexEntry(rec.job.id, claims, holder=cid) if i < keep else IndexEntry(rec.job.id, entry.claims)
            if i < keep:
                recs.append(rec)
            compares.append(ModRevisionIs(keys.job(rec.job.id), v.revision))
            success += [Put(keys.job(rec.job.id), codec.encode_job(rec)), Put(keys.own_queue_of(rec), own.encode())]
        if last and whole:
            compares.append(ModRevisionIs(segment_key, claim_rev))
            success.append(Delete(segment_key))
        result = store.txn(compares, success)
        if not result.succeeded:
            whole = False
            continue
        out += [JobView(rec, result.revision, claim_rev, cid) for rec in recs]
    return out


def drop_claims(store: CellStore, keys: CellKeys, claim_ids: Iterable[str],
                segments: Mapping[str, int] | None = None) -> None:
    """Delete our claim keys whose jobs are all placed, parked or let go, and the segments
    they took (segment key -> its revision at the claim; one changed since, taken over by
    another claim after our lease expired, is left). One txn per max_txn_ops keys.

    The claim keys go blind: a claim id is never reused, so the key is ours or already gone
    with our lease."""
    segs = dict(segments or {})
    todo: list[tuple[Delete, int | None]] = [(Delete(keys.claim(cid)), None) for cid in claim_ids]
    todo += [(Delete(k), rev) for k, rev in segs.items()]
    per_txn = max(1, store.limits.max_txn_ops)
    for start in range(0, len(todo), per_txn):
        part = todo[start:start + per_txn]
        while part:
            compares = [ModRevisionIs(op.key, rev) for op, rev in part if rev is not None]
            result = store.txn(compares, [op for op, _ in part], [Get(c.key) for c in compares])
            if result.succeeded:
                break
            changed = {c.key for c, r in zip(compares, result.reads, strict=True)
                       if not r or r[0].mod_revision != c.revision}
            part = [(op, rev) for op, rev in part if op.key not in changed]


def release_from_segment(store: CellStore, keys: CellKeys, view: JobView) -> bool:
    """Let a job of our claim that waits in a segment go: its own entry, without holder and
    with the segment's claim count, and its record out of the segment, in one txn fenced by
    the record and our claim (the segment stays ours, for the jobs still in it). Returns
    whether it was let go."""
    rec = view.record.copy()
    seg_key = keys.queue_of(rec)
    found = store.txn([], [Get(seg_key)]).reads[0]
    if not found or not view.claim:
        return False
    entry = IndexEntry.decode(found[0])
    if entry.holder != view.claim or rec.job.id not in entry.jobs:
        return False
    rec.segment = ""
    return store.txn([ModRevisionIs(keys.job(rec.job.id), view.revision),
                      ModRevisionIs(keys.claim(view.claim), view.claim_revision)],
                     [Put(keys.job(rec.job.id), codec.encode_job(rec)),
                      Put(keys.own_queue_of(rec), IndexEntry(rec.job.id, entry.claims).encode())]).succeeded
