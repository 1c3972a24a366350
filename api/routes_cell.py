"""The cell summary, /healthz (the process answers) and /readyz (the store answers)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from cellsched.cellstate import codec
from cellsched.cellstate import resources as res
from cellsched.cellstate.errors import CellError
from cellsched.cellstate.index_entry import listed_jobs
from cellsched.cellstate.model import JobClass, MachineState
from cellsched.cellstate.store import Get

from .auth import Principal
from .context import Reader, ctx_of
from .errors import responses
from .models_cell import CellSummary, Health, MachineCounts, QueueLengths, SchedulersAlive
from .models_jobs import ResourcesOut

router = APIRouter(tags=["cell"])


@router.get("/v1/cell", operation_id="cell_summary", response_model=CellSummary, responses=responses(401, 403, 429, 503))
def cell_summary(request: Request, _: Principal = Reader):
    """Capacity, use, queue lengths per class, the store revision and the schedulers alive,
    all from one consistent read (one txn)."""
    ctx = ctx_of(request)
    k = ctx.keys
    gets = [Get(k.spec_prefix, prefix=True), Get(k.alloc_prefix, prefix=True), Get(k.claims_prefix, prefix=True)]
    for c in JobClass:
        gets += [Get(k.queue_prefix(c), prefix=True), Get(k.parked_prefix(c), prefix=True)]
    result = ctx.store.txn([], gets)
    specs, allocs, claims, *indexes = result.reads
    states = [codec.decode_machine(kv.key, kv.value) for kv in specs]
    up_ids = {m.id for m in states}
    capacity, used = res.ZERO, res.ZERO
    for m in states:
        capacity = res.add(capacity, m.capacity)
    for kv in allocs:
        if k.last_segment(kv.key) in up_ids:
            used = res.add(used, codec.decode_alloc(kv.key, kv.value).used)
    count = {s: sum(1 for m in states if m.state is s) for s in MachineState}
    queues = {c.value: QueueLengths(pending=listed_jobs(indexes[2 * i]), parked=len(indexes[2 * i + 1]))
              for i, c in enumerate(JobClass)}
    owners = {codec.decode_obj(kv.key, kv.value).get("owner") for kv in claims}
    return CellSummary(cell=k.cell, revision=result.revision,
                       machines=MachineCounts(total=len(states), up=count[MachineState.UP],
                                              draining=count[MachineState.DRAINING], down=count[MachineState.DOWN]),
                       capacity=ResourcesOut.of(capacity), used=ResourcesOut.of(used), queues=queues,
                       schedulers=SchedulersAlive(in_process=ctx.schedulers_in_process(), holding_claims=len(owners)))


@router.get("/healthz", operation_id="healthz", response_model=Health)
def healthz():
    """The process is up and answering (no store call)."""
    return Health(status="ok")


@router.get("/readyz", operation_id="readyz", response_model=Health,
            responses={503: {"model": Health, "description": "the store does not answer"}})
def readyz(request: Request):
    """Ready when the store answers a read."""
    try:
        rev = ctx_of(request).store.current_revision()
    except CellError as exc:
        return JSONResponse(Health(status="unavailable", detail=type(exc).__name__).model_dump(), status_code=503)
    return Health(status="ok", revision=rev)
