"""The FastAPI app factory: routes, error handlers, the body-size limit, OpenAPI."""

from __future__ import annotations

from fastapi import FastAPI

from . import errors, routes_audit, routes_cell, routes_jobs, routes_machines, routes_node, routes_plan
from .body_limit import BodyLimit
from .context import ApiContext

API_VERSION = "1.0.0"


def create_app(ctx: ApiContext) -> FastAPI:
    app = FastAPI(title="cellsched", version=API_VERSION,
                  description="Submit, inspect and operate an Omega-style shared-state cell. Every error is a "
                              "Problem naming the field at fault; every mutation answers once it is in the store.")
    app.state.ctx = ctx
    errors.install(app)
    for module in (routes_jobs, routes_plan, routes_machines, routes_node, routes_cell, routes_audit):
        app.include_router(module.router)
    app.add_middleware(BodyLimit, max_bytes=ctx.max_body_bytes)
    return app
