"""The commit engine: turn a plan of task -> machine claims into etcd transactions.

Omega §5.2. Every txn compares the mod_revision of each touched machine (spec and
allocation record) and each touched job, writes the new allocation records and job
records, and in its failure branch reads the current values of exactly those keys, so
a conflict costs no extra round trip. Then:
- SEQUENCE: a claim on a machine that changed since the snapshot is a conflict;
- RESOURCE_FIT: the fit check is re-run on the fresh values, and claims that still fit
  are re-committed against the new revisions.
INCREMENTAL jobs keep every claim that survives; ALL_OR_NOTHING (gang) jobs keep all or
none. Plans larger than one txn are chunked; a gang must fit in one txn (limits below).

A txn whose outcome is unknown (ack lost) is settled by reading the touched keys before
any retry: the job record says whether our bindings landed. Since bindings live in the
job record and every txn compares it, a task can never be bound twice.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, nullcontext

from . import codec
from . import resources as res
from .chunking import chunk_claims, max_gang_machines
from .clock import Clock, RealClock
from .codec import is_sharded
from .errors import (
    CommitOutcomeUnknown,
    GangTooLargeError,
    InvalidInputError,
    StoreUnavailableError,
    UnknownMachineError,
)
from .job_states import JobEvent, apply_event, commit_event
from .keys import CellKeys
from .model import AllocationRecord, Claim, ConflictMode, JobRecord, TransactionMode
from .plan import CommitResult, CommitStats, Fence, Plan
from .shards import attach_shards, encode_shard, group_by_job
from .store import CellStore, Get, ModRevisionIs, Op, Put
from .validation import DEFAULT_MAX_TASKS_PER_MACHINE, Refusal, RefusalKind, validate_claims
from .views import JobView, MachineView, read_machine_views

__all__ = ["CommitEngine", "CommitResult", "CommitStats", "Fence", "Plan", "max_gang_machines"]

# Sees every commit txn: given the txn's claims, a context around the store call whose value is
# told whether the txn succeeded. Schedulers trace with it; cellstate stays free of tracing.
TxnObserver = Callable[[list[Claim]], AbstractContextManager[Callable[[bool], None]]]
MAX_ROUNDS_PER_CHUNK = 16
SETTLE_ATTEMPTS = 50


class CommitEngine:
    def __init__(self, store: CellStore, keys: CellKeys, conflict_mode: ConflictMode = ConflictMode.RESOURCE_FIT,
                 clock: Clock | None = None, max_in_flight: int = 1,
                 max_tasks_per_machine: int = DEFAULT_MAX_TASKS_PER_MACHINE):
        if max_in_flight < 1:
            raise InvalidInputError("max_in_flight must be at least 1")
        self.store = store
        self.keys = keys
        self.conflict_mode = conflict_mode
        self.clock = clock or RealClock()
        # Chunk txns sent at once. A txn's latency is mostly the store's (a Raft round), so
        # several in flight keep it busy while this process waits; only chunks that share
        # no machine and no job go together, so they cannot conflict with each other.
        self.max_in_flight = max_in_flight
        self.max_tasks_per_machine = max_tasks_per_machine
        self._pool: ThreadPoolExecutor | None = None
        self.txn_observer: TxnObserver = lambda claims: nullcontext(lambda succeeded: None)

    # -- validation -----------------------------------------------------------

    def _validate(self, plan: Plan) -> dict[str, set[str]]:
        """Refuse a malformed plan whole; return the machines each job touches."""
        machines, jobs = plan.machines, plan.jobs
        by_job: dict[str, set[str]] = defaultdict(set)
        n = 0
        for c in plan.claims:
            if c.machine_id not in machines:
                raise UnknownMachineError(f"claim {c.task_id}: unknown machine {c.machine_id!r}")
            if c.job_id not in jobs:
                raise InvalidInputError(f"claim {c.task_id}: job {c.job_id!r} is not in the plan")
            res.check_vector(c.request, f"claim {c.task_id}.request")
            by_job[c.job_id].add(c.machine_id)
            n += 1
        if len({c.task_id for c in plan.claims}) != n:
            seen: set[str] = set()
            for c in plan.claims:
                if c.task_id in seen:
                    raise InvalidInputError(f"claim {c.task_id}: task appears twice in the plan")
                seen.add(c.task_id)
        return by_job

    def _check_gangs(self, plan: Plan, by_job: dict[str, set[str]]) -> None:
        limit = self.store.limits.max_txn_ops
        for jid, ms in by_job.items():
            job = plan.jobs[jid].record.job
            widest = max_gang_machines(limit, is_sharded(job))
            if job.mode is TransactionMode.ALL_OR_NOTHING and len(ms) > widest:
                raise GangTooLargeError(
                    f"gang job {jid} spans {len(ms)} machines; one txn holds at most "
                    f"{widest} machines with max_txn_ops={limit}")

    # -- chunking -------------------------------------------------------------

    def _chunks(self, plan: Plan) -> list[list[Claim]]:
        return chunk_claims(plan.claims, plan.machines, plan.jobs, self.store.limits,
                            {jid: f.claim for jid, f in plan.fences.items()})

    # -- the commit loop --------------------------------------------------------

    def commit(self, plan: Plan) -> CommitResult:
        """Commit as much of the plan as the conflict and transaction modes allow."""
        by_job = self._validate(plan)
        self._check_gangs(plan, by_job)
        machines = dict(plan.machines)
        jobs = dict(plan.jobs)
        out = CommitResult()
        chunks = self._chunks(plan)
        foreign: set[str] = set()  # machines seen changed by others since the decision
        if self.max_in_flight > 1 and len(chunks) > 1:
            self._commit_waves(chunks, machines, jobs, out, plan.fences, foreign)
        else:
            for chunk in chunks:
                self._commit_chunk(chunk, machines, jobs, out, plan.fences, foreign)
        touched_m = {c.machine_id for c in plan.claims}
        touched_j = {c.job_id for c in plan.claims}
        out.machines = {m: machines[m] for m in touched_m}
        out.jobs = {j: jobs[j] for j in touched_j}
        return out

    def _commit_waves(self, chunks: list[list[Claim]], machines: dict[str, MachineView],
                      jobs: dict[str, JobView], out: CommitResult, fences: Mapping[str, Fence],
                      foreign: set[str]) -> None:
        """Commit chunks up to max_in_flight at a time, in order, as waves of chunks that touch
        disjoint machines and jobs. Each chunk writes only its own keys of `machines` and `jobs`
        and its own result, merged in chunk order, so the outcome is the sequential one's."""
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.max_in_flight, thread_name_prefix="commit")
        wave: list[list[Claim]] = []
        seen: set[str] = set()
        for chunk in chunks:
            touched = {c.machine_id for c in chunk} | {"\0job:" + c.job_id for c in chunk}
            if wave and (len(wave) == self.max_in_flight or not seen.isdisjoint(touched)):
                self._run_wave(wave, machines, jobs, out, fences, foreign)
                wave, seen = [], set()
            wave.append(chunk)
            seen |= touched
        self._run_wave(wave, machines, jobs, out, fences, foreign)

    def _run_wave(self, wave: list[list[Claim]], machines: dict[str, MachineView], jobs: dict[str, JobView],
                  out: CommitResult, fences: Mapping[str, Fence], foreign: set[str]) -> None:
        parts = [CommitResult() for _ in wave]
        assert self._pool is not None
        futures = [self._pool.submit(self._commit_chunk, chunk, machines, jobs, part, fences, foreign)
                   for chunk, part in zip(wave, parts, strict=True)]
        for f in futures:
            f.result()  # re-raises a chunk's error (e.g. the store unreachable) after all have finished
        for part in parts:  # a chunk's part holds no views: those are the plan's, set once at its end
            out.add(part)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

    def _commit_chunk(self, chunk: list[Claim], machines: dict[str, MachineView], jobs: dict[str, JobView],
                      out: CommitResult, fences: Mapping[str, Fence], foreign: set[str]) -> None:
        """Commit one chunk, round after round, until it lands or nothing of it is left.

        Before EVERY txn the claims are validated against exactly the views that txn
        compares (docs/architecture.md, "The commit protocol"): an earlier chunk's failure
        reads may have refreshed a machine this chunk touches, and a claim decided on the
        older revision must fit the newer one, or it is refused.
        """
        pending = list(chunk)
        recheck: set[str] = set()  # machines refreshed by this chunk's last failure
        for _ in range(MAX_ROUNDS_PER_CHUNK):
            changed = foreign if self.conflict_mode is ConflictMode.SEQUENCE else frozenset()
            pending, refused = self._validate_claims(pending, machines, jobs, changed)
            out.conflicted += refused
            if recheck:
                out.stats.recommitted += sum(1 for c in pending if c.machine_id in recheck)
            if not pending:
                return
            compares, success, failure, new_allocs, new_jobs = self._build_txn(pending, machines, jobs, fences)
            out.stats.txns += 1
            try:
                with self.txn_observer(pending) as seen:
                    result = self.store.txn(compares, success, failure)
                    seen(result.succeeded)
            except CommitOutcomeUnknown:
                out.stats.unknown_outcomes += 1
                landed, result = self._settle(pending, jobs, failure)
                if landed:  # our txn was applied; the fresh reads already show its writes
                    self._refresh(result.reads, machines, jobs, (c.machine_id for c in pending))
                    out.committed += pending
                    out.revision = max(out.revision, result.revision)
                    return
            else:
                if result.succeeded:
                    self._apply_success(pending, machines, jobs, new_allocs, new_jobs, result.revision, out)
                    return
                out.stats.conflicted_txns += 1
            recheck = self._refresh(result.reads, machines, jobs, (c.machine_id for c in pending))
            foreign |= recheck
            pending = self._drop_unfenced(pending, result.reads, fences, out)
        for c in pending:
            out.conflicted.append((c, Refusal(RefusalKind.GAVE_UP, c.machine_id,
                                              detail=f"{MAX_ROUNDS_PER_CHUNK} rounds of conflicts")))

    def _validate_claims(self, claims: list[Claim], machines: Mapping[str, MachineView],
                         jobs: Mapping[str, JobView], changed) -> tuple[list[Claim], list[tuple[Claim, Refusal]]]:
        """The shared rule (cellstate.validation); its one call site, so a test can show that
        the stress harness catches an engine without it."""
        return validate_claims(claims, machines, jobs, self.max_tasks_per_machine, changed)

    def _drop_unfenced(self, claims: list[Claim], reads, fences: Mapping[str, Fence],
                       out: CommitResult) -> list[Claim]:
        """Refuse the claims of jobs whose claim key is no longer ours (lease expired,
        released or taken over): only the holder of a job's claim may commit for it."""
        if not fences:
            return claims
        seen: dict[str, int] = {}
        prefix = self.keys.claims_prefix
        for r in reads:
            for kv in r:
                if kv.key.startswith(prefix):
                    seen[self.keys.last_segment(kv.key)] = kv.mod_revision
        lost = {jid for jid, f in fences.items() if seen.get(f.claim, 0) != f.revision}
        keep = []
        for c in claims:
            if c.job_id in lost:
                out.conflicted.append((c, Refusal(RefusalKind.CLAIM_LOST, c.machine_id)))
            else:
                keep.append(c)
        return keep

    def _build_txn(self, claims: list[Claim], machines: dict[str, MachineView], jobs: dict[str, JobView],
                   fences: Mapping[str, Fence]):
        by_machine: dict[str, dict[str, res.Vector]] = defaultdict(dict)
        by_job: dict[str, dict[str, str]] = defaultdict(dict)
        for c in claims:
            by_machine[c.machine_id][c.task_id] = c.request
            by_job[c.job_id][c.task_id] = c.machine_id
        compares: list[ModRevisionIs] = []
        success: list[Op] = []
        failure: list[Op] = []
        new_allocs: dict[str, AllocationRecord] = {}
        new_jobs: dict[str, JobRecord] = {}
        keys = self.keys
        for mid, added in by_machine.items():
            view = machines[mid]
            # One compare per machine: every spec write rewrites the allocation record too
            # (cellstate/machines.py), so its revision moves on any change of the machine.
            ak = keys.alloc(mid)
            compares.append(ModRevisionIs(ak, view.alloc_revision))
            rec = codec.alloc_with_tasks(view.alloc, added)
            new_allocs[mid] = rec
            success.append(Put(ak, codec.encode_alloc(rec)))
            failure.append(Get(ak))
        now = self.clock.now()
        fenced: set[str] = set()
        for jid, bound in by_job.items():
            job_view = jobs[jid]
            job_rec = job_view.record.copy()
            job_rec.bound.update(bound)
            sharded = is_sharded(job_rec.job)
            if sharded:  # this txn's bindings go in a shard of their own (cellstate.shards)
                success.append(Put(keys.bind(jid, job_rec.next_shard), encode_shard(bound, ())))
                for tid in bound:
                    job_rec.shard_of[tid] = job_rec.next_shard
                job_rec.next_shard += 1
            if job_rec.first_attempt_at is None:
                job_rec.first_attempt_at = now
            # The validator let only schedulable jobs through
            # (docs/architecture.md, "Job states"). Binding the last task places the job: its
            # index entry and claim go.
            # Binding some resets the entry's count of claims without progress; an unfenced
            # commit (tools, tests) leaves the entry as it is.
            event = commit_event(job_rec)
            fence = fences.get(jid)
            if event is JobEvent.PLACE_ALL or fence is not None:
                success += apply_event(job_rec, event, keys, now, holder=fence.claim if fence else "")
            new_jobs[jid] = job_rec
            jk = keys.job(jid)
            compares.append(ModRevisionIs(jk, job_view.revision))
            success.append(Put(jk, codec.encode_job(job_rec)))
            failure.append(Get(jk))
            if sharded:
                failure.append(Get(keys.bind_prefix(jid), prefix=True))
            if fence is not None and fence.claim not in fenced:  # one compare per claim key, shared by its jobs
                fenced.add(fence.claim)
                compares.append(ModRevisionIs(keys.claim(fence.claim), fence.revision))
                failure.append(Get(keys.claim(fence.claim)))
        return compares, success, failure, new_allocs, new_jobs

    def _apply_success(self, claims, machines, jobs, new_allocs, new_jobs, revision, out: CommitResult) -> None:
        for mid, rec in new_allocs.items():
            old = machines[mid]  # never mutate: the caller's snapshot may share this view
            machines[mid] = MachineView(old.machine, old.spec_revision, rec, revision)
        for jid, rec in new_jobs.items():
            jobs[jid] = JobView(rec, revision)
        out.committed += claims
        out.revision = max(out.revision, revision)

    def _settle(self, claims: list[Claim], jobs, failure_reads):
        """After an unknown outcome, read the touched keys until we know what happened.

        Returns (landed, fresh reads). The txn was atomic and wrote the job records, so
        it landed iff every claim's task is now bound exactly where the claim put it
        (none of them was before). Should another commit have bound the very same tasks
        to the very same machines, the store holds what we planned either way.
        """
        delay = 0.05
        for _ in range(SETTLE_ATTEMPTS):
            try:
                result = self.store.txn([], failure_reads)
            except StoreUnavailableError:
                self.clock.sleep(delay)
                delay = min(delay * 2, 1.0)
                continue
            fresh = {jid: v.record for jid, v in self._jobs_from_reads(result.reads).items()}
            landed = all(
                c.job_id in fresh and fresh[c.job_id].bound.get(c.task_id) == c.machine_id
                and jobs[c.job_id].record.bound.get(c.task_id) != c.machine_id
                for c in claims)
            return landed, result
        raise StoreUnavailableError("could not settle an unknown commit outcome: the store stayed unreachable")

    def _jobs_from_reads(self, reads) -> dict[str, JobView]:
        """Job records in a txn's reads, each with its shards (read in the same txn)."""
        job_kvs, shard_kvs = [], []
        for r in reads:
            for kv in r:
                if kv.key.startswith(self.keys.jobs_prefix):
                    job_kvs.append(kv)
                elif kv.key.startswith(self.keys.bind_root):
                    shard_kvs.append(kv)
        shards = group_by_job(shard_kvs)
        return {self.keys.last_segment(kv.key): JobView(
            attach_shards(codec.decode_job(kv.key, kv.value), shards.get(self.keys.last_segment(kv.key), ())),
            kv.mod_revision) for kv in job_kvs}

    def _refresh(self, reads, machines: dict[str, MachineView], jobs: dict[str, JobView],
                 touched: Iterable[str]) -> set[str]:
        """Fold fresh reads into the views; returns the machines that changed. The reads hold
        the allocation records of `touched`: a machine whose record moved (or went) is read
        again whole, spec and record in one read, since a spec change moves its record too."""
        alloc_revs: dict[str, int] = {}
        for r in reads:
            for kv in r:
                if kv.key.startswith(self.keys.alloc_prefix):
                    alloc_revs[self.keys.last_segment(kv.key)] = kv.mod_revision
        for jid, job_view in self._jobs_from_reads(reads).items():
            old_job = jobs.get(jid)
            if old_job is not None and old_job.record.history is not None:
                # The history the planner merged in (schedulers/history.py) rides on every
                # write of this commit; a fenced one writes only while the planner holds the job.
                job_view.record.history = old_job.record.history
            jobs[jid] = job_view
        moved = [mid for mid in dict.fromkeys(touched)
                 if mid not in machines or machines[mid].alloc_revision != alloc_revs.get(mid, 0)]
        fresh = read_machine_views(self.store, self.keys, moved) if moved else {}
        changed: set[str] = set()
        for mid, view in fresh.items():
            old = machines.get(mid)
            if old is None or old.spec_revision != view.spec_revision or old.alloc_revision != view.alloc_revision:
                changed.add(mid)
            machines[mid] = view
        return changed
