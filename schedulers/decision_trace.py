"""One span per batch attempt of a scheduler (docs/architecture.md, "Observability").

    schedule.batch     prepare() to the end of complete(); a span LINK to the traceparent of
                       every job it decides (links, not children: a 4,096-job batch is one span),
                       the job ids in link order in `cellsched.linked_jobs`;
                       an event per conflicted claim (job, task, machine, the Refusal as data)
                       and per parked job (its reason and the counts of what refused it)
      schedule.sync    each sync of the scheduler cache
      schedule.score   the decisions: kernel (policy), array backend, machines scored
      schedule.commit_txn  each commit txn (through CommitEngine.txn_observer: the chunks
                       may run in threads, so their parent is given, never taken from context)

Nothing is traced while the loop idles: the batch span is opened once the claims hold a job,
with the start time of the prepare() that claimed it, and the syncs before that are added as
children with their own times. The score and commit-txn spans are current (OpenTelemetry's
context) while they run, so log lines then carry their ids; the batch span is not, since its
prepare() and complete() need not nest (a simulation interleaves schedulers in one thread).
With tracing off (schedulers/tracing.py) every method returns
at its first line, so the loop pays one attribute test per call.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, nullcontext

from cellsched.cellstate.commit import CommitEngine, CommitResult
from cellsched.cellstate.model import Claim

from . import tracing
from .attempts import Attempt, HeldJob, Outcome

_NULL = nullcontext()


class DecisionTracer:
    def __init__(self, scheduler, chosen: tracing.Tracing | None = None):
        """`scheduler`: the core.Scheduler traced (its name, settings, engine and cache are read)."""
        self.tracing = chosen or tracing.current()
        self.on = self.tracing.enabled
        settings = scheduler.settings
        self.base = {"cellsched.scheduler": scheduler.name, "cellsched.job_class": settings.job_class.value,
                     "cellsched.conflict_mode": settings.conflict_mode.value}
        self.kernel = settings.policy_name
        self.cache = scheduler.cache
        engine = scheduler.engine
        self._span = None
        self._started_ns = 0
        self._syncs: list[tuple[int, int]] = []  # syncs before the batch span opened
        if self.on and isinstance(engine, CommitEngine):
            engine.txn_observer = self.commit_txn

    # -- the phases (core.Scheduler calls these) ------------------------------------------

    def start(self) -> None:
        """prepare() begins: maybe a batch, maybe an idle poll."""
        if not self.on:
            return
        self._end_dangling()
        self._started_ns = time.time_ns()
        self._syncs.clear()

    def sync(self):
        if not self.on:
            return _NULL
        return self._sync()

    @contextmanager
    def _sync(self) -> Iterator[None]:
        t0 = time.time_ns()
        try:
            yield
        finally:
            t1 = time.time_ns()
            if self._span is None:
                self._syncs.append((t0, t1))
            else:
                self.tracing.start_span("schedule.sync", t0, self._span, attributes=self.base).end(t1)

    def begin(self, held: Mapping[str, HeldJob]) -> None:
        """The claims hold jobs: open the batch span, linked to each job's submission."""
        if not self.on:
            return
        # The job ids ride in one array attribute, in link order: an attribute on each of 4,096
        # links costs the SDK a bounded, locked dict apiece (about 3x the span's creation).
        links, linked = [], []
        for jid, h in held.items():
            link = tracing.link_to(h.view.record.job.traceparent)
            if link is not None:
                links.append(link)
                linked.append(jid)
        span = self.tracing.start_span("schedule.batch", self._started_ns, links=links, attributes={
            **self.base, "cellsched.jobs": len(held), "cellsched.linked_jobs": linked})
        for t0, t1 in self._syncs:
            self.tracing.start_span("schedule.sync", t0, span, attributes=self.base).end(t1)
        self._syncs.clear()
        self._span = span

    def scoring(self, attempt: Attempt):
        if not self.on or self._span is None:
            return _NULL
        return self._scoring(attempt)

    @contextmanager
    def _scoring(self, attempt: Attempt) -> Iterator[None]:
        columns = self.cache.columns
        span = self.tracing.start_span("schedule.score", parent=self._span, attributes={
            **self.base, "cellsched.kernel": self.kernel, "cellsched.backend": columns.xp.__name__,
            "cellsched.machines_scored": len(columns)})
        token = tracing.attach(span)  # log lines while deciding carry its ids (schedulers/logs.py)
        try:
            yield
        finally:
            tracing.detach(token)
            span.set_attributes({
                "cellsched.jobs_decided": len(attempt.decisions), "cellsched.jobs_crashed": len(attempt.crashed),
                "cellsched.tasks_decided": sum(d.tasks_decided for d in attempt.decisions.values()),
                "cellsched.claims": len(attempt.assumed)})
            span.end()

    @contextmanager
    def commit_txn(self, claims: list[Claim]) -> Iterator[Callable[[bool], None]]:
        parent = self._span
        if parent is None:  # a commit outside a batch (none today): nothing to hang it on
            yield lambda succeeded: None
            return
        span = self.tracing.start_span("schedule.commit_txn", parent=parent, attributes={
            **self.base, "cellsched.claims": len(claims), "cellsched.jobs": len({c.job_id for c in claims}),
            "cellsched.machines": len({c.machine_id for c in claims})})
        token = tracing.attach(span)  # in the thread that sends the txn
        try:
            yield lambda succeeded: span.set_attribute("cellsched.txn.succeeded", succeeded)
        except BaseException as exc:
            span.record_exception(exc)
            raise
        finally:
            tracing.detach(token)
            span.end()

    def settled(self, attempt: Attempt, result: CommitResult, out: Outcome) -> None:
        """complete() settled the batch: conflicts and parks become events on its span."""
        span = self._span
        if not self.on or span is None:
            return
        for claim, why in result.conflicted:
            span.add_event("conflict", {"cellsched.job": claim.job_id, "cellsched.task": claim.task_id,
                                        "cellsched.machine": claim.machine_id, "cellsched.reason.kind": why.kind.value,
                                        "cellsched.reason": tracing.json_attr(why.to_obj())})
        for jid, reason in out.parked.items():
            decision = attempt.decisions.get(jid)
            groups = decision.unplaceable if decision is not None else []
            span.add_event("park", {"cellsched.job": jid, "cellsched.reason": reason,
                                    "cellsched.counts": tracing.json_attr(groups)})
        span.set_attributes({"cellsched.committed_claims": len(result.committed),
                             "cellsched.conflicted_claims": len(result.conflicted),
                             "cellsched.jobs_placed": len(out.placed), "cellsched.jobs_parked": len(out.parked),
                             "cellsched.jobs_retrying": len(out.retrying), "cellsched.txns": result.stats.txns,
                             "cellsched.lease_lost": out.lease_lost})

    def end(self) -> None:
        """complete() is over, however it ended."""
        if self.on:
            self._end_dangling()

    def _end_dangling(self) -> None:
        """End the open batch span (a prepare() that raised after opening it leaves one)."""
        span, self._span = self._span, None
        if span is not None:
            span.end()
