"""The package layout stays as docs/architecture.md ("Where each concept lives") draws it:
curated, sorted public names per package; product layers never reach into loadtests; one
task-id parser."""

from __future__ import annotations

import ast
import importlib
import re
from pathlib import Path

import pytest

from cellsched.cellstate.errors import InvalidInputError
from cellsched.cellstate.model import group_of_task, job_of_task, parse_task_id, task_id

ROOT = Path(__file__).resolve().parent.parent
# folder -> installed package name (pyproject's package-dir mapping)
PACKAGES = {"cellstate": "cellsched.cellstate", "gpu": "cellsched.gpu", "schedulers": "cellsched.schedulers",
            "api": "cellsched.api", "loadtests": "cellsched.loadtests", "cellsched": "cellsched"}
PRODUCT = ("cellstate", "gpu", "schedulers", "api")
CURATED = ["cellsched", "cellsched.cellstate", "cellsched.cellstate.store", "cellsched.gpu", "cellsched.schedulers",
           "cellsched.api", "cellsched.loadtests", "cellsched.loadtests.traces", "cellsched.loadtests.stress",
           "cellsched.loadtests.bench_schedulers"]
MAX_MODULE_LINES = 400


def _modules(folders) -> list[Path]:
    return sorted(f for d in folders for f in (ROOT / d).rglob("*.py") if "data" not in f.relative_to(ROOT).parts)


def _isort_key(name: str) -> tuple[int, str]:
    # ruff's RUF022 order: SCREAMING_CASE, then CamelCase, then the rest.
    if re.fullmatch(r"_*[A-Z][A-Z0-9_]*", name) and len(name.strip("_")) > 1:
        return 0, name
    if name[:1].isupper():
        return 1, name
    return 2, name


@pytest.mark.parametrize("package", CURATED)
def test_all_is_sorted_and_every_name_exists(package):
    mod = importlib.import_module(package)
    names = mod.__all__
    assert isinstance(names, list)
    assert names == sorted(names, key=_isort_key), f"{package}.__all__ is not sorted"
    assert len(set(names)) == len(names), f"{package}.__all__ names something twice"
    missing = [n for n in names if not hasattr(mod, n)]
    assert not missing, f"{package}.__all__ names what it does not define: {missing}"


def test_the_sort_key_orders_like_the_gpu_package():
    assert sorted(["seed_from", "TopK", "PACK", "Assignment"], key=_isort_key) == [
        "PACK", "Assignment", "TopK", "seed_from"]


def test_no_module_in_the_packages_is_over_400_lines():
    # Split by concept when a module grows past this (docs/architecture.md, "Where each concept lives").
    long = {str(f.relative_to(ROOT)): n for f in _modules(PACKAGES)
            if (n := len(f.read_text().splitlines())) > MAX_MODULE_LINES}
    assert not long, f"modules over {MAX_MODULE_LINES} lines: {long}"


def _imported_modules(path: Path, package: str) -> set[str]:
    """Absolute names of every module the file imports (relative imports resolved)."""
    tree = ast.parse(path.read_text())
    here = package.split(".")
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = here[: len(here) - node.level + 1] if node.level else []
            name = ".".join(base + ([node.module] if node.module else []))
            out.add(name)
            out |= {f"{name}.{a.name}" for a in node.names}
    return out


def _package_of(path: Path) -> str:
    folder, *rest = path.relative_to(ROOT).parts
    parts = PACKAGES[folder].split(".") + list(rest)
    parts[-1] = parts[-1][:-3]
    return ".".join(parts if parts[-1] == "__init__" else parts[:-1]).removesuffix(".__init__")


def test_product_modules_never_import_loadtests():
    offenders = []
    for f in _modules(PRODUCT):
        for name in _imported_modules(f, _package_of(f)):
            if re.match(r"(cellsched\.)?loadtests\b", name):
                offenders.append(f"{f.relative_to(ROOT)} imports {name}")
    assert not offenders, offenders


def test_the_import_walker_sees_a_relative_import_into_loadtests(tmp_path):
    # The check above must be able to fail: a relative import resolved against its package.
    f = ROOT / "schedulers" / "core.py"
    assert "cellsched.cellstate.commit" in _imported_modules(f, _package_of(f))
    fake = tmp_path / "x.py"
    fake.write_text("from ...loadtests.traces import google2011\n")
    assert "cellsched.loadtests.traces.google2011" in _imported_modules(fake, "cellsched.schedulers.x")


# Key parsers split store keys (the stress checker names key families); model.py holds the
# one task-id parser.
KEY_PARSERS = {"cellstate/model.py", "cellstate/keys.py", "cellstate/shards.py", "loadtests/stress/checking.py"}


def test_one_task_id_parser():
    offenders = []
    for f in _modules(PACKAGES):
        rel = str(f.relative_to(ROOT))
        if rel in KEY_PARSERS:
            continue
        for node in ast.walk(ast.parse(f.read_text())):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                    and node.func.attr in {"split", "rsplit", "partition", "rpartition"}
                    and node.args and isinstance(node.args[0], ast.Constant) and node.args[0].value == "/"):
                offenders.append(f"{rel}:{node.lineno}")
    assert not offenders, f"split task ids with cellstate.model.parse_task_id / job_of_task: {offenders}"


def test_task_id_parser_round_trips_and_refuses_bad_ids():
    tid = task_id("job-7", 3, 12)
    assert parse_task_id(tid) == ("job-7", 3, 12)
    assert job_of_task(tid) == "job-7"
    assert group_of_task(tid) == 3
    for bad in ("job-7", "job-7/x/1", "job-7/1/"):
        assert parse_task_id(bad) is None
        with pytest.raises(InvalidInputError):
            group_of_task(bad)
