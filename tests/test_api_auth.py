"""The auth matrix (401 without or with a bad token, 403 below the route's role, through
at the role), the per-token rate limit (429 with Retry-After), and tokens never echoed,
through a real uvicorn on both backends."""

from __future__ import annotations

import pytest

from cellsched.api import Role, TokenTable
from cellsched.api.auth import digest
from cellsched.loadtests.etcd_process import start_etcd_cluster
from tests.apiserver import TOKENS, job_body, machines_body, start_api
from tests.conftest import require_etcd

ROLES = ["reader", "submitter", "operator"]
# (method, path, body, least role). Bodies are valid, so the role is all that decides.
ROUTES = [
    ("GET", "/v1/jobs", None, "reader"),
    ("GET", "/v1/jobs/a-1", None, "reader"),
    ("GET", "/v1/jobs/a-1/explanation", None, "reader"),
    ("GET", "/v1/machines", None, "reader"),
    ("GET", "/v1/machines/m1", None, "reader"),
    ("GET", "/v1/cell", None, "reader"),
    ("POST", "/v1/plan", job_body(count=1), "reader"),
    ("POST", "/v1/jobs", job_body(count=1), "submitter"),
    ("POST", "/v1/jobs/bulk", {"jobs": [job_body(count=1)]}, "submitter"),
    ("POST", "/v1/jobs/a-2/cancel", None, "submitter"),
    ("POST", "/v1/machines", "fresh-machine", "operator"),
    ("POST", "/v1/machines/m1/drain", None, "operator"),
    ("POST", "/v1/machines/m1/undrain", None, "operator"),
    ("DELETE", "/v1/machines/gone-{role}", None, "operator"),
    ("POST", "/v1/machines/m1/heartbeat", {"ttl_s": 5}, "operator"),
    ("POST", "/v1/jobs/a-1/tasks/0/0/report", {"state": "running", "machine": "nowhere"}, "operator"),
]


@pytest.fixture(scope="module", params=["memory", "etcd"])
def backend(request):
    if request.param == "memory":
        yield None
        return
    require_etcd()
    cluster = start_etcd_cluster(1)
    yield cluster.endpoints
    cluster.stop()


@pytest.fixture(scope="module")
def api(backend, tmp_path_factory):
    server = start_api(tmp_path_factory.mktemp("auth"), backend, "--schedulers", "off")
    with server.client() as op:
        assert op.post("/v1/machines", json=machines_body("m1", *(f"gone-{r}" for r in ROLES))).status_code == 201
        for m in ROLES:
            op.post(f"/v1/machines/gone-{m}/drain")
        assert op.post("/v1/jobs", json=job_body("a-1")).status_code == 201
        assert op.post("/v1/jobs", json=job_body("a-2")).status_code == 201
    yield server
    server.stop()
    log = server.output()
    assert not any(secret in log for secret in TOKENS.values()), "a token reached the server's output"


def _send(client, method, path, body, role):
    path = path.format(role=role or "anon")
    if body == "fresh-machine":
        body = machines_body(f"new-{role or 'anon'}")
    return client.request(method, path, json=body)


@pytest.mark.parametrize("route", ROUTES, ids=[f"{m} {p}" for m, p, _, _ in ROUTES])
def test_auth_matrix(api, route):
    method, path, body, least = route
    with api.client(None) as anon:
        r = _send(anon, method, path, body, None)
        assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Bearer")
    with api.client(token="not-a-token-at-all-xxxxxx") as bad:
        r = _send(bad, method, path, body, None)
        assert r.status_code == 401 and "not-a-token" not in r.text
    with api.client(None) as c:
        r = c.request(method, path.format(role="x"), json=None, headers={"Authorization": "Basic abc"})
        assert r.status_code == 401
    for role in ROLES:
        with api.client(role) as c:
            r = _send(c, method, path, body, role)
            if Role[role.upper()] < Role[least.upper()]:
                assert r.status_code == 403, (role, r.text)
                assert least in r.json()["detail"] and TOKENS[role] not in r.text
            else:
                assert r.status_code not in (401, 403, 500), (role, r.status_code, r.text)


def test_rate_limit_is_429_with_retry_after(backend, tmp_path):
    server = start_api(tmp_path, backend, "--schedulers", "off", "--rate", "0.5", "--burst", "3", cell="rl")
    try:
        with server.client("reader") as c, server.client("operator") as other:
            codes = [c.get("/v1/jobs").status_code for _ in range(6)]
            assert codes[:3] == [200, 200, 200] and 429 in codes[3:]
            r = c.get("/v1/jobs")
            assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1
            assert TOKENS["reader"] not in r.text and "reader-1" in r.json()["detail"]
            assert other.get("/v1/jobs").status_code == 200  # per token: another token is not limited
            assert c.get("/healthz").status_code == 200  # health is not behind the token
    finally:
        server.stop()


def test_token_table_hashes_and_compares_every_entry(tmp_path):
    table = TokenTable.parse("reader:r:" + "a" * 20 + "\noperator:o:sha256:" + digest("b" * 20).hex(), "t")
    assert all(len(raw) == 32 for raw, _ in table.entries)
    assert not any(b"aaaa" in raw for raw, _ in table.entries)
    assert table.lookup("a" * 20).role is Role.READER
    assert table.lookup("b" * 20).role is Role.OPERATOR
    assert table.lookup("c" * 20) is None
    for bad in ("reader:r:short", "king:r:" + "a" * 20, "reader:" + "a" * 20, ""):
        with pytest.raises(ValueError):
            TokenTable.parse(bad, "t")


def test_a_token_name_or_secret_given_twice_is_refused():
    # Names are who the audit records and whose rate bucket a request takes; one secret
    # under two roles would silently be whichever came last.
    with pytest.raises(ValueError, match="the name is given twice"):
        TokenTable.parse("reader:r:" + "a" * 20 + "\noperator:r:" + "b" * 20, "t")
    with pytest.raises(ValueError, match="the same secret as token r"):
        TokenTable.parse("reader:r:" + "a" * 20 + "\noperator:o:" + "a" * 20, "t")
    with pytest.raises(ValueError, match="the same secret as token r"):
        TokenTable.parse("reader:r:" + "a" * 20 + "\noperator:o:sha256:" + digest("a" * 20).hex(), "t")
