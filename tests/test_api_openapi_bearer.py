"""The bearer scheme stays in the OpenAPI document, on exactly the operations that take a
token, though no HTTPBearer dependency is solved per request any more (api/app.py)."""

from __future__ import annotations

from cellsched.api import ApiContext, TokenTable, create_app
from cellsched.cellstate.keys import CellKeys
from cellsched.cellstate.store import MemoryStore

OPEN = {("/healthz", "get"), ("/readyz", "get"), ("/metrics", "get")}


def test_every_operation_but_the_open_ones_declares_the_bearer():
    app = create_app(ApiContext(MemoryStore(), CellKeys("t"), TokenTable.parse("reader:r:" + "a" * 20, "t")))
    doc = app.openapi()
    assert doc["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"
    ops = {(path, method): op for path, item in doc["paths"].items() for method, op in item.items()}
    assert OPEN <= set(ops) and len(ops) > 15
    for key, op in ops.items():
        assert (op.get("security") == [{"HTTPBearer": []}]) == (key not in OPEN), key
    assert app.openapi() is doc  # generated once
