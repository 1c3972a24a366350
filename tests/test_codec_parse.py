"""The codec's JSON parser (pydantic_core's, with json.loads deciding whatever it refuses)
reads every stored value exactly as json.loads does, and fails on the same values with the
same errors (cellstate/codec.py, `_load`)."""

from __future__ import annotations

import json
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cellsched.cellstate import codec
from cellsched.cellstate.errors import CorruptValueError


def _same(a, b) -> bool:
    """Equal values of the same types all the way down (1 is not 1.0 here; NaN equals NaN)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        return (math.isnan(a) and math.isnan(b)) or (a == b and math.copysign(1, a) == math.copysign(1, b))
    if isinstance(a, dict):
        return list(a) == list(b) and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return a == b


def _stdlib(raw: bytes):
    try:
        return ("ok", json.loads(raw))
    except (UnicodeDecodeError, ValueError) as exc:
        return ("error", f"not JSON ({exc})")


def _ours(raw: bytes):
    try:
        return ("ok", codec.decode_obj("k", raw))
    except CorruptValueError as exc:
        return ("error", str(exc))


def _check(raw: bytes) -> None:
    kind, value = _stdlib(raw)
    got_kind, got = _ours(raw)
    if kind == "error":
        assert got_kind == "error" and value in got, (raw, got)
    elif isinstance(value, dict) and value.get("v") == codec.FORMAT_VERSION:
        assert got_kind == "ok" and _same(got, value), (raw, got, value)
    else:  # parses, but is not a versioned object: refused as before, whatever the parser
        assert got_kind == "error", (raw, got)


_scalars = (st.none() | st.booleans() | st.integers(min_value=-(10 ** 30), max_value=10 ** 30)
            | st.floats(allow_nan=True, allow_infinity=True) | st.text())
_values = st.recursive(_scalars, lambda inner: st.lists(inner, max_size=4)
                       | st.dictionaries(st.text(max_size=6), inner, max_size=4), max_leaves=20)


@settings(max_examples=400, deadline=None)
@given(body=st.dictionaries(st.text(max_size=6), _values, max_size=5), ascii_only=st.booleans())
def test_random_values_parse_as_json_loads_parses_them(body, ascii_only):
    raw = json.dumps({"v": codec.FORMAT_VERSION, **body}, ensure_ascii=ascii_only).encode("utf-8", "surrogatepass")
    _check(raw)


@settings(max_examples=300, deadline=None)
@given(raw=st.binary(max_size=40))
def test_random_bytes_fail_or_parse_as_json_loads_does(raw):
    _check(b'{"v":1,"x":' + raw + b"}")
    _check(raw)


@pytest.mark.parametrize("raw", [
    b'{"v":1,"a":"\\ud800"}',  # a lone surrogate escape: pydantic_core refuses it, json.loads takes it
    b'{"v":1,"a":' + b"[" * 300 + b"]" * 300 + b"}",  # nesting past pydantic_core's limit
    b'{"v":1,"a":1e400,"b":NaN,"c":-Infinity,"d":-0.0}',
    b'{"v":1,"a":1,"a":2}',  # a repeated key: the last one wins in both
    b'{"v":1,"a":123456789012345678901234567890}',
    b'\xef\xbb\xbf{"v":1}',  # a byte order mark
    '{"v":1,"a":"\u00e9"}'.encode("utf-16"),  # json.loads detects UTF-16
    b'{"v":1,"a":"\xff"}',  # not UTF-8
    b'{"v":1,"a":1} x',
    b'{"v":2}',
    b"[1]",
    b"",
])
def test_edge_cases_parse_as_json_loads_parses_them(raw):
    _check(raw)


def test_a_lone_surrogate_reaches_the_value():
    assert codec.decode_obj("k", b'{"v":1,"a":"\\ud800"}')["a"] == "\ud800"
