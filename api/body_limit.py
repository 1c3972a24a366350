"""A request-body size limit, enforced before the body is parsed: 413 with a Problem.

Pure ASGI, so it answers before any framework code runs. A declared Content-Length over
the limit is refused at once (the server never delivers more than it declares); a body
without one (chunked) is read here up to the limit, then handed on whole."""

from __future__ import annotations

import json


class BodyLimit:
    def __init__(self, app, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = None
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    return await self._refuse(send, 400, "malformed body", "Content-Length is not a number")
        if declared is not None:
            if declared > self.max_bytes:
                return await self._too_large(send)
            return await self.app(scope, receive, send)
        chunks, seen = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away
            chunk = message.get("body", b"")
            seen += len(chunk)
            if seen > self.max_bytes:
                return await self._too_large(send)
            chunks.append(chunk)
            if not message.get("more_body"):
                break
        body = b"".join(chunks)
        delivered = False

        async def replay():
            nonlocal delivered
            if delivered:
                return await receive()
            delivered = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)

    async def _too_large(self, send):
        await self._refuse(send, 413, "request too large", f"the body is over the limit of {self.max_bytes} bytes")

    @staticmethod
    async def _refuse(send, status: int, title: str, detail: str):
        body = json.dumps({"status": status, "title": title, "detail": detail, "field": "body",
                           "errors": []}).encode()
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(body)).encode()), (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})
