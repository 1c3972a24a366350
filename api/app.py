"""The FastAPI app factory: routes, error handlers, the body-size limit, one value per query
parameter (api/query_once.py), the per-request histogram and server span (api/observe.py),
OpenAPI."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from fastapi import FastAPI
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute
from pydantic import BaseModel

from cellsched.schedulers import tracing

from . import (
    errors,
    routes_audit,
    routes_cell,
    routes_jobs,
    routes_machines,
    routes_metrics,
    routes_node,
    routes_plan,
    routes_ui,
)
from .body_limit import BodyLimit
from .context import BEARER_SCHEME, ApiContext
from .models_jobs import BulkIn, JobIn
from .observe import ApiMetrics, Observe
from .query_once import SingleQueryValues

API_VERSION = "1.0.0"


def create_app(ctx: ApiContext) -> FastAPI:
    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        ctx.close()

    app = FastAPI(title="cellsched", version=API_VERSION, lifespan=lifespan,
                  description="Submit, inspect and operate an Omega-style shared-state cell. Every error is a "
                              "Problem naming the field at fault; every mutation answers once it is in the store.")
    app.state.ctx = ctx
    app.state.api_metrics = ApiMetrics()
    errors.install(app)
    modules = (routes_jobs, routes_plan, routes_machines, routes_node, routes_cell, routes_audit, routes_metrics,
               routes_ui)
    for module in modules:
        app.include_router(module.router)
    app.add_middleware(BodyLimit, max_bytes=ctx.max_body_bytes)
    app.add_middleware(SingleQueryValues)
    # Outermost (added last): it times and traces every answer, the body limit's 413 included.
    # Tracing is chosen once, here: off (no exporter) means no span is ever started.
    chosen = ctx.tracing or tracing.current()
    routes = [r for m in modules for r in m.router.routes]
    app.add_middleware(Observe, metrics=app.state.api_metrics, routes=routes, traced=chosen if chosen.enabled else None)
    declare_bearer(app, routes)
    return app


def add_body_schemas(schema: dict, *models: type[BaseModel]) -> None:
    """Bodies a route reads itself (routes_jobs.BULK_BODY) into the document's components, as
    FastAPI writes a body model's: the model and what it refers to, where not there already."""
    schemas = schema.setdefault("components", {}).setdefault("schemas", {})
    for model in models:
        doc = model.model_json_schema(ref_template="#/components/schemas/{model}")
        for name, sub in doc.pop("$defs", {}).items():
            schemas.setdefault(name, sub)
        schemas.setdefault(model.__name__, doc)


def _takes_token(dependant: Dependant) -> bool:
    return any(getattr(d.call, "takes_token", False) or _takes_token(d) for d in dependant.dependencies)


def declare_bearer(app: FastAPI, routes: list) -> None:
    """The OpenAPI document's bearer scheme, on every operation of `routes` whose route
    requires a token (api/context.py `require`), as an HTTPBearer dependency declared it."""
    def openapi() -> dict:
        before = app.openapi_schema
        schema = FastAPI.openapi(app)
        if schema is not before:  # generated now (FastAPI regenerates when its routes change)
            schema.setdefault("components", {}).setdefault("securitySchemes", {})["HTTPBearer"] = dict(BEARER_SCHEME)
            add_body_schemas(schema, BulkIn, JobIn)
            for route in routes:
                if isinstance(route, APIRoute) and route.include_in_schema and _takes_token(route.dependant):
                    for method in route.methods or ():
                        schema["paths"][route.path_format][method.lower()]["security"] = [{"HTTPBearer": []}]
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
