"""The scheduler loop (docs/architecture.md, "The path of one job"), plain Python: no Ray, time from a Clock.

One iteration, split in two so a discrete-event simulation can put the think time
between them (Omega §4: a decision reads the cell at t and commits at t + think):

    prepare():  keep the lease -> sync the cache -> claim jobs -> decide each on the
                cache's columns and assume its claims there
    complete(): commit every claim of the batch -> confirm the fresh views in the cache
                and forget what did not commit -> per job: placed, retry (conflict), or
                park with the reason

``step()`` runs both back to back (sleeping the modelled think time on the clock, if
any); ``run()`` steps until a stop event or deadline.

What happens to a claimed job after an attempt:
    fully placed                  -> done (the commit engine drops the claim and queue entry)
    some task had no machine      -> parked with the reason; retried when capacity frees
                                     or every parked_retry_s
    conflicted                    -> kept and retried next step on fresh state; after
                                     max_retries attempts in a row that placed nothing,
                                     parked with the last conflict as its reason
    lease lost                    -> forgotten: the claim is gone and another scheduler
                                     may hold the job now
"""

from __future__ import annotations

import threading

from cellsched.cellstate.claims import park_job, release_claim
from cellsched.cellstate.clock import Clock
from cellsched.cellstate.commit import CommitEngine, CommitResult, Fence, Plan
from cellsched.cellstate.errors import InvalidInputError, LeaseNotFoundError, StoreUnavailableError
from cellsched.cellstate.keys import CellKeys
from cellsched.cellstate.model import JobStatus
from cellsched.cellstate.planner import Planner
from cellsched.cellstate.resources import Vector
from cellsched.cellstate.store import CellStore
from cellsched.cellstate.validation import Refusal
from cellsched.cellstate.views import JobView, read_job_view

from .attempts import Attempt, HeldJob, Outcome
from .cache import SchedulerCache
from .claiming import Claimer, smallest_need
from .cpu_baton import NO_BATON, BatonStore, CpuBaton, NoBaton, baton_store
from .decide import DecideFn, Decision, decide_batches, decide_job, decision_seed
from .decision_trace import DecisionTracer
from .gang_limit import fit_gang_in_one_txn
from .history import note_commit, park_history, settled_view, view_with_history
from .isolated_commit import commit_isolated
from .lease import LeaseKeeper
from .metrics import SchedulerMetrics
from .metrics_publish import MetricsPublisher
from .settings import SchedulerSettings
from .shared_cache import can_share_cache

MAX_LOOP_ERRORS_IN_A_ROW = 5


