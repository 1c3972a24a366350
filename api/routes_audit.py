"""/v1/audit/verify: check the audit chains (cellstate/audit.py) of the cell this API serves."""

from __future__ import annotations

from fastapi import APIRouter, Request
from pydantic import BaseModel

from cellsched.cellstate.audit import verify

from .auth import Principal
from .context import Operator, ctx_of
from .errors import responses

router = APIRouter(prefix="/v1/audit", tags=["audit"])


class AuditVerifyOut(BaseModel):
    ok: bool
    chains: int
    records: int
    problems: list[str]


@router.get("/verify", operation_id="verify_audit", response_model=AuditVerifyOut,
            responses=responses(401, 403, 429, 503))
def verify_audit(request: Request, _: Principal = Operator):
    ctx = ctx_of(request)
    report = verify(ctx.store, ctx.keys)
    return AuditVerifyOut(ok=report.ok, chains=report.chains, records=report.records, problems=report.problems)
