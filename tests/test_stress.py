"""Must show: the seeded stress harness contends for real, injects every fault, and catches
a broken engine.

- the fault-injecting store does what it says, per fault, seeded and counted;
- a memory-store run with 8 schedulers (every write checked) reaches >= 500 conflicts and
  >= 20 of each fault, with no invariant violation and no job lost;
- the same seed with the engine's commit-time checks bypassed and a decision function
  that puts claims on full machines reports violations: the harness is not blind;
- a short run on a 3-member etcd, checked periodically and at the end, with threads;
- and with scheduler actors that are killed (before a send, after a send, anywhere) and
  restarted by Ray.
"""

from __future__ import annotations

import random
import threading

import numpy as np
import pytest

from cellsched.cellstate.commit import CommitEngine
from cellsched.cellstate.errors import CommitOutcomeUnknown, InvalidInputError, StoreUnavailableError
from cellsched.cellstate.faults import AfterSendStore, FaultInjectingStore, FaultPlan
from cellsched.cellstate.model import Claim
from cellsched.cellstate.store import Get, ModRevisionIs, Put
from cellsched.cellstate.store.memory import MemoryStore
from cellsched.loadtests.stress import MIN_CONFLICTS, MIN_EACH_FAULT, run_stress
from cellsched.loadtests.stress.ray_run import run_ray_stress
from cellsched.schedulers.decide import Decision, decide_job

SEED = 11


def _findings(out: dict) -> str:
    """What a failed run found, compactly: first violations, who wrote just before, how."""
    first = [f"{v['message']} (after a write by {v['after_write_by']}: {v['write']})"
             for v in out["violations_first_seen"][:5]]
    return f"{out['violation_count']} distinct violations {out['violation_kinds']}; first: {first}; " \
           f"overcommitting txns by commit path: {out['overcommit_paths']}"


# -- the fault-injecting store ------------------------------------------------------


def _write(store, key: str, value: bytes = b"v"):
    kv = store.inner.get(key) if hasattr(store, "inner") else store.get(key)
    return store.txn([ModRevisionIs(key, kv.mod_revision if kv else 0)], [Put(key, value)], [Get(key)])


def test_unavailable_fault_applies_nothing():
    inner = MemoryStore()
    st = FaultInjectingStore(inner, FaultPlan(p_unavailable=1.0))
    with pytest.raises(StoreUnavailableError) as err:
        _write(st, "/k")
    assert not isinstance(err.value, CommitOutcomeUnknown)
    assert inner.get("/k") is None
    assert st.faults == {"unavailable": 1, "lost_ack": 0, "delay": 0}
    st.put("/plain", b"x")  # no compares: not a write txn, never faulted
    assert inner.get("/plain").value == b"x"


def test_lost_ack_fault_applies_then_raises_unknown():
    inner = MemoryStore()
    st = FaultInjectingStore(inner, FaultPlan(p_lost_ack=1.0))
    with pytest.raises(CommitOutcomeUnknown):
        _write(st, "/k", b"landed")
    assert inner.get("/k").value == b"landed"
    assert st.faults["lost_ack"] == 1


def test_delay_fault_sleeps_a_seeded_time_before_sending():
    def delays(seed):
        slept = []
        st = FaultInjectingStore(MemoryStore(), FaultPlan(p_delay=0.5, max_delay_s=0.2), seed=seed,
                                 sleep=slept.append)
        for i in range(40):
            _write(st, f"/k{i}")
        return slept, st.faults["delay"]

    slept, n = delays(3)
    assert n == len(slept) > 0 and all(0 < d <= 0.2 for d in slept)
    assert delays(3) == (slept, n)  # same seed, same delays
    assert delays(4)[0] != slept


def test_after_write_runs_once_per_committed_write_and_counts_are_thread_safe():
    inner = MemoryStore()
    seen = []
    st = FaultInjectingStore(inner, FaultPlan(p_unavailable=0.2, p_lost_ack=0.2, p_delay=0.2, max_delay_s=0.0),
                             seed=5, after_write=lambda ops, res: seen.append(res.revision),
                             write_lock=threading.Lock())
    errors = {"unavailable": 0, "lost_ack": 0}

    def worker(k):
        for i in range(200):
            try:
                _write(st, f"/w{k}/{i}")
            except CommitOutcomeUnknown:
                errors["lost_ack"] += 1
            except StoreUnavailableError:
                errors["unavailable"] += 1

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    f = st.faults
    assert f["unavailable"] == errors["unavailable"] > 0 and f["lost_ack"] == errors["lost_ack"] > 0
    assert st.write_txns == 800
    assert len(seen) == 800 - f["unavailable"]  # every applied write, lost ack or not
    assert sorted(seen) == sorted(set(seen))  # one call per revision
    inner.put("/exists", b"x")
    plain = FaultInjectingStore(inner, after_write=lambda ops, res: seen.append(res.revision))
    before = len(seen)
    assert not plain.txn([ModRevisionIs("/exists", 0)], [Put("/exists", b"y")]).succeeded
    assert len(seen) == before  # a failed compare wrote nothing: no hook
    _write(plain, "/exists")
    assert len(seen) == before + 1


