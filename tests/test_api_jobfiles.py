"""Job files (YAML/JSON) go through the API's own Pydantic models: each kind of mistake is
refused with the field named, by the client before sending and by the API itself; human
units map exactly onto base units."""

from __future__ import annotations

import subprocess
import sys

import pytest
from pydantic import ValidationError

from cellsched.api import JobIn, units
from cellsched.cellstate.errors import InvalidInputError
from cellsched.cellstate.model import TransactionMode
from cellsched.client import ClientError, load_job_file
from tests.apiserver import start_api

GOOD = {"id": "f-1", "groups": [{"name": "w", "count": 2, "resources": {"cpu": "500m", "memory": "2Gi"}}]}


def with_group(**changes):
    return {**GOOD, "groups": [{**GOOD["groups"][0], **changes}]}


# (what is wrong, the job, the field the error must name)
MISTAKES = [
    ("unknown cpu unit", with_group(resources={"cpu": "500q"}), "groups.0.resources.cpu"),
    ("cpu not a quantity", with_group(resources={"cpu": "1.5.1"}), "groups.0.resources.cpu"),
    ("negative memory", with_group(resources={"memory": -5}), "groups.0.resources.memory"),
    ("fractional gpu", with_group(resources={"gpu": "0.5"}), "groups.0.resources.gpu"),
    ("no resources at all", with_group(resources={}), "groups.0"),
    ("zero count", with_group(count=0), "groups.0.count"),
    ("boolean count", with_group(count=True), "groups.0.count"),
    ("count over the job limit", with_group(count=20_001), "groups.0.count"),
    ("bad label key", with_group(labels={"bad key": "x"}), "groups.0.labels"),
    ("unknown field", with_group(colour="red"), "groups.0.colour"),
    ("priority out of range", {**GOOD, "priority": 12}, "priority"),
    ("unknown class", {**GOOD, "class": "urgent"}, "class"),
    ("unknown mode", {**GOOD, "mode": "sometimes"}, "mode"),
    ("bad job id", {**GOOD, "id": "a/b"}, "id"),
    ("no groups", {**GOOD, "groups": []}, "groups"),
    ("duplicate group names", {**GOOD, "groups": GOOD["groups"] * 2}, "groups"),
    ("negative max_failures", {**GOOD, "max_failures": -1}, "max_failures"),
]


def test_human_units():
    assert units.cpu_milli("500m") == 500 and units.cpu_milli("2") == 2000 and units.cpu_milli(1.5) == 1500
    assert units.memory_mib("2Gi") == 2048 and units.memory_mib("512Mi") == 512 and units.memory_mib(64) == 64
    assert units.memory_mib("1G") == 954  # 10^9 bytes, rounded up to whole MiB
    assert units.gpus(2) == 2
    assert units.cpu_milli("1.5m") == 2 and units.cpu_milli(0.0001) == 1  # finer than a milli-CPU: up
    for bad in ("-1", "lots", True, float("nan"), "1e3", "2x"):
        with pytest.raises(InvalidInputError):
            units.cpu_milli(bad)
    assert units.format_cpu(1500) == "1500m" and units.format_memory(2048) == "2Gi"


def test_a_good_file_maps_onto_the_model():
    spec = JobIn.model_validate({**GOOD, "mode": "gang", "class": "gpu",
                                 "groups": [{**GOOD["groups"][0], "gpu_models": ["A100", "H100"]}]})
    job = spec.to_job("f-1")
    assert job.groups[0].request == (500, 2048, 0)
    assert job.mode is TransactionMode.ALL_OR_NOTHING and job.job_class.value == "gpu"
    assert job.groups[0].labels == {"gpu.model": "A100,H100"}


@pytest.mark.parametrize("what,job,field", MISTAKES, ids=[m[0] for m in MISTAKES])
def test_each_mistake_names_its_field(what, job, field):
    with pytest.raises(ValidationError) as exc:
        JobIn.model_validate(job)
    fields = [".".join(str(p) for p in e["loc"]) for e in exc.value.errors()]
    assert any(f.startswith(field) for f in fields), (what, fields)


def test_client_refuses_a_bad_file_naming_file_and_field(tmp_path):
    f = tmp_path / "bad.yaml"
    f.write_text("id: f-2\ngroups:\n  - name: w\n    count: 1\n    resources: {cpu: 2 cores}\n")
    out = subprocess.run([sys.executable, "-m", "cellsched.cli", "submit", str(f), "--api", "http://127.0.0.1:9"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2  # refused before any request (that port has no server)
    assert "bad.yaml: groups.0.resources.cpu" in out.stderr
    broken = tmp_path / "broken.yaml"
    broken.write_text("id: [unclosed\n")
    out = subprocess.run([sys.executable, "-m", "cellsched.cli", "submit", str(broken)], capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 2 and "not valid YAML" in out.stderr


def test_the_api_refuses_each_mistake_naming_the_field(tmp_path):
    server = start_api(tmp_path, None, "--schedulers", "off")
    try:
        with server.client("submitter") as c:
            for what, job, field in MISTAKES:
                r = c.post("/v1/jobs", json=job)
                assert r.status_code == 422, (what, r.text)
                assert any(e["field"].startswith(f"body.{field}") for e in r.json()["errors"]), (what, r.json())
            assert c.get("/v1/jobs").json()["items"] == []  # nothing of them was written
    finally:
        server.stop()


def test_a_file_not_utf8_or_an_alias_bomb_is_refused_by_name(tmp_path):
    binary = tmp_path / "binary.yaml"
    binary.write_bytes(b"\xff\xfeid: x\n")
    with pytest.raises(ClientError, match=r"binary.yaml: not UTF-8 text \(byte 0xff at offset 0\)"):
        load_job_file(str(binary))
    # Ten levels of ten: some ten billion values from ten lines.
    levels = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    levels += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 10)]
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text("\n".join(levels) + "\n")
    with pytest.raises(ClientError, match="more than 1,000,000 values once its YAML aliases are expanded"):
        load_job_file(str(bomb))
    shared = tmp_path / "shared.yaml"  # a few aliases are fine
    shared.write_text("- {id: s-1, groups: [&g {name: w, count: 1, resources: {cpu: 500m}}]}\n"
                      "- {id: s-2, groups: [*g]}\n")
    kind, body = load_job_file(str(shared))
    assert kind == "bulk" and [j["id"] for j in body["jobs"]] == ["s-1", "s-2"]
