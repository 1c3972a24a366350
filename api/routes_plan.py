"""/v1/plan: the dry run (api/plan.py). Read-only: a reader may ask."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request

from .auth import Principal
from .context import Reader, ctx_of
from .errors import responses
from .models_jobs import JobIn
from .plan import MAX_TOP, PlanOut, dry_run
from .whole_number import DIGITS

router = APIRouter(prefix="/v1", tags=["jobs"])


@router.post("/plan", operation_id="plan_job", response_model=PlanOut,
             responses=responses(400, 401, 403, 413, 422, 429, 503))
def plan_job(request: Request, spec: JobIn, _: Principal = Reader,
             top: Annotated[int, Query(ge=1, le=MAX_TOP, description="machines ranked per group"), DIGITS] = 5):
    """Where this job would go now, with the per-scorer scores of each group's top machines.
    Writes nothing; the answer can be stale by the time the job is submitted."""
    return dry_run(ctx_of(request), spec, top)