def test_after_send_store_keeps_its_behaviour():
    calls = []
    st = AfterSendStore(MemoryStore(), lambda ops, res: calls.append((len(ops), res.succeeded)))
    _write(st, "/a")
    st.put("/b", b"x")  # no compares: no hook
    assert calls == [(1, True)]
    assert st.get("/a").value == b"v"


def test_fault_plan_refuses_bad_probabilities():
    with pytest.raises(InvalidInputError):
        FaultPlan(p_lost_ack=1.5)


# -- the harness ----------------------------------------------------------------------


@pytest.mark.timeout(240)
def test_memory_stress_contends_and_keeps_every_invariant():
    out = run_stress(SEED, schedulers=8, seconds=45, stop_when_met=True, min_seconds=15)
    print({k: out[k] for k in ("seconds", "commits", "conflicts", "conflicted_txns", "faults_injected", "checks",
                               "jobs", "tasks_placed", "violation_count", "jobs_lost")})
    assert out["schedulers"] >= 6
    assert out["checks"] > out["commits"]  # a check after every committed write, not a sample
    assert out["conflicts"] >= MIN_CONFLICTS, out["thresholds"]
    for kind in ("unavailable", "lost_ack", "delay"):
        assert out["faults_injected"][kind] >= MIN_EACH_FAULT, out["faults_injected"]
    assert out["violation_count"] == 0, _findings(out)
    assert out["jobs_lost"] == 0, out["jobs_lost_examples"]
    assert out["jobs"] > 0 and out["tasks_placed"] > 0 and out["harness_errors"] == 0, out["harness_error_messages"]


class UncheckedCommitEngine(CommitEngine):
    """The engine with its commit-time safety checks bypassed (the one place to re-point
    when the engine grows more of them): the validator passes every claim, whether it
    fits the view the txn compares, whether its task was bound meanwhile."""

    def _validate_claims(self, claims, machines, jobs, changed):
        return list(claims), []


def overassigning_decide(columns, index, record, policy, seed) -> Decision:
    """decide_job, then now and then one claim moved onto a machine it does not fit."""
    decision = decide_job(columns, index, record, policy, seed)
    rng = random.Random(seed)
    if not decision.claims or rng.random() < 0.5:
        return decision
    i = rng.randrange(len(decision.claims))
    c = decision.claims[i]
    n = len(columns.machine_ids)
    free = columns.host_capacity[:n] - columns.host_used[:n]
    full = np.flatnonzero((free < np.asarray(c.request)).any(axis=1))
    if len(full):
        decision.claims[i] = Claim(c.task_id, columns.machine_ids[int(rng.choice(full.tolist()))], c.request,
                                   c.job_id)
    return decision


@pytest.mark.timeout(240)
def test_harness_catches_a_broken_engine():
    out = run_stress(SEED, schedulers=6, seconds=8, engine_cls=UncheckedCommitEngine,
                     decide_fn=overassigning_decide)
    kinds = " | ".join(out["violation_kinds"])
    print(out["violation_kinds"])
    assert out["violation_count"] > 0
    assert "overcommitted" in kinds
    assert sum(out["overcommit_paths"].values()) > 0  # the audit names the commit path that did it


@pytest.mark.etcd
@pytest.mark.timeout(240)
def test_etcd_three_member_stress_keeps_every_invariant(etcd_three):
    out = run_stress(SEED, schedulers=6, seconds=8, backend="etcd", etcd_endpoints=etcd_three.endpoints,
                     check_every_s=0.5)
    print({k: out[k] for k in ("seconds", "commits", "conflicts", "faults_injected", "checks", "jobs",
                               "tasks_placed", "violation_count", "jobs_lost")})
    assert out["commits"] > 0 and out["faults_injected"]["total"] > 0
    assert out["checks"] >= 2  # periodic and final
    assert out["violation_count"] == 0, _findings(out)
    assert out["jobs_lost"] == 0, out["jobs_lost_examples"]


@pytest.mark.ray
@pytest.mark.etcd
@pytest.mark.timeout(240)
def test_ray_actor_stress_on_three_member_etcd(ray_cluster, etcd_three):
    out = run_ray_stress(SEED, schedulers=4, seconds=8, etcd_endpoints=etcd_three.endpoints, own_ray=False,
                         kill_every_s=(0.8, 1.6), check_every_s=0.5)
    print({k: out[k] for k in ("seconds", "commits", "conflicts", "kills", "restarts_seen", "checks", "jobs",
                               "tasks_placed", "violation_count", "jobs_lost")})
    assert out["commits"] > 0 and out["kills"]["total"] > 0 and out["restarts_seen"] > 0
    assert out["checks"] >= 2
    assert out["violation_count"] == 0, _findings({**out, "overcommit_paths": "not audited in actors"})
    assert out["jobs_lost"] == 0, out["jobs_lost_examples"]
    assert out["harness_errors"] == 0, out["harness_error_messages"]
