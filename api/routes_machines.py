"""/v1/machines: add, list, get, drain, undrain, remove (operator), through cellstate.machines."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Request

from cellsched.cellstate import resources as res
from cellsched.cellstate.machines import add_machines, remove_machine, set_machine_state
from cellsched.cellstate.model import MachineState
from cellsched.cellstate.store import Get
from cellsched.cellstate.views import MachineView, read_machine_views

from .auth import Principal
from .context import ApiContext, Operator, Reader, ctx_of
from .errors import ApiError, responses
from .models_cell import MachineChange, MachineList, MachineOut, MachinesAdded, MachinesIn
from .models_jobs import ID_PATTERN, ResourcesOut
from .whole_number import DIGITS

router = APIRouter(prefix="/v1/machines", tags=["machines"])


def _links(pointer: str, *ops: str) -> dict:
    return {"".join(w.title() for w in op.split("_")): {"operationId": op, "parameters": {"machine_id": pointer}}
            for op in ops}


# OpenAPI links: from a registered machine to its routes, from a drained one to its removal.
ADDED_LINKS = _links("$response.body#/added/0", "get_machine", "drain_machine", "undrain_machine",
                     "machine_heartbeat")
DRAINED_LINKS = _links("$response.body#/id", "remove_machine", "undrain_machine", "get_machine")
MachineId = Annotated[str, Path(pattern=ID_PATTERN, description="the machine's id")]
MAX_PAGE = 500
_AUTH = (401, 403, 429)


def machine_out(view: MachineView, alive: bool) -> MachineOut:
    m = view.machine
    return MachineOut(id=m.id, state=m.state, state_by=m.state_by, capacity=ResourcesOut.of(m.capacity),
                      used=ResourcesOut.of(view.alloc.used), tasks=len(view.alloc.tasks), labels=m.labels, alive=alive)


def alive_set(ctx: ApiContext, ids: list[str]) -> set[str]:
    out: set[str] = set()
    per = ctx.store.limits.max_txn_ops
    for start in range(0, len(ids), per):
        chunk = ids[start:start + per]
        reads = ctx.store.txn([], [Get(ctx.keys.live(mid)) for mid in chunk]).reads
        out.update(mid for mid, r in zip(chunk, reads, strict=True) if r)
    return out


def read_machines(ctx: ApiContext, ids: list[str]) -> list[MachineOut]:
    views = read_machine_views(ctx.store, ctx.keys, ids)
    alive = alive_set(ctx, list(views))
    return [machine_out(views[mid], mid in alive) for mid in ids if mid in views]


@router.post("", status_code=201, operation_id="add_machines", response_model=MachinesAdded,
             responses={201: {"description": "registered", "links": ADDED_LINKS},
                        **responses(400, *_AUTH, 413, 422, 503)})
def add(request: Request, body: MachinesIn, who: Principal = Operator):
    """Register machines. An id that exists already refuses the request whole (422)."""
    ctx = ctx_of(request)
    machines = body.to_machines()
    with ctx.writing(who, request, f"{len(machines)} machines") as store:
        rev = add_machines(store, ctx.keys, machines)
    return MachinesAdded(added=[m.id for m in machines], revision=rev)


@router.get("", operation_id="list_machines", response_model=MachineList, responses=responses(*_AUTH, 422, 503))
def list_machines(request: Request, _: Principal = Reader,
                  cursor: Annotated[str | None, Query(pattern=ID_PATTERN, description="the last id of the page before")] = None,
                  limit: Annotated[int, Query(ge=1, le=MAX_PAGE), DIGITS] = 100):
    ctx = ctx_of(request)
    kvs = ctx.store.get_page(ctx.keys.spec_prefix, limit, after=ctx.keys.spec(cursor) if cursor else "")
    ids = [ctx.keys.last_segment(kv.key) for kv in kvs]
    nxt = ids[-1] if len(ids) == limit else None
    return MachineList(items=read_machines(ctx, ids), next_cursor=nxt)


@router.get("/{machine_id}", operation_id="get_machine", response_model=MachineOut,
            responses=responses(*_AUTH, 404, 422, 503))
def get_machine(request: Request, machine_id: MachineId, _: Principal = Reader):
    found = read_machines(ctx_of(request), [machine_id])
    if not found:
        raise ApiError(404, "unknown machine", f"no machine {machine_id!r}", "path.machine_id")
    return found[0]


def _set_state(request: Request, who: Principal, machine_id: str, state: MachineState) -> MachineChange:
    ctx = ctx_of(request)
    with ctx.writing(who, request) as store:
        rev = set_machine_state(store, ctx.keys, machine_id, state)
    return MachineChange(id=machine_id, state=state, revision=rev)


@router.post("/{machine_id}/drain", operation_id="drain_machine", response_model=MachineChange,
             responses={200: {"description": "draining", "links": DRAINED_LINKS},
                        **responses(*_AUTH, 404, 422, 503)})
def drain(request: Request, machine_id: MachineId, who: Principal = Operator):
    """No new tasks go there; its tasks are evicted and rescheduled by the machine monitor."""
    return _set_state(request, who, machine_id, MachineState.DRAINING)


@router.post("/{machine_id}/undrain", operation_id="undrain_machine", response_model=MachineChange,
             responses=responses(*_AUTH, 404, 422, 503))
def undrain(request: Request, machine_id: MachineId, who: Principal = Operator):
    return _set_state(request, who, machine_id, MachineState.UP)


@router.delete("/{machine_id}", operation_id="remove_machine", response_model=MachineChange,
               responses=responses(*_AUTH, 404, 409, 422, 503))
def remove(request: Request, machine_id: MachineId, who: Principal = Operator):
    """Remove a drained (or down) machine that holds no task; otherwise 409."""
    ctx = ctx_of(request)
    with ctx.writing(who, request) as store:
        views = read_machine_views(store, ctx.keys, [machine_id])
        if machine_id not in views:
            raise ApiError(404, "unknown machine", f"no machine {machine_id!r}", "path.machine_id")
        view = views[machine_id]
        if view.machine.state is MachineState.UP or view.alloc.tasks:
            why = "it is up: drain it first" if view.machine.state is MachineState.UP else \
                f"it still holds {len(view.alloc.tasks)} tasks ({res.as_dict(view.alloc.used)} used)"
            raise ApiError(409, "machine in use", f"machine {machine_id} cannot be removed: {why}")
        rev = remove_machine(store, ctx.keys, machine_id)
    return MachineChange(id=machine_id, state=None, revision=rev)
