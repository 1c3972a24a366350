"""Every query parameter of the API is a single value, so a repeated one is refused: 422 with
a Problem naming it, before any route runs.

Without this the framework silently keeps the last of `?since=x&since=0` and answers 2xx to
a request its own OpenAPI document says is malformed (an integer is not an array); a client
that repeats a filter by mistake would get the wrong page and never know. Pure ASGI, like
api/body_limit.py, answering with api/errors.py's Problem response; a query string without
'&' cannot repeat a name and is passed at once."""

from __future__ import annotations

from collections import Counter
from urllib.parse import parse_qsl

from .errors import FieldError, problem_response


def repeated_names(query_string: bytes) -> list[str]:
    """The query parameter names given more than once, in their first order."""
    if b"&" not in query_string:
        return []
    counts = Counter(name for name, _ in parse_qsl(query_string.decode("latin-1"), keep_blank_values=True))
    return [name for name, n in counts.items() if n > 1]


class SingleQueryValues:
    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http":
            repeated = repeated_names(scope.get("query_string", b""))
            if repeated:
                return await self._refuse(scope, receive, send, repeated)
        return await self.app(scope, receive, send)

    @staticmethod
    async def _refuse(scope, receive, send, repeated: list[str]):
        errors = [FieldError(field=f"query.{name}", message="given more than once; every query parameter takes one value")
                  for name in repeated]
        first = errors[0]
        answer = problem_response(422, "invalid request", f"{first.field}: {first.message}", first.field, errors)
        await answer(scope, receive, send)