class Scheduler:
    def __init__(self, name: str, store: CellStore, keys: CellKeys, settings: SchedulerSettings, clock: Clock,
                 decide_fn: DecideFn | None = None, planner: Planner | None = None, baton: CpuBaton | None = None,
                 cache: SchedulerCache | None = None):
        self.name = name
        # Loops sharing an interpreter step one at a time and hand the baton on while they wait
        # on the store (schedulers/cpu_baton.py); without one, every step just runs.
        self.baton: CpuBaton | NoBaton = baton if baton is not None else NO_BATON
        store = baton_store(store, baton)
        self.store = store
        # On a store in this process (its calls keep the baton) a step without think time
        # decides and commits under one hold: handing the baton on between the halves only
        # queues the commit behind the other loops' steps (a wake-up more per step) and lets
        # them commit between this loop's decision and its commit (8 loops on the memory
        # store at 90% CPU: failed txn fraction 0.02-0.06; under one hold, 0). On a store
        # that waits on another process the halves keep their own holds: measured on a
        # 3-member etcd, one hold per step raised the failed txn fraction at 90% CPU
        # (0.04-0.32 against 0.02-0.13).
        self._whole_steps = baton is not None and not isinstance(store, BatonStore)
        self.keys = keys
        self.settings = settings
        self.clock = clock
        self.decide_fn: DecideFn = decide_fn or decide_job
        self.policy = settings.policy
        # What the plans are committed through (cellstate.planner); by default the engine the
        # settings describe. Given one, the scheduler owns it: close() closes it.
        self.engine: Planner = planner if planner is not None else CommitEngine(
            store, keys, settings.conflict_mode, clock, settings.txns_in_flight, settings.max_tasks_per_machine)
        # The queue, the parked index and the prefetch of the next batch (schedulers/claiming.py).
        self.claimer = Claimer(name, store, keys, settings, clock)
        # A cache given is shared with the other loops of this baton (schedulers/shared_cache.py); their
        # owner closes it. Sound only if no other loop can run inside one of its operations.
        if cache is not None and not can_share_cache(cache.store, baton):
            raise InvalidInputError(f"{name}: a shared cache needs a CPU baton, and a client for the cache that keeps it")
        self._owns_cache = cache is None
        self.cache = cache if cache is not None else SchedulerCache(
            store, keys, settings.max_tasks_per_machine, settings.array_backend)
        self._freed_seen = self.cache.freed_count  # capacity freed as this loop last saw it (_sync)
        self._idle, self._synced_at = False, float("-inf")  # run()'s last step did nothing; the last sync
        self.held: dict[str, HeldJob] = {}  # insertion order = claim order = priority order
        self._metrics = SchedulerMetrics(started_at=clock.now())
        self.lease = LeaseKeeper(store, settings.lease_ttl_s, clock, settings.lease_stall_s)
        # Attempts per job survive parking and re-claiming, so a retry never reuses a seed.
        self._attempts: dict[str, int] = {}
        self.trace = DecisionTracer(self)  # a span per batch attempt (schedulers/decision_trace.py)
        self.publisher = MetricsPublisher(self)  # metrics under the lease (schedulers/metrics_publish.py)

    # -- the loop ---------------------------------------------------------------

    def step(self) -> bool:
        """One iteration: claim a batch, decide, commit. Returns whether it did work."""
        with self.baton.held():
            attempt = self.prepare()
            if attempt is not None and attempt.think_s <= 0 and self._whole_steps:
                self.complete(attempt)
                return True
        if attempt is None:
            return False
        self.clock.sleep(attempt.think_s)
        with self.baton.held():
            self.complete(attempt)
        return True

    def run(self, stop: threading.Event | float) -> None:
        """Step until `stop` is set (an Event) or the clock reaches it (a deadline)."""
        def done() -> bool:
            return stop.is_set() if isinstance(stop, threading.Event) else self.clock.now() >= stop

        if self.clock.real_time:
            self.lease.start(self.name)  # a long step must not let the claims lapse (schedulers/lease.py)
        failed_in_a_row = 0
        while not done():
            try:
                worked = self.step()
                failed_in_a_row = 0
            except StoreUnavailableError:
                # Held jobs stay held: their next commit is validated against the job
                # records it compares, so a chunk that landed before the outage is seen.
                self._metrics.store_errors += 1
                self._refresh_held()
                worked = False
            except LeaseNotFoundError:  # expired between our checks: forget what it fenced
                self._lose_lease(Outcome())
                worked = False
            except Exception:
                # Not one job's fault (those are parked in step): the loop's own state may be
                # bad. Retry a few times; then let it die, so its process restarts fresh.
                self._metrics.loop_errors += 1
                failed_in_a_row += 1
                if failed_in_a_row >= MAX_LOOP_ERRORS_IN_A_ROW:
                    raise
                worked = False
            self.publisher.tick()
            self._idle = not worked
            if not worked:
                self.clock.sleep(self.settings.idle_poll_s)

    def _refresh_held(self) -> None:
        """After an outage, re-read the held jobs: a commit cut short may have landed in part."""
        for jid, held in list(self.held.items()):
            try:
                fresh = read_job_view(self.store, self.keys, jid)
            except StoreUnavailableError:
                return  # still down; the engine's validation catches stale views anyway
            if fresh is None:
                del self.held[jid]
            else:
                held.view = fresh

    def prepare(self) -> Attempt | None:
        """Keep the lease, sync, claim and decide. None when there is nothing to do."""
        started = self.clock.now()
        self.trace.start()
        self.lease.tick()
        lease_id = self._keep_lease()
        if not self._idle or self.clock.now() >= self._synced_at + self.settings.idle_sync_s:
            self._sync()  # an idle loop follows the watch every idle_sync_s only (settings.py)
        self._claim(lease_id)
        if not self.held:
            return None  # nothing to decide: the next step's sync catches the copy up
        self._sync()  # the claims read job records at a newer revision: catch the cache up
        self.trace.begin(self.held)
        self.claimer.start_prefetch(lease_id, self.held)
        attempt = Attempt(started, 0.0, lease_id)
        for jid, held in self.held.items():
            held.attempts = self._attempts.get(jid, 0) + 1
            self._attempts[jid] = held.attempts
            held.unwritten_attempts += 1
            if held.attempts == 1:
                self._metrics.wait_first_attempt_s.append(started - held.view.record.submitted_at)
        with self.trace.scoring(attempt):
            # Alike one-task jobs first, a pass per kind, assumed at once (decide.decide_batches); then the rest.
            batched = {} if not self.settings.batch_alike or self.decide_fn is not decide_job else decide_batches(
                self.cache.columns, {j: h.view.record for j, h in self.held.items()},
                {j: h.attempts for j, h in self.held.items()}, self.policy, self.settings.seed,
                lambda claims: self._assume(attempt, claims))
            for jid, held in self.held.items():
                decision = batched.get(jid)
                if decision is None:
                    rec = held.view.record
                    try:
                        decision = fit_gang_in_one_txn(rec, self.store.limits.max_txn_ops, self.decide_fn(
                            self.cache.columns, self.cache.index, rec, self.policy,
                            decision_seed(self.settings.seed, jid, held.attempts)))
                    except Exception as exc:  # one job's bug must not stop the loop: park it (nothing assumed)
                        attempt.crashed[jid] = f"scheduler error while deciding: {exc!r}"
                        continue
                    self._assume(attempt, decision.claims)
                attempt.decisions[jid] = decision
        tasks = sum(d.tasks_decided for d in attempt.decisions.values())
        attempt.think_s = self.settings.think_time.for_jobs(len(attempt.decisions), tasks)
        return attempt

    def _assume(self, attempt: Attempt, claims: list) -> None:
        self.cache.assume(claims)  # so the next decision of the batch sees them
        attempt.assumed += claims

    def complete(self, attempt: Attempt) -> Outcome:
        """Commit the attempt's claims and settle every job it decided."""
        try:
            return self._complete(attempt)
        finally:
            # However complete ends, what the commit's views did not confirm (conflicts,
            # jobs parked or whose commit raised, a lost lease, an outage) is forgotten.
            self.cache.forget(attempt.assumed)
            self.trace.end()

    def _complete(self, attempt: Attempt) -> Outcome:
        out = Outcome()
        self.lease.tick()
        if not self.lease.alive(attempt.lease_id, only_if_due=True):
            self._lose_lease(out)
            self._metrics.busy_s += self.clock.now() - attempt.started_at
            return out
        decided_at = self.clock.now()
        claims = attempt.claims
        result = CommitResult()
        for jid, why in attempt.crashed.items():
            self._park(jid, self.held[jid], why, out, need=None)
        if claims:
            try:
                result = self._commit_isolated(attempt, out)
            except StoreUnavailableError:
                self._metrics.busy_s += self.clock.now() - attempt.started_at
                raise
        # The commit's fresh views confirm what landed; complete() forgets the rest.
        self.cache.confirm(result.machines)
        out.committed = result.committed
        self._settle_jobs(attempt, result, out)
        self.claimer.drop_settled_claims(self.held.values())
        self.trace.settled(attempt, result, out)
        m = self._metrics
        m.record_commit(result.stats, len(result.committed), len(result.conflicted))
        m.record_decision(decided_at - attempt.started_at, len(result.committed), len(result.conflicted))
        m.iterations += 1
        m.busy_s += self.clock.now() - attempt.started_at
        return out

    def _plan(self, decisions: dict[str, Decision]) -> Plan:
        claims = [c for d in decisions.values() for c in d.claims]
        jobs = {jid: view_with_history(self.held[jid]) for jid, d in decisions.items() if d.claims}
        fences = {jid: Fence(self.held[jid].claim, self.held[jid].claim_revision) for jid in jobs}
        return Plan(claims, self.cache.views(sorted({c.machine_id for c in claims})), jobs, fences)

    def _commit_isolated(self, attempt: Attempt, out: Outcome) -> CommitResult:
        def crashed(jid: str, reason: str) -> None:
            attempt.crashed[jid] = reason
            self._park(jid, self.held[jid], reason, out, need=None)
        return commit_isolated(self.engine, self._plan, attempt.decisions, crashed)

    # -- per job ----------------------------------------------------------------

    def _settle_jobs(self, attempt: Attempt, result: CommitResult, out: Outcome) -> None:
        committed: dict[str, int] = {}
        for c in result.committed:
            committed[c.job_id] = committed.get(c.job_id, 0) + 1
        note_commit(self.held, committed, result.conflicted, self.clock.now())
        conflicts: dict[str, Refusal] = {}
        for c, why in result.conflicted:
            conflicts.setdefault(c.job_id, why)  # the first refusal, as data
        for jid, decision in attempt.decisions.items():
            if jid in attempt.crashed:
                continue  # parked already
            held = self.held[jid]
            if jid in result.jobs:
                held.view = settled_view(held, result.jobs[jid], bool(committed.get(jid)))
            rec = held.view.record
            if rec.status is JobStatus.PLACED:
                if committed.get(jid):  # placed by this commit, not by someone who took it over
                    self._metrics.record_placed(rec.submitted_at, rec.placed_at or self.clock.now(), held.attempts)
                    out.placed.append(jid)
                del self.held[jid]
                self._attempts.pop(jid, None)
            elif rec.status not in (JobStatus.PENDING, JobStatus.PARKED):
                del self.held[jid]  # cancelled or finished meanwhile: its entry went, and the claim on it
                self._attempts.pop(jid, None)
            elif jid in conflicts:
                self._after_conflict(jid, held, committed.get(jid, 0) > 0, conflicts[jid], out)
            elif decision.unplaced:
                self._park(jid, held, decision.reason, out, need=smallest_need(rec), refusal=decision.refusal())
            elif decision.tasks_decided == 0:  # nothing left to place that we can see
                release_claim(self.store, self.keys, self._claimed_view(held))
                del self.held[jid]
            else:  # everything it claimed committed, yet unbound tasks remain: decide again
                out.retrying.append(jid)

    def _after_conflict(self, jid: str, held: HeldJob, progressed: bool, why: Refusal, out: Outcome) -> None:
        held.no_progress = 0 if progressed else held.no_progress + 1
        if held.no_progress > self.settings.max_retries:
            self._metrics.jobs_parked_no_progress += 1
            self._park(jid, held, f"no progress after {held.no_progress} conflicted attempts; last: {why}", out,
                       need=smallest_need(held.view.record),
                       refusal={"kind": "no_progress", "attempts": held.no_progress, "last": why.to_obj()})
        else:
            out.retrying.append(jid)

    def _park(self, jid: str, held: HeldJob, reason: str, out: Outcome, need: Vector | None,
              refusal: dict | None = None) -> None:
        view = self._claimed_view(held)
        parked = park_job(self.store, self.keys, view, reason, need,
                          refusal if refusal is not None else {"kind": "error", "detail": reason}, park_history(held))
        if parked is None:  # the record changed under us: re-read and decide again next step
            fresh = read_job_view(self.store, self.keys, jid)
            if fresh is None:
                del self.held[jid]
            else:
                held.view = fresh
                out.retrying.append(jid)
            return
        del self.held[jid]  # park_job dropped our claim; the job stays queued
        self._metrics.jobs_parked += 1
        out.parked[jid] = reason

    # -- claims, sync, lease --------------------------------------------------------

    def _claim(self, lease_id: int) -> None:
        try:
            self._hold(self.claimer.collect_prefetch(self.lease.lease_id))
        except LeaseNotFoundError:
            self._lose_lease(Outcome())
        room = self.settings.claim_batch - len(self.held)
        if room <= 0 or lease_id != self.lease.lease_id:
            return
        try:
            views = self.claimer.claim(lease_id, room, self.held, self.cache.free_rows)
        except LeaseNotFoundError:  # expired since _keep_lease: the next step starts a new one
            self._lose_lease(Outcome())
            return
        self._hold(views)

    def _hold(self, views: list[JobView]) -> None:
        for view in views:
            self.held.setdefault(view.record.job.id, HeldJob(view, view.claim_revision, claim=view.claim))
        self.claimer.note_claims(views)

    @staticmethod
    def _claimed_view(held: HeldJob) -> JobView:
        return JobView(held.view.record, held.view.revision, held.claim_revision, held.claim)

    def _sync(self) -> None:
        with self.trace.sync():
            self.cache.sync()
            self._synced_at = self.clock.now()
            # Counted, not the sync's return: on a shared copy another loop's sync may have applied it.
            if self.cache.freed_count != self._freed_seen:
                self._freed_seen = self.cache.freed_count
                self.claimer.capacity_freed()

    def _keep_lease(self) -> int:
        lease = self.lease
        if lease.lease_id and lease.due() and not lease.alive(lease.lease_id):
            self._lose_lease(Outcome())
        return lease.ensure()

    def _lose_lease(self, out: Outcome) -> None:
        """The lease expired: every claim bound to it is gone, so forget those jobs."""
        self._metrics.lease_losses += 1
        self._metrics.jobs_lost_to_lease += len(self.held)
        self.held.clear()
        self.claimer.forget_claims()  # gone with the lease
        self.lease.drop()
        out.lease_lost = True

    # -- reading ----------------------------------------------------------------------

    def metrics(self) -> dict:
        return {"scheduler": self.name, "job_class": self.settings.job_class.value,
                **self._metrics.snapshot(self.clock.now()),
                "parked_rounds": self.claimer.parked_rounds,
                "lease_background_refreshes": self.lease.background_refreshes}

    @property
    def raw_metrics(self) -> SchedulerMetrics:
        return self._metrics

    def close(self) -> None:
        self.claimer.close()  # before the revoke, so no claim txn races it
        self.lease.close()  # revokes the lease: every claim bound to it goes at once
        self.engine.close()
        if self._owns_cache:
            self.cache.close()
