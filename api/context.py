"""What every route needs: the cell store, its keys, the clock, auth and limits.

An API process holds nothing else: every fact is in the store, so any number of API
processes can serve one cell (docs/architecture.md, "The REST API")."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from fastapi import Depends, Request

from cellsched.cellstate.audit import AuditLog
from cellsched.cellstate.clock import Clock, RealClock
from cellsched.cellstate.keys import CellKeys
from cellsched.cellstate.store import CellStore
from cellsched.cellstate.validation import DEFAULT_MAX_TASKS_PER_MACHINE
from cellsched.schedulers.tracing import Tracing

from .auth import Principal, RateLimiter, Role, TokenTable, authorize

if TYPE_CHECKING:  # group_commit imports submit, which imports this module
    from .group_commit import SubmitGroups

DEFAULT_MAX_BODY_BYTES = 4 << 20  # a bulk of 1,000 jobs of ~1 KB with room to spare


@dataclass
class ApiContext:
    store: CellStore
    keys: CellKeys
    tokens: TokenTable
    limiter: RateLimiter = field(default_factory=lambda: RateLimiter(1000.0, 2000))
    clock: Clock = field(default_factory=RealClock)
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    max_tasks_per_machine: int = DEFAULT_MAX_TASKS_PER_MACHINE
    # How many scheduler loops this process hosts are alive (cellsched.api_server); none by default.
    schedulers_in_process: Callable[[], int] = lambda: 0
    audit: AuditLog | None = None  # None: mutations write no audit records
    tracing: Tracing | None = None  # None: the process's (schedulers.tracing.current(), from OTEL_*)
    # Bulk submissions run on a pool of their own this wide, not the default thread pool's 40:
    # each is CPU-bound (validate, build, encode) but for its store call, and 40 of them at once
    # only contend for the GIL (docs/architecture.md, "The REST API").
    bulk_workers: int = 2
    _groups: SubmitGroups | None = field(default=None, init=False, repr=False)
    _bulk_pool: ThreadPoolExecutor | None = field(default=None, init=False, repr=False)

    def submit_groups(self) -> SubmitGroups:
        """The group commit of this process's single submissions (api/group_commit.py), made on first use."""
        if self._groups is None:
            from .group_commit import SubmitGroups

            self._groups = SubmitGroups(self.store, self.keys, self.clock, self.audit)
        return self._groups

    def bulk_pool(self) -> ThreadPoolExecutor:
        """The threads bulk submissions run on (made on first use)."""
        if self._bulk_pool is None:
            self._bulk_pool = ThreadPoolExecutor(self.bulk_workers, thread_name_prefix="bulk")
        return self._bulk_pool

    def close(self) -> None:
        """Let the bulk threads go once the app stops serving (its lifespan's end: the server
        has finished its requests by then). A later request makes a fresh pool."""
        pool, self._bulk_pool = self._bulk_pool, None
        if pool is not None:
            pool.shutdown(wait=True)

    @contextlib.contextmanager
    def writing(self, who: Principal, request: Request, detail: str = "") -> Iterator[CellStore]:
        """The store a mutation writes through: with an audit log, each of its txns carries
        its audit record (cellstate/audit.py); a refusal before any write gets one alone."""
        if self.audit is None:
            yield self.store
            return
        what = f"{request.method} {request.url.path}" + (f" {detail}" if detail else "")
        with self.audit.session(f"{who.name} ({who.role.name.lower()})", what, self.clock.now()) as store:
            yield store


def ctx_of(request: Request) -> ApiContext:
    return request.app.state.ctx


# The bearer scheme of the OpenAPI document, declared on every operation that takes a token
# (api/app.py `declare_bearer`); the check itself is `authorize`, which reads the raw header
# so a malformed one gets its own message. Not an HTTPBearer sub-dependency: FastAPI solved it
# on every request for nothing (about 40-75 us of a submission's ~500 in process;
# docs/architecture.md, "The REST API").
BEARER_SCHEME = {"type": "http", "scheme": "bearer", "description": "a token from --tokens or CELLSCHED_API_TOKENS"}


def require(role: Role):
    # async: the lookup and the rate limit are a hash and a lock held for microseconds, so
    # they run on the event loop instead of costing a thread-pool hop per request.
    async def dependency(request: Request) -> Principal:
        return principal_of(request, role)

    dependency.__name__ = f"require_{role.name.lower()}"
    dependency.takes_token = True  # type: ignore[attr-defined]
    return dependency


def principal_of(request: Request, role: Role) -> Principal:
    """The caller of `request`, holding at least `role` (401, 403 or 429 otherwise)."""
    ctx = ctx_of(request)
    return authorize(ctx.tokens, ctx.limiter, request.headers.get("authorization"), role)


def submitter(request: Request) -> Principal:
    """What the Submitter dependency gives, called by a handler itself (the submission routes,
    which declare the bearer in their OpenAPI extra instead: api/routes_jobs.py)."""
    return principal_of(request, Role.SUBMITTER)


Reader = Depends(require(Role.READER))
Submitter = Depends(require(Role.SUBMITTER))
Operator = Depends(require(Role.OPERATOR))
