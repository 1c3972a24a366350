"""The bare ceiling of `loadtests.bench_api`: a FastAPI POST that returns a fixed 201,
served by the same uvicorn settings as `cellsched api` (uvloop, httptools, no access log).
What the real API's submissions per second are compared with, in the same run."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.responses import Response

app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)
CREATED = b'{"id":"bare","status":"pending"}'


@app.post("/submit", status_code=201)
async def submit(request: Request) -> Response:
    await request.body()  # read the body, as the real handler must
    return Response(CREATED, status_code=201, media_type="application/json")
