"""`DIGITS`: an integer query or path parameter spelled as one, nothing laxer.

Pydantic's lax mode turns the strings "1_000", " 7" and "+3" into integers; a URL is all
strings, so every integer parameter would take those spellings, which the OpenAPI document
does not describe (a schema checker sends them as "not an integer" and expects a 4xx). Only
an optional minus sign and digits pass here, with a zero fraction allowed ("5.0"), as JSON
Schema counts 5.0 an integer. It goes after the parameter's Query or Path in its Annotated
(`Annotated[int, Query(ge=1), DIGITS]`): placed before them, or in a nested Annotated alias,
FastAPI writes the bounds into the OpenAPI document as `ge`/`le` instead of
`minimum`/`maximum`."""

from __future__ import annotations

import re

from pydantic import BeforeValidator

from cellsched.cellstate.errors import InvalidInputError

_SPELLING = re.compile(r"-?[0-9]+(\.0+)?")


def _plain(value: object) -> object:
    if isinstance(value, str) and not _SPELLING.fullmatch(value):
        raise InvalidInputError("expected a whole number written in digits")  # a ValueError: Pydantic's 422
    return value


DIGITS = BeforeValidator(_plain)
