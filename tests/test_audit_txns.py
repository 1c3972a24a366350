"""A bulk submission's txns sent together (CellStore.txn_sequence) through an audited store: one
record per landed txn, chained, in the txn it records (docs/architecture.md, "The REST API",
Audit)."""

from __future__ import annotations

from cellsched.cellstate import audit, codec
from cellsched.cellstate.keys import CellKeys
from cellsched.cellstate.store import MemoryStore, StoreLimits
from cellsched.cellstate.submission import submit_jobs
from tests.cellfactory import make_job


class CountingStore(MemoryStore):
    def __init__(self, *a, **k):
        super().__init__(*a, **k)
        self.calls = 0

    def txn_sequence(self, steps):
        self.calls += 1
        return super().txn_sequence(steps)


def test_bulk_txns_carry_one_chained_record_each_and_verify():
    store, keys = CountingStore(StoreLimits(max_txn_ops=23)), CellKeys("a")
    log = audit.AuditLog.open(store, keys, 1)
    submit_jobs(store, keys, [make_job("j15", 1)], now=0.0)  # exists: the second txn fails once
    jobs = [make_job(f"j{i:02d}", 1) for i in range(30)]
    store.calls = 0
    with log.session("alice (operator)", "POST /v1/jobs/bulk 30 jobs", 1.0) as s:
        out = submit_jobs(s, keys, jobs, now=1.0)
        landed = s.records
    assert sorted(out.accepted) == sorted(j.id for j in jobs if j.id != "j15")
    assert "j15" in out.rejected
    # 18 jobs per txn (18 records + their queue segment + 3 for the audit record): the first fails
    # on j15 and stops the call; the next call sends it again without j15, and the second: 2
    # records, 2 calls
    assert landed == 2 and store.calls == 2
    report = audit.verify(store, keys)
    assert report.ok, report.problems
    recs = [codec.decode_obj(kv.key, kv.value) for kv in store.get_prefix(keys.audit_record_root)[0]]
    assert [r["seq"] for r in recs] == [1, 2]
    for r in recs:  # each record landed in the revision of the jobs it lists
        job_keys = [k for k in r["keys"] if k.startswith(keys.jobs_prefix)]
        assert job_keys and all(store.get(k).mod_revision == store.get(
            keys.audit_record(log._chains[0].id, r["seq"])).mod_revision for k in job_keys)


def test_a_tampered_bulk_record_is_caught():
    store, keys = MemoryStore(StoreLimits(max_txn_ops=23)), CellKeys("b")
    log = audit.AuditLog.open(store, keys, 1)
    with log.session("bob (operator)", "bulk", 1.0) as s:
        submit_jobs(s, keys, [make_job(f"k{i:02d}", 1) for i in range(45)], now=1.0)  # 3 txns
    chain = log._chains[0].id
    kv = store.get(keys.audit_record(chain, 2))
    edited = {**codec.decode_obj(kv.key, kv.value), "who": "mallory"}
    store.put(kv.key, codec.encode_obj({k: v for k, v in edited.items() if k != "v"}))
    assert any("altered" in p for p in audit.verify(store, keys).problems)
    store.delete(keys.audit_record(chain, 3))
    assert any("head is at 3" in p for p in audit.verify(store, keys).problems)
