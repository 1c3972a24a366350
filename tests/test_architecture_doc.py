"""docs/architecture.md stays true: every module it names imports, every section the code
cites exists, and nothing in the repository cites the design notes outside it."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "architecture.md"
PACKAGES = {"cellstate": "cellsched.cellstate", "schedulers": "cellsched.schedulers", "gpu": "cellsched.gpu",
            "api": "cellsched.api", "loadtests": "cellsched.loadtests", "cellsched": "cellsched"}
SOURCE_DIRS = list(PACKAGES) + ["tools", "deploy"]


def _sections() -> set[str]:
    return {m.group(1).strip() for m in re.finditer(r"^#+\s+(.+)$", DOC.read_text(), re.M)}


def _module_paths() -> set[str]:
    return set(re.findall(r"`((?:cellstate|schedulers|gpu|api|loadtests|cellsched)/[\w/]+\.py)`", DOC.read_text()))


def test_architecture_doc_modules_all_import():
    paths = _module_paths()
    assert len(paths) >= 15, "the doc should name the modules it describes"
    for path in sorted(paths):
        folder, rest = path.split("/", 1)
        name = PACKAGES[folder] + "." + rest[:-3].replace("/", ".")
        assert (ROOT / path).exists(), f"docs/architecture.md names {path}, which does not exist"
        importlib.import_module(name)


def test_every_section_the_code_cites_exists():
    sections = _sections()
    cited: list[tuple[str, str]] = []
    for folder in SOURCE_DIRS + ["tests"]:
        for f in (ROOT / folder).rglob("*.py"):
            for m in re.finditer(r'docs/architecture\.md,?\s*\(?\s*"([^"]+)"', f.read_text()):
                cited.append((str(f.relative_to(ROOT)), m.group(1)))
    assert cited, "the code cites docs/architecture.md sections by name"
    missing = [(f, s) for f, s in cited if s not in sections]
    assert not missing, f"cited sections missing from docs/architecture.md: {missing}"


def test_nothing_cites_the_design_notes_outside_the_repository():
    offenders = []
    files = [ROOT / "pyproject.toml", ROOT / "Makefile", ROOT / "README.md"]
    for folder in SOURCE_DIRS + ["docs"]:
        files += [f for f in (ROOT / folder).rglob("*") if f.suffix in {".py", ".md", ".toml", ".yaml", ".cfg"}]
    for f in files:
        text = f.read_text(errors="replace")
        if re.search(r"DESIGN(\.md)?\s*§|shared/DESIGN", text):
            offenders.append(str(f.relative_to(ROOT)))
    assert not offenders, offenders
