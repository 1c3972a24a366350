"""Orphans: jobs claimed under our lease that we do not know we hold (a claim txn whose ack
was lost, or a call cut short by an outage). See docs/architecture.md,
"Claims, parking and crash safety". Found by reading the claim keys of our lease and adopting the listed jobs whose
entries (their own, or the queue segment they wait in) still name the claim."""

from __future__ import annotations

from collections.abc import Container

from . import codec, queue_segments
from .index_entry import IndexEntry
from .keys import CellKeys
from .store import CellStore, Get, KeyValue
from .views import JobView, complete_views


def _claim_jobs_of(kv: KeyValue) -> list[str]:
    return [str(j) for j in codec.decode_obj(kv.key, kv.value).get("jobs", [])]


def adopt_orphans(store: CellStore, keys: CellKeys, lease_id: int, held: Container[str]) -> list[JobView]:
    """Jobs claimed under `lease_id` that the caller does not know it holds.

    A claim txn whose ack was lost (or a call cut short by an outage) leaves such
    orphans, and nobody else may schedule those jobs while our lease lives. A job counts
    only while its index entry still names the claim (read after the record, whose class,
    priority and sequence spell the entry's key).
    """
    claims, _ = store.get_prefix(keys.claims_prefix)
    listed = [(kv, jid) for kv in claims if kv.lease == lease_id for jid in _claim_jobs_of(kv) if jid not in held]
    out: list[JobView] = []
    per_txn = max(1, store.limits.max_txn_ops)
    for start in range(0, len(listed), per_txn):
        part = listed[start:start + per_txn]
        reads = store.txn([], [Get(keys.job(jid)) for _, jid in part]).reads
        for (ckv, _), r in zip(part, reads, strict=True):
            for kv in r:
                rec = codec.decode_job(kv.key, kv.value)
                out.append(JobView(rec, kv.mod_revision, ckv.mod_revision, keys.last_segment(ckv.key)))
    # Keep only the jobs whose entry names the claim: one the caller parked or placed since is
    # listed by the claim key still, but no longer held by it.
    # A job in a queue segment: the segment's entry names the holder, if the job still waits in it.
    entry_keys = list(dict.fromkeys([keys.queue_of(v.record) for v in out] + [keys.parked_of(v.record) for v in out]))
    holders: dict[str, str] = {}
    for start in range(0, len(entry_keys), per_txn):
        for r in store.txn([], [Get(k) for k in entry_keys[start:start + per_txn]]).reads:
            for kv in r:
                e = IndexEntry.decode(kv)
                holders.update((jid, e.holder) for jid in e.members)
    return complete_views(store, keys, [v for v in out if holders.get(v.record.job.id) == v.claim
                                        and (not v.record.segment or queue_segments.waits_in(v.record, v.record.segment))])
