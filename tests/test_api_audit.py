"""Audit records: every mutation through the API writes one in its own txn (same revision
as the write it records), hash-chained; `cellsched audit verify` catches an edited record,
a deleted middle record, a deleted newest record and a deleted chain. Through a real
uvicorn on both backends; the tampering is done to etcd directly (and, for the memory
backend's verifier, to a MemoryStore in process)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from cellsched.cellstate import codec
from cellsched.cellstate.audit import AuditLog, verify
from cellsched.cellstate.keys import CellKeys
from cellsched.cellstate.machines import add_machines, set_machine_state
from cellsched.cellstate.model import Machine, MachineState
from cellsched.cellstate.store.etcd import EtcdStore
from cellsched.cellstate.store.memory import MemoryStore
from tests.apiserver import TOKENS, job_body, machines_body, start_api
from tests.conftest import require_etcd


def _mutate(server) -> None:
    with server.client("operator") as op:
        assert op.post("/v1/machines", json=machines_body("m1", "m2")).status_code == 201
        assert op.post("/v1/machines/m2/drain").status_code == 200
        for i in range(6):
            assert op.post("/v1/jobs", json=job_body(f"a-{i}", count=1)).status_code == 201
        assert op.post("/v1/jobs/bulk", json={"jobs": [job_body(f"ab-{i}") for i in range(3)]}).status_code == 200
        assert op.post("/v1/jobs/a-0/cancel").status_code == 200
        assert op.post("/v1/jobs", json=job_body("a-1")).status_code == 409  # refused: recorded as such


def verify_cli(*args, api=None):
    env = {**os.environ, "CELLSCHED_TOKEN": TOKENS["operator"], **({"CELLSCHED_API": api} if api else {})}
    return subprocess.run([sys.executable, "-m", "cellsched.cli", "audit", "verify", *args], capture_output=True,
                          text=True, timeout=120, env=env)


def test_memory_backend_records_and_verifies_through_the_api(tmp_path):
    server = start_api(tmp_path, None, "--schedulers", "off")
    try:
        _mutate(server)
        with server.client("operator") as op:
            rep = op.get("/v1/audit/verify").json()
            assert server.client("reader").get("/v1/audit/verify").status_code == 403
        assert rep["ok"] and rep["chains"] == 8 and rep["records"] >= 11, rep
        out = verify_cli(api=server.base)
        assert out.returncode == 0 and "8 chains" in out.stdout and out.stdout.strip().endswith("ok")
    finally:
        server.stop()


@pytest.fixture
def audited_etcd(etcd_member, tmp_path):
    require_etcd()
    server = start_api(tmp_path, etcd_member.endpoints, "--schedulers", "off", "--audit-chains", "2")
    _mutate(server)
    server.stop()
    store = EtcdStore(etcd_member.endpoints)
    yield store, CellKeys("t"), etcd_member.endpoints
    store.close()


def _records(store, keys):
    return [(kv, codec.decode_obj(kv.key, kv.value)) for kv in store.get_prefix(keys.audit_record_root)[0]]


def test_records_ride_in_the_mutations_txn(audited_etcd):
    store, keys, _ = audited_etcd
    recs = _records(store, keys)
    whats = [r["what"] for _, r in recs]
    assert any(w.startswith("POST /v1/jobs job a-3") for w in whats)
    assert any(w == "POST /v1/machines/m2/drain" for w in whats)
    assert all(r["who"] == "operator-1 (operator)" for _, r in recs)
    refused = [r for _, r in recs if r["outcome"].startswith("refused")]
    assert len(refused) == 1 and "already exists" in refused[0]["outcome"]
    for kv, r in recs:
        if r["what"].startswith("POST /v1/jobs job a-"):
            job_kv = store.get(keys.job(r["what"].rsplit(" ", 1)[1]))
            if r["outcome"] == "committed":  # written by the very txn that created the job
                assert kv.create_revision == job_kv.create_revision
                assert keys.job(job_kv.key.rsplit("/", 1)[1]) in r["keys"]


def test_verify_catches_each_tampering(audited_etcd):
    store, keys, endpoints = audited_etcd
    ok = verify_cli("--etcd", endpoints, "--cell", "t")
    assert ok.returncode == 0, ok.stdout
    recs = _records(store, keys)
    by_chain: dict[str, list] = {}
    for kv, _ in recs:
        by_chain.setdefault(kv.key.split("/")[-2], []).append(kv)
    chain, kvs = max(by_chain.items(), key=lambda c: len(c[1]))
    assert len(kvs) >= 3
    edited = codec.decode_obj(kvs[1].key, kvs[1].value)
    cases = {
        "edited": ([("put", kvs[1].key, codec.encode_obj({**{k: v for k, v in edited.items() if k != "v"},
                                                           "who": "mallory"}))], "altered"),
        "middle deleted": ([("del", kvs[1].key, None)], "missing"),
        "newest deleted": ([("del", kvs[-1].key, None)], "newest records deleted"),
        "chain deleted": ([("del", kv.key, None) for kv in kvs] + [("del", keys.audit_head(chain), None)],
                          "chain deleted"),
    }
    head = store.get(keys.audit_head(chain))
    for name, (changes, expect) in cases.items():
        for op, key, value in changes:
            store.put(key, value) if op == "put" else store.delete(key)
        bad = verify_cli("--etcd", endpoints, "--cell", "t")
        assert bad.returncode == 1 and expect in bad.stdout, (name, bad.stdout)
        for kv in [*kvs, head]:  # undo: the chain verifies again
            store.put(kv.key, kv.value)
        assert verify_cli("--etcd", endpoints, "--cell", "t").returncode == 0, name


def test_verifier_on_a_memory_store_and_a_chain_missing_from_the_registry():
    store, keys = MemoryStore(), CellKeys("u")
    log = AuditLog.open(store, keys, 2)
    for i in range(3):
        with log.session("op", f"add m{i}", 0.0) as s:
            add_machines(s, keys, [Machine(f"m{i}", (1000, 1024, 0))])
    with log.session("op", "drain", 0.0) as s:
        set_machine_state(s, keys, "m0", MachineState.DRAINING)
    rep = verify(store, keys)
    # 5: the first add also writes the schema key, in a txn of its own, which gets its own record
    assert rep.ok and rep.records == 5 and rep.chains == 2
    reg = store.get(keys.audit_registry)
    store.put(keys.audit_registry, codec.encode_obj({"chains": codec.decode_obj(reg.key, reg.value)["chains"][:1]}))
    assert any("not in the registry" in p for p in verify(store, keys).problems)
