"""The job state machine: every (status, event) pair, no status written outside it, cancel."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from cellsched.cellstate import job_states
from cellsched.cellstate.cancel import cancel_job
from cellsched.cellstate.claims import IndexEntry, claim_jobs, park_job
from cellsched.cellstate.clock import SimClock
from cellsched.cellstate.codec import INLINE_TASKS
from cellsched.cellstate.commit import CommitEngine, Fence, Plan
from cellsched.cellstate.errors import CellError, IllegalTransitionError, InvalidInputError
from cellsched.cellstate.invariants import check_store
from cellsched.cellstate.job_states import (
    TASK_TRANSITIONS,
    JobEvent,
    TaskState,
    apply_event,
    task_state,
    task_states,
)
from cellsched.cellstate.keys import CellKeys
from cellsched.cellstate.lifecycle import release_tasks
from cellsched.cellstate.model import (
    Claim,
    Job,
    JobClass,
    JobRecord,
    JobStatus,
    TaskGroup,
    TaskOutcome,
    task_id,
)
from cellsched.cellstate.resources import ZERO
from cellsched.cellstate.retention import purge_finished, purge_job
from cellsched.cellstate.store import Delete, KeyValue, Put, StoreLimits
from cellsched.cellstate.store.memory import MemoryStore
from cellsched.cellstate.submission import submit_jobs
from cellsched.cellstate.validation import RefusalKind
from cellsched.cellstate.views import read_job_view
from cellsched.schedulers.core import Scheduler
from cellsched.schedulers.settings import BATCH
from tests.cellfactory import make_cell, make_job, views

S, E = JobStatus, JobEvent

# The expected table, written out by hand (not derived from job_states.TRANSITIONS):
# (status, event) -> (new status or None for "deleted", the writes as (op, which key)).
EXPECTED: dict[tuple[JobStatus, JobEvent], tuple[JobStatus | None, frozenset]] = {
    # -claim in the docstring: the job leaves its holder's claim; the claim key, shared by the jobs
    # of one claim txn, is its holder's to delete, so no op here.
    (S.PENDING, E.PLACE_ALL): (S.PLACED, frozenset({("del", "queue")})),
    (S.PENDING, E.BIND_SOME): (S.PENDING, frozenset({("put", "queue")})),
    (S.PENDING, E.PARK): (S.PARKED, frozenset({("del", "queue"), ("put", "parked")})),
    (S.PENDING, E.FINISH_SOME): (S.PENDING, frozenset()),
    (S.PENDING, E.TASK_EVICTED): (S.PENDING, frozenset()),
    (S.PENDING, E.TASK_FAILED_WITHIN_POLICY): (S.PENDING, frozenset()),
    (S.PENDING, E.FAIL): (S.FAILED, frozenset({("del", "queue")})),
    (S.PENDING, E.CANCEL): (S.CANCELLED, frozenset({("del", "queue")})),
    (S.PARKED, E.PLACE_ALL): (S.PLACED, frozenset({("del", "parked")})),
    (S.PARKED, E.BIND_SOME): (S.PARKED, frozenset({("put", "parked")})),
    (S.PARKED, E.PARK): (S.PARKED, frozenset({("put", "parked")})),
    (S.PARKED, E.RETRY): (S.PENDING, frozenset({("del", "parked"), ("put", "queue")})),
    (S.PARKED, E.FINISH_SOME): (S.PARKED, frozenset()),
    (S.PARKED, E.TASK_EVICTED): (S.PARKED, frozenset()),
    (S.PARKED, E.TASK_FAILED_WITHIN_POLICY): (S.PARKED, frozenset()),
    (S.PARKED, E.FAIL): (S.FAILED, frozenset({("del", "parked")})),
    (S.PARKED, E.CANCEL): (S.CANCELLED, frozenset({("del", "parked")})),
    (S.PLACED, E.FINISH_SOME): (S.PLACED, frozenset()),
    (S.PLACED, E.TASK_FINISHED): (S.FINISHED, frozenset()),
    (S.PLACED, E.TASK_EVICTED): (S.PENDING, frozenset({("put", "queue")})),
    (S.PLACED, E.TASK_FAILED_WITHIN_POLICY): (S.PENDING, frozenset({("put", "queue")})),
    (S.PLACED, E.FAIL): (S.FAILED, frozenset()),
    (S.PLACED, E.CANCEL): (S.CANCELLED, frozenset()),
    (S.FINISHED, E.PURGE): (None, frozenset()),
    (S.FAILED, E.TASK_LEFT): (S.FAILED, frozenset()),
    (S.FAILED, E.PURGE): (None, frozenset()),
    (S.CANCELLED, E.TASK_LEFT): (S.CANCELLED, frozenset()),
    (S.CANCELLED, E.PURGE): (None, frozenset()),
}

KEYS = CellKeys("t")
ALL_PAIRS = [(s, e) for s in JobStatus for e in JobEvent]


def record(status: JobStatus) -> JobRecord:
    return JobRecord(make_job("j", 2), status=status, queue_seq="00000000000000007", reason="before",
                     refusal={"kind": "before"})


def classify(op, rec: JobRecord) -> tuple[str, str]:
    where = {KEYS.queue_of(rec): "queue", KEYS.parked_of(rec): "parked", KEYS.claim("j"): "claim"}
    assert op.key in where, f"op on an unexpected key {op.key}"
    return ("put" if isinstance(op, Put) else "del"), where[op.key]


@pytest.mark.parametrize(("status", "event"), ALL_PAIRS, ids=[f"{s.name}-{e.name}" for s, e in ALL_PAIRS])
def test_job_states_every_status_event_pair(status, event):
    rec = record(status)
    if (status, event) not in EXPECTED:
        before = rec.copy()
        with pytest.raises(IllegalTransitionError) as info:
            apply_event(rec, event, KEYS, 5.0, reason="r")
        assert status.value in str(info.value) and event.value in str(info.value) and "j" in str(info.value)
        assert (info.value.job_status, info.value.event) == (status, event.value)
        assert isinstance(info.value, CellError)
        assert rec == before  # refused whole: the record is untouched
        assert not job_states.allowed(status, event)
        return
    to, writes = EXPECTED[(status, event)]
    ops = apply_event(rec, event, KEYS, 5.0, reason="r", need=(1, 2, 0))
    assert all(isinstance(op, Put | Delete) for op in ops)
    assert len(ops) == len(writes)
    assert {classify(op, rec) for op in ops} == writes
    assert rec.status is (to if to is not None else status)  # PURGE: the caller deletes the record
    assert job_states.allowed(status, event)


def test_job_states_table_has_exactly_the_expected_pairs():
    assert set(job_states.TRANSITIONS) == set(EXPECTED)


def test_job_states_docstring_lists_the_table_it_encodes():
    assert job_states.render_table() in job_states.__doc__


def test_job_states_fields_and_index_values_that_go_with_the_events():
    rec = record(S.PENDING)
    (put,) = [op for op in apply_event(rec, E.PARK, KEYS, reason="no room", refusal={"kind": "x"}, need=(5, 6, 0))
              if isinstance(op, Put)]
    entry = IndexEntry.decode(_kv(put))
    assert (entry.need, entry.claims, entry.stuck, entry.holder) == ((5, 6, 0), 0, False, "")
    assert (rec.reason, rec.refusal) == ("no room", {"kind": "x"})
    for status in (S.PENDING, S.PARKED):  # binding some keeps the job with the claim that holds it
        (put,) = apply_event(record(status), E.BIND_SOME, KEYS, holder="c1")
        assert IndexEntry.decode(_kv(put)).holder == "c1"
    (put,) = apply_event(rec, E.BIND_SOME, KEYS)  # progress of a parked job: count reset, need ZERO
    assert IndexEntry.decode(_kv(put)) == IndexEntry("j", 0, ZERO)
    apply_event(rec, E.PLACE_ALL, KEYS, 9.0)
    assert (rec.placed_at, rec.reason, rec.refusal) == (9.0, "", None)
    (put,) = apply_event(rec, E.TASK_EVICTED, KEYS)
    assert IndexEntry.decode(_kv(put)) == IndexEntry("j")
    stuck = record(S.PENDING)
    (put,) = [op for op in apply_event(stuck, E.PARK, KEYS, reason="crashed", claims=3, stuck=True)
              if isinstance(op, Put)]
    assert IndexEntry.decode(_kv(put)) == IndexEntry("j", 3, None, True)
    failed = record(S.PLACED)
    failed.failures = 4
    apply_event(failed, E.FAIL, KEYS, 11.0)
    assert failed.finished_at == 11.0 and "4 task failures exceed max_failures=3" in failed.reason
    cancelled = record(S.PARKED)
    apply_event(cancelled, E.CANCEL, KEYS, 12.0)
    assert (cancelled.finished_at, cancelled.reason, cancelled.refusal) == (12.0, "cancelled", None)
    with pytest.raises(InvalidInputError, match="needs the time"):
        apply_event(record(S.PENDING), E.CANCEL, KEYS)


def _kv(put: Put) -> KeyValue:
    return KeyValue(put.key, put.value, 1, 1, 1)


# -- nobody else writes a status ------------------------------------------------

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ["cellstate", "schedulers", "gpu", "api", "loadtests", "cellsched"]


def status_writes(tree: ast.AST) -> list[int]:
    """Lines that assign a `.status` attribute, by any spelling that writes it."""
    lines = []

    def targets(t):
        if isinstance(t, ast.Tuple | ast.List):
            for elt in t.elts:
                yield from targets(elt)
        elif isinstance(t, ast.Starred):
            yield from targets(t.value)
        else:
            yield t

    for node in ast.walk(tree):
        found = []
        if isinstance(node, ast.Assign):
            found = [t for tt in node.targets for t in targets(tt)]
        elif isinstance(node, ast.AugAssign | ast.AnnAssign):
            found = list(targets(node.target))
        elif isinstance(node, ast.Call):
            name = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
            if name in ("setattr", "__setattr__") and len(node.args) >= 2 \
                    and isinstance(node.args[1], ast.Constant) and node.args[1].value == "status":
                lines.append(node.lineno)
            if name == "replace" and any(k.arg == "status" for k in node.keywords):
                lines.append(node.lineno)
        lines += [t.lineno for t in found if isinstance(t, ast.Attribute) and t.attr == "status"]
    return lines


def test_job_states_no_module_but_the_state_machine_assigns_a_status():
    offenders, scanned = [], 0
    for pkg in PACKAGES:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            rel = path.relative_to(ROOT).as_posix()
            lines = status_writes(ast.parse(path.read_text(), rel))
            scanned += 1
            if rel == "cellstate/job_states.py":
                assert lines, "the walker must see the state machine's own status write"
                continue
            offenders += [f"{rel}:{n}" for n in lines]
    assert scanned > 20
    assert not offenders, f"status assigned outside cellstate/job_states.py: {offenders}"


def test_job_states_status_walker_sees_every_spelling():
    src = ("rec.status = 1\na.b.status, x = 1, 2\nrec.status += 1\nrec.status: int = 1\n"
           "setattr(rec, 'status', 1)\nobject.__setattr__(rec, 'status', 1)\nreplace(rec, status=1)\n"
           "JobRecord(job, status=1)\nstatus = 1\nrec.statuses = 1\n")
    assert status_writes(ast.parse(src)) == [1, 2, 3, 4, 5, 6, 7]


# -- tasks ----------------------------------------------------------------------

def test_job_states_task_states_follow_the_task_table(store):
    keys = make_cell(store, 4)
    job = Job("t", (TaskGroup("g", 3, (1000, 1024, 0)),), max_failures=1)
    submit_jobs(store, keys, [job], now=0.0)
    seen = [task_states(read_job_view(store, keys, "t").record)]

    def step(change):
        change()
        seen.append(task_states(read_job_view(store, keys, "t").record))

    step(lambda: commit(store, keys, "t", {0: "m0", 1: "m1", 2: "m2"}))
    step(lambda: release_tasks(store, keys, "t", ["t/0/0"], 1.0))  # finished
    step(lambda: release_tasks(store, keys, "t", ["t/0/1"], 2.0, TaskOutcome.EVICTED))
    step(lambda: release_tasks(store, keys, "t", ["t/0/2"], 3.0, TaskOutcome.FAILED))  # within policy
    step(lambda: commit(store, keys, "t", {1: "m3", 2: "m1"}))
    step(lambda: release_tasks(store, keys, "t", ["t/0/2"], 4.0, TaskOutcome.FAILED))  # past it: job fails
    step(lambda: release_tasks(store, keys, "t", ["t/0/1"], 5.0))  # still running when the job failed
    assert [s["t/0/2"] for s in seen] == [TaskState.PENDING, TaskState.RUNNING, TaskState.RUNNING,
                                         TaskState.RUNNING, TaskState.PENDING, TaskState.RUNNING,
                                         TaskState.FAILED, TaskState.FAILED]
    assert seen[-1] == {"t/0/0": TaskState.FINISHED, "t/0/1": TaskState.FINISHED, "t/0/2": TaskState.FAILED}
    edges = {(before[t], after[t]) for before, after in zip(seen, seen[1:], strict=False) for t in before}
    allowed = {(a, b) for (a, _), b in TASK_TRANSITIONS.items()} | {(s, s) for s in TaskState}
    assert edges <= allowed, edges - allowed
    rec = read_job_view(store, keys, "t").record
    assert rec.status is JobStatus.FAILED and rec.failures == 2 and "t/0/2" not in rec.done  # failed, not done
    assert check_store(store, keys, ["t"]).ok
    with pytest.raises(InvalidInputError):
        task_state(rec, "t/0/3")


def commit(store, keys, jid, where: dict[int, str], fences=None):
    view = read_job_view(store, keys, jid)
    req = view.record.job.groups[0].request
    claims = [Claim(task_id(jid, 0, i), m, req) for i, m in where.items()]
    return CommitEngine(store, keys).commit(Plan(claims, views(store, keys, 4), {jid: view}, fences or {}))


# -- cancel ---------------------------------------------------------------------

def test_cancel_placed_job_releases_every_task(store):
    keys = make_cell(store, 4)
    submit_jobs(store, keys, [make_job("c", 3), make_job("other", 1)], now=0.0)
    commit(store, keys, "c", {0: "m0", 1: "m1", 2: "m1"})
    commit(store, keys, "other", {0: "m1"})
    assert read_job_view(store, keys, "c").record.status is JobStatus.PLACED
    out = cancel_job(store, keys, "c", now=7.0, reason="user asked")
    assert sorted(out.released) == ["c/0/0", "c/0/1", "c/0/2"] and not out.already_cancelled
    rec = read_job_view(store, keys, "c").record
    assert (rec.status, rec.finished_at, rec.reason) == (JobStatus.CANCELLED, 7.0, "user asked")
    assert not rec.bound and not rec.done
    assert set(task_states(rec).values()) == {TaskState.CANCELLED}
    m = views(store, keys, 4)
    assert m["m0"].alloc.used == ZERO and list(m["m1"].alloc.tasks) == ["other/0/0"]
    assert m["m1"].alloc.used == (1000, 1024, 0)
    rep = check_store(store, keys, ["c", "other"])
    assert rep.ok and rep.bound_tasks == 1, rep.violations


def test_cancel_pending_job_leaves_the_queue_and_twice_is_idempotent(store):
    keys = make_cell(store, 2)
    submit_jobs(store, keys, [make_job("p", 2)], now=0.0)
    commit(store, keys, "p", {0: "m0"})  # partly bound: still PENDING, in the queue
    out = cancel_job(store, keys, "p", now=3.0)
    assert out.released == ["p/0/0"] and not out.already_cancelled
    assert store.get_prefix(keys.queue_prefix())[0] == []
    assert read_job_view(store, keys, "p").record.status is JobStatus.CANCELLED
    rev = store.current_revision()
    again = cancel_job(store, keys, "p", now=4.0)
    assert again.already_cancelled and again.released == [] and store.current_revision() == rev  # nothing written
    assert read_job_view(store, keys, "p").record.finished_at == 3.0
    assert check_store(store, keys, ["p"]).ok


def test_cancel_parked_job_leaves_the_parked_index(store):
    keys = make_cell(store, 2)
    submit_jobs(store, keys, [make_job("k", 1)], now=0.0)
    lease = store.grant_lease(30)
    (view,) = claim_jobs(store, keys, JobClass.BATCH, lease, "s", 10)
    assert park_job(store, keys, view, "no room", need=(1000, 1024, 0)) is not None
    assert len(store.get_prefix(keys.parked_prefix())[0]) == 1
    cancel_job(store, keys, "k", now=2.0)
    assert store.get_prefix(keys.parked_prefix())[0] == []
    assert read_job_view(store, keys, "k").record.status is JobStatus.CANCELLED
    assert check_store(store, keys, ["k"]).ok
    store.revoke_lease(lease)


def test_cancel_of_finished_or_failed_job_is_refused_and_writes_nothing(store):
    keys = make_cell(store, 2)
    submit_jobs(store, keys, [make_job("f", 1), Job("x", (TaskGroup("g", 1, (1000, 1024, 0)),), max_failures=0)],
                now=0.0)
    commit(store, keys, "f", {0: "m0"})
    commit(store, keys, "x", {0: "m1"})
    release_tasks(store, keys, "f", ["f/0/0"], 1.0)
    release_tasks(store, keys, "x", ["x/0/0"], 1.0, TaskOutcome.FAILED)
    rev = store.current_revision()
    for jid, status in (("f", "finished"), ("x", "failed")):
        with pytest.raises(IllegalTransitionError, match=f"'cancel' is not allowed in status '{status}'"):
            cancel_job(store, keys, jid, now=2.0)
    assert store.current_revision() == rev
    with pytest.raises(InvalidInputError, match="does not exist"):
        cancel_job(store, keys, "nope", now=2.0)


def test_cancel_fences_a_plan_decided_before_it(store):
    """A plan built before the cancel, committed after: refused, nothing written. Fenced
    (the planner holds the claim) and unfenced alike; the claim stays for its holder."""
    keys = make_cell(store, 4)
    submit_jobs(store, keys, [make_job("a", 2), make_job("b", 2)], now=0.0)
    lease = store.grant_lease(30)
    held = {v.record.job.id: v for v in claim_jobs(store, keys, JobClass.BATCH, lease, "s", 10)}
    machines = views(store, keys, 4)
    req = (1000, 1024, 0)
    fenced = Plan([Claim("a/0/0", "m0", req), Claim("a/0/1", "m1", req)], machines, {"a": held["a"]},
                  {"a": Fence.of(held["a"])})
    unfenced = Plan([Claim("b/0/0", "m2", req)], machines, {"b": read_job_view(store, keys, "b")})
    cancel_job(store, keys, "a", now=1.0)
    cancel_job(store, keys, "b", now=1.0)
    rev = store.current_revision()
    for plan in (fenced, unfenced):
        result = CommitEngine(store, keys).commit(plan)
        assert result.committed == []
        assert [r.kind for _, r in result.conflicted] == [RefusalKind.JOB_NOT_SCHEDULABLE] * len(plan.claims)
    assert store.current_revision() == rev  # nothing written
    assert all(v.alloc.used == ZERO for v in views(store, keys, 4).values())
    assert store.get(keys.claim(held["a"].claim)) is not None  # left to its holder, which deletes it
    assert check_store(store, keys, ["a", "b"]).ok
    store.revoke_lease(lease)


def test_cancel_while_a_scheduler_holds_the_job_it_lets_go():
    clock = SimClock()
    store = MemoryStore(clock=clock)
    keys = make_cell(store, 4)
    submit_jobs(store, keys, [make_job("s", 2)], now=0.0)
    sched = Scheduler("b", store, keys, BATCH, clock)
    attempt = sched.prepare()  # claimed and decided ...
    assert attempt is not None and attempt.decisions["s"].claims
    cancel_job(store, keys, "s", now=clock.now())  # ... cancelled before the commit
    out = sched.complete(attempt)
    assert out.committed == [] and out.placed == []
    assert store.get_prefix(keys.claims_prefix)[0] == []  # its holder deleted its claim: none of its jobs left
    assert read_job_view(store, keys, "s").record.status is JobStatus.CANCELLED
    rep = check_store(store, keys, ["s"])
    assert rep.ok and rep.bound_tasks == 0, rep.violations
    assert not sched.step()


def test_cancel_large_job_across_several_txns_then_purge():
    clock = SimClock(0.0)
    store = MemoryStore(StoreLimits(max_txn_ops=16), clock=clock)
    keys = make_cell(store, 20)  # more machines than one 16-op txn compares
    n = INLINE_TASKS + 12  # sharded bindings
    job = Job("big", (TaskGroup("g", n, (100, 128, 0)),))
    submit_jobs(store, keys, [job], now=0.0)
    result = CommitEngine(store, keys).commit(Plan([Claim(task_id("big", 0, i), f"m{i % 20}", (100, 128, 0))
                                                    for i in range(n)], views(store, keys, 20),
                                                   {"big": read_job_view(store, keys, "big")}))
    assert len(result.committed) == n and result.stats.txns >= 2
    assert read_job_view(store, keys, "big").record.status is JobStatus.PLACED
    rev = store.current_revision()
    out = cancel_job(store, keys, "big", now=1.0)
    assert len(out.released) == n and store.current_revision() - rev >= 2  # one txn could not hold it all
    assert all(v.alloc.used == ZERO and not v.alloc.tasks for v in views(store, keys, 20).values())
    assert check_store(store, keys, ["big"]).ok
    assert purge_finished(store, keys, now=100.0, retention_s=60.0) == ["big"]
    assert read_job_view(store, keys, "big") is None and store.get_prefix(keys.bind_root)[0] == []


def test_purge_of_a_job_that_is_not_terminal_is_refused(store):
    keys = make_cell(store, 1)
    submit_jobs(store, keys, [make_job("live", 1)], now=0.0)
    kv = store.get(keys.job("live"))
    with pytest.raises(IllegalTransitionError, match="'purge' is not allowed in status 'pending'"):
        purge_job(store, keys, kv, "live")
    assert read_job_view(store, keys, "live") is not None


def test_park_of_a_job_no_longer_parkable_writes_nothing(store):
    keys = make_cell(store, 2)
    submit_jobs(store, keys, [make_job("g", 1)], now=0.0)
    lease = store.grant_lease(30)
    (view,) = claim_jobs(store, keys, JobClass.BATCH, lease, "s", 10)
    cancel_job(store, keys, "g", now=1.0)
    fresh = read_job_view(store, keys, "g")
    rev = store.current_revision()
    stale = type(view)(fresh.record, fresh.revision, view.claim_revision)
    assert park_job(store, keys, stale, "no room", need=None) is None
    assert store.current_revision() == rev
    store.revoke_lease(lease)


def test_crash_limit_parks_a_large_job_for_good(store):
    """park_for_good writes the job record, so a sharded job must be read whole first."""
    keys = make_cell(store, 2)
    submit_jobs(store, keys, [make_job("huge", INLINE_TASKS + 1)], now=0.0)
    commit(store, keys, "huge", {0: "m0"})  # a shard exists, the record holds counts
    for _ in range(3):  # three schedulers claim it and die without progress
        lease = store.grant_lease(30)
        assert [v.record.job.id for v in claim_jobs(store, keys, JobClass.BATCH, lease, "s", 1, crash_limit=3)] \
            == ["huge"]
        store.revoke_lease(lease)
    lease = store.grant_lease(30)
    assert claim_jobs(store, keys, JobClass.BATCH, lease, "s", 1, crash_limit=3) == []
    rec = read_job_view(store, keys, "huge").record
    assert rec.status is JobStatus.PARKED and rec.refusal == {"kind": "crash_limit", "claims": 3}
    assert rec.bound == {"huge/0/0": "m0"}
    (kv,) = store.get_prefix(keys.parked_prefix())[0]
    # parked for good by the claim txn that found the limit: no claim key is left holding it
    assert IndexEntry.decode(kv).stuck and store.get_prefix(keys.claims_prefix)[0] == []
    assert check_store(store, keys, ["huge"]).ok
    store.revoke_lease(lease)
