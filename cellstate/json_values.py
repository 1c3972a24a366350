"""The JSON text of store values: compact encoding, and parsing that checks the format
version and names the key of a value it cannot read (CorruptValueError). cellstate/codec.py
builds every value's fields on these."""

from __future__ import annotations

import json
from typing import Any

from pydantic_core import from_json, to_json

from .errors import CorruptValueError

FORMAT_VERSION = 1


def encode_json(obj: Any) -> bytes:
    """Compact JSON, ASCII only. pydantic_core's Rust serializer writes what the standard
    library's compact encoder writes (Infinity and NaN as constants too) in about a tenth of
    the time; a float may be spelled otherwise (1e-5, not 1e-05), the same number either way.
    A job record's encoding is most of a bulk submission's codec cost (docs/architecture.md,
    "The REST API")."""
    return to_json(obj, ensure_ascii=True)


def load_versioned(key: str, raw: bytes) -> dict[str, Any]:
    """pydantic_core's Rust parser reads what json.loads reads, in about a third of the time
    (a scheduler decodes every job record it claims). It refuses two things json.loads takes,
    a lone surrogate escape and nesting past 200 levels: on any refusal json.loads decides, so
    what decodes, and every error message, stays json.loads's (tests/test_codec_parse.py)."""
    try:
        obj = from_json(raw)
    except ValueError:
        obj = _load_stdlib(key, raw)
    if type(obj) is not dict:
        raise CorruptValueError(key, "not an object")
    if obj.get("v") != FORMAT_VERSION:
        raise CorruptValueError(key, f"unsupported format version {obj.get('v')!r}")
    return obj


def _load_stdlib(key: str, raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except (UnicodeDecodeError, ValueError) as exc:
        raise CorruptValueError(key, f"not JSON ({exc})") from None


class _Decoding:
    """Turn any structural surprise while decoding into CorruptValueError (one class, made
    once: a snapshot of a big cell enters this hundreds of thousands of times)."""

    __slots__ = ("key",)

    def __init__(self, key: str):
        self.key = key

    def __enter__(self):
        return self

    def __exit__(self, et, ev, tb):
        if et is not None and issubclass(et, KeyError | TypeError | ValueError | AttributeError):
            if isinstance(ev, CorruptValueError):
                return False
            raise CorruptValueError(self.key, f"{et.__name__}: {ev}") from None
        return False


decoding = _Decoding
