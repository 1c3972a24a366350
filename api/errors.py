"""Every error the API sends is a Problem (RFC 9457 style): status, title, detail, and the
field at fault when there is one. Store errors map to status codes here, in one table;
nothing below turns into a bare 500 with a traceback, and no error body echoes a header
(so a token never appears in one)."""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from typing import TypeVar

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from cellsched.cellstate.errors import (
    CellError,
    CommitOutcomeUnknown,
    ContentionError,
    GangTooLargeError,
    IllegalTransitionError,
    InvalidInputError,
    StoreUnavailableError,
    UnknownMachineError,
)

log = logging.getLogger("cellsched.api")
M = TypeVar("M", bound=BaseModel)


class FieldError(BaseModel):
    field: str = Field(description="dotted path into the body, query or path, e.g. body.groups.0.resources.cpu")
    message: str


class Problem(BaseModel):
    status: int
    title: str
    detail: str
    field: str | None = Field(None, description="the (first) field at fault")
    errors: list[FieldError] = Field(default_factory=list)


class ApiError(CellError):
    """An answer with an HTTP status, a title and the field at fault (drawn in cellstate/errors.py's tree)."""

    def __init__(self, status: int, title: str, detail: str, field: str | None = None,
                 headers: dict[str, str] | None = None):
        super().__init__(detail)
        self.http_status, self.title, self.detail, self.field, self.headers = status, title, detail, field, headers


def problem_response(status: int, title: str, detail: str, field: str | None = None,
                     errors: list[FieldError] | None = None, headers: Mapping[str, str] | None = None) -> JSONResponse:
    body = Problem(status=status, title=title, detail=detail, field=field, errors=errors or [])
    return JSONResponse(body.model_dump(), status_code=status, headers=dict(headers) if headers else None)


def field_path(loc: tuple | list) -> str:
    return ".".join(str(p) for p in loc)


def _validation(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = []
    for e in exc.errors():
        msg = str(e.get("msg", "invalid")).removeprefix("Value error, ")
        errors.append(FieldError(field=field_path(e.get("loc", ())), message=msg))
    if any(e.get("type") == "json_invalid" for e in exc.errors()):
        return problem_response(400, "malformed body", "the body is not valid JSON", "body", errors)
    first = errors[0] if errors else FieldError(field="body", message="invalid")
    return problem_response(422, "invalid request", f"{first.field}: {first.message}", first.field, errors)


class BodyValidationError(RequestValidationError, InvalidInputError):
    """A body refused by `parse_body`: answered by the RequestValidationError handler (first
    in its MRO), so exactly as FastAPI's own body validation is, and a cell input error."""


def parse_body(model: type[M], raw: bytes, content_type: str | None) -> M:
    """A JSON body validated as FastAPI validates a body parameter, in one
    `model.model_validate_json` (no Python dicts first), its errors raised as FastAPI raises
    them (RequestValidationError, locations under "body"): missing, not JSON (400), not an
    object (another content type), or a field at fault."""
    if not raw:
        raise BodyValidationError([{"type": "missing", "loc": ("body",), "msg": "Field required", "input": None}])
    if not content_type or not _JSON_TYPE.match(content_type):  # FastAPI reads no other type as JSON
        raise BodyValidationError([{"type": "model_attributes_type", "loc": ("body",), "input": None,
                                       "msg": "Input should be a valid dictionary or object to extract fields from"}])
    try:
        return model.model_validate_json(raw)
    except ValidationError as exc:
        raise BodyValidationError([{**e, "loc": ("body", *e["loc"])} for e in exc.errors(include_url=False)]) from None


# What FastAPI reads as JSON: application/json or application/<anything>+json, any parameters.
_JSON_TYPE = re.compile(r"^\s*application/([^;\s]*\+)?json\s*(;.*)?$", re.I | re.S)


def _api_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiError)
    return problem_response(exc.http_status, exc.title, exc.detail, exc.field, headers=exc.headers)


def allowed_methods(app: FastAPI, path: str) -> list[str]:
    """Every method the OpenAPI document lists for the path template `path` matches."""
    table = getattr(app.state, "allowed_methods", None)
    if table is None:
        table = app.state.allowed_methods = [
            (re.compile("^" + re.sub(r"\\\{[^/]+?\\\}", "[^/]+", re.escape(p)) + "$"),
             sorted(m.upper() for m in item)) for p, item in app.openapi()["paths"].items()]
    exact = [methods for pattern, methods in table if pattern.pattern == "^" + re.escape(path) + "$"]
    if exact:  # a literal path (/v1/jobs/bulk) is routed before a template that also matches it
        return exact[0]
    return sorted({m for pattern, methods in table if pattern.match(path) for m in methods})


def _http(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    headers = dict(exc.headers or {})
    if exc.status_code == 405:  # Starlette names the first matching route's methods; name the path's
        headers["Allow"] = ", ".join(allowed_methods(request.app, request.url.path))
    return problem_response(exc.status_code, "http error", str(exc.detail), headers=headers or None)


# Most specific first: the first class that matches gives the status.
CELL_ERROR_STATUS: list[tuple[type[CellError], int, str]] = [
    (UnknownMachineError, 404, "unknown machine"),
    (GangTooLargeError, 422, "gang too large"),
    (InvalidInputError, 422, "invalid input"),
    (IllegalTransitionError, 409, "not allowed in this state"),
    (ContentionError, 503, "contention"),
    (CommitOutcomeUnknown, 503, "outcome unknown"),
    (StoreUnavailableError, 503, "store unavailable"),
]


def _cell_error(_: Request, exc: Exception) -> JSONResponse:
    for cls, status, title in CELL_ERROR_STATUS:
        if isinstance(exc, cls):
            detail = str(exc)
            if isinstance(exc, CommitOutcomeUnknown):
                detail += "; retry with the same Idempotency-Key to learn whether it was written"
            headers = {"Retry-After": "1"} if status == 503 else None
            return problem_response(status, title, detail, headers=headers)
    log.error("unexpected store error %s: %s", type(exc).__name__, exc)
    return problem_response(500, "internal error", f"{type(exc).__name__} in the cell store")


def _unexpected(_: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error")
    return problem_response(500, "internal error", f"unexpected {type(exc).__name__}; see the server log")


def install(app: FastAPI) -> None:
    app.add_exception_handler(RequestValidationError, _validation)
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(StarletteHTTPException, _http)
    app.add_exception_handler(CellError, _cell_error)
    app.add_exception_handler(Exception, _unexpected)


def responses(*codes: int) -> dict[int | str, dict]:
    """OpenAPI entries for a route's error responses, all Problems."""
    what = {400: "malformed body", 401: "missing or unknown bearer token", 403: "the token's role may not do this",
            404: "no such job or machine", 409: "conflicts with the current state",
            413: "request body over the limit", 422: "a field is invalid (named in `field`)",
            429: "rate limit: retry after `Retry-After` seconds", 503: "the store is unavailable"}
    return {c: {"model": Problem, "description": what[c]} for c in codes}
