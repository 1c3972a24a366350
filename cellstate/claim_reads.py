"""Reading the queue and its claims, for tools, tests and operators (cellstate/claims.py writes
them; docs/architecture.md, "Claims, parking and crash safety"). A scheduler never calls these."""

from __future__ import annotations

from . import codec, queue_segments
from .index_entry import IndexEntry
from .keys import CellKeys
from .model import JobClass
from .store import CellStore, Get, KeyValue


def list_queue(store: CellStore, keys: CellKeys, job_class: JobClass) -> list[str]:
    """The jobs the class's queue entries list, in queue order: a segment's placed or parked
    jobs too, until it goes (cellstate/queue_segments.py)."""
    kvs, _ = store.get_prefix(keys.queue_prefix(job_class))
    return [jid for kv in kvs for jid in IndexEntry.decode(kv).members]


def list_parked(store: CellStore, keys: CellKeys, job_class: JobClass) -> list[str]:
    kvs, _ = store.get_prefix(keys.parked_prefix(job_class))
    return [keys.last_segment(kv.key) for kv in kvs]


def claimed_jobs(store: CellStore, keys: CellKeys) -> dict[str, str]:
    """Job id -> the id of the claim that holds it now, over the whole cell (see claim_holders)."""
    return {jid: keys.last_segment(kv.key) for jid, kv in claim_holders(store, keys).items()}


def claim_holders(store: CellStore, keys: CellKeys) -> dict[str, KeyValue]:
    """Job id -> the claim key that holds it now (its value names the owner; its lease is the
    owner's): a job whose index entry names a live claim key (the key's own list of jobs says
    what it took, placed and parked ones included: not what it holds now). One read of the cell's claims and indexes: for tools, tests and operators;
    a scheduler never reads this."""
    claims, queue, parked, jobs = store.txn([], [Get(p, prefix=True) for p in (
        keys.claims_prefix, keys.queue_prefix(), keys.parked_prefix(), keys.jobs_prefix)]).reads  # one revision
    live = {keys.last_segment(kv.key): kv for kv in claims}
    waiting = {jid for kv in jobs if (rec := codec.decode_job(kv.key, kv.value)).segment
               for jid in [rec.job.id] if queue_segments.waits_in(rec, rec.segment)}
    out: dict[str, KeyValue] = {}
    for kv in (*queue, *parked):
        entry = IndexEntry.decode(kv)
        if entry.holder in live:
            for jid in entry.members:
                if not entry.jobs or jid in waiting:  # a segment holds only the jobs that wait in it
                    out[jid] = live[entry.holder]
    return out
