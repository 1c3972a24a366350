"""Build build/stage/cellsched/: the installed layout as a tree of symlinks, for static tools.

The top-level folders (cellstate/, gpu/, ...) install as `cellsched.<name>` through
pyproject's [tool.setuptools.package-dir] mapping, which only setuptools understands. This
script reads that mapping and links every .py file to where the installed package would
hold it, so import-linter, mypy and an editor (add build/stage to its search path) resolve
`cellsched.cellstate.x` to cellstate/x.py. Files are linked one by one (not folders), so
tools that do not follow directory links still walk the tree. Rebuilt from scratch on
every run: a deleted module never lingers. Why the layout is this way:
docs/architecture.md, "Layout for static tools".

    .venv/bin/python tools/stage.py      # prints the stage's root (put it on the tool's path)
"""

from __future__ import annotations

import shutil
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
STAGE = ROOT / "build" / "stage"


def package_dirs() -> dict[str, Path]:
    """Package name -> its folder, from pyproject.toml's package-dir mapping."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    mapping = config["tool"]["setuptools"]["package-dir"]
    return {name: ROOT / folder for name, folder in mapping.items()}


def build(stage: Path = STAGE) -> Path:
    if stage.exists():
        shutil.rmtree(stage)
    dirs = package_dirs()
    for name, folder in dirs.items():
        # A mapped folder nested in another mapping's folder is staged by its own entry only.
        others = [f for n, f in dirs.items() if n != name and f != folder and f.is_relative_to(folder)]
        target = stage.joinpath(*name.split("."))
        for src in sorted(folder.rglob("*.py")):
            if "__pycache__" in src.parts or any(src.is_relative_to(o) for o in others):
                continue
            dest = target / src.relative_to(folder)
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.symlink_to(src)
    return stage


if __name__ == "__main__":
    print(build(Path(sys.argv[1]) if len(sys.argv) > 1 else STAGE))
