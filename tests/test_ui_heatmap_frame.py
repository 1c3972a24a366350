"""A heatmap refresh stays bounded at 10,000 machines (api/heatmap_frame.py): when every machine
changed, the delta is every machine's heat as a byte (`dense`) in the full frame's id order, not
ids and heats; a few changes are still sent as ids. Sizes are of the HTTP body, not times."""

from __future__ import annotations

import base64

import pytest
from fastapi.testclient import TestClient

from cellsched.api import ApiContext, Role, TokenTable, create_app
from cellsched.cellstate.clock import SimClock
from cellsched.cellstate.keys import CellKeys
from cellsched.cellstate.machines import add_machines, remove_machine, set_machine_state
from cellsched.cellstate.model import Machine, MachineState
from cellsched.cellstate.store.memory import MemoryStore

MACHINES = 10_000
MAX_REFRESH_BYTES = 200_000  # the bound on a refresh (docs/architecture.md, the /ui dashboard)
AUTH = {"Authorization": "Bearer reader-secret-0000000000001"}


@pytest.fixture()
def cell():
    store = MemoryStore(clock=SimClock())
    keys = CellKeys("t")
    # Ids of 24 characters: ids and heats of 10,000 changed machines would be about 310 KB.
    ids = [f"rack-{i // 40:04d}-machine-{i:06d}" for i in range(MACHINES)]
    add_machines(store, keys, [Machine(i, (4000, 16384, 0)) for i in ids])
    tokens = TokenTable()
    tokens.add(Role.READER, "r", "reader-secret-0000000000001")
    with TestClient(create_app(ApiContext(store, keys, tokens))) as client:
        yield store, keys, ids, client


def _get(client, since: int) -> tuple[dict, int]:
    r = client.get(f"/v1/cell/heatmap?since={since}", headers=AUTH)
    assert r.status_code == 200, r.text
    return r.json(), len(r.content)


def test_a_refresh_in_which_every_machine_changed_is_dense_and_under_the_bound(cell):
    store, keys, ids, client = cell
    full, _ = _get(client, 0)
    assert full["full"] and full["total"] == MACHINES and full["digest"] and full["dense"] is None
    set_machine_state(store, keys, ids[5], MachineState.DRAINING)
    one, one_bytes = _get(client, full["revision"])
    assert one["ids"] == [ids[5]] and one["heat"] == [-1] and one["dense"] is None and one_bytes < 2_000
    for machine in ids:
        set_machine_state(store, keys, machine, MachineState.DRAINING if machine != ids[5] else MachineState.UP)
    every, size = _get(client, one["revision"])
    assert size <= MAX_REFRESH_BYTES
    assert not every["full"] and every["ids"] == [] and every["digest"] == full["digest"]
    heat = base64.b64decode(every["dense"])
    assert len(heat) == MACHINES
    # full's id order: all draining (101) but the one set back up (0, empty)
    assert heat[5] == 0 and set(heat[:5] + heat[6:]) == {101}
    assert every["revision"] >= one["revision"]


def test_a_dense_frame_names_another_id_order_once_machines_came_and_went(cell):
    store, keys, ids, client = cell
    before, _ = _get(client, 0)
    set_machine_state(store, keys, ids[0], MachineState.DRAINING)  # a machine leaves only once not UP
    remove_machine(store, keys, ids[0])
    add_machines(store, keys, [Machine("zz-new", (4000, 16384, 0))])
    for machine in ids[1:]:
        set_machine_state(store, keys, machine, MachineState.DOWN)
    after, size = _get(client, before["revision"])
    # The same total, another set: the page must not apply the bytes to its old order.
    assert after["total"] == before["total"] and after["dense"] is not None and size <= MAX_REFRESH_BYTES
    assert after["digest"] != before["digest"]
    heat = base64.b64decode(after["dense"])
    assert len(heat) == MACHINES and heat[-1] == 0 and set(heat[:-1]) == {102}  # zz-new sorts last
