"""Every raise of a new exception in the packages names a CellError subclass, and every
CellError subclass is drawn in the tree of cellstate/errors.py's docstring."""

from __future__ import annotations

import argparse
import ast
import builtins
import importlib
from pathlib import Path

from cellsched.cellstate import errors

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = {"cellstate": "cellsched.cellstate", "schedulers": "cellsched.schedulers", "gpu": "cellsched.gpu",
            "api": "cellsched.api", "loadtests": "cellsched.loadtests", "cellsched": "cellsched"}
# abstract methods; argparse's type-converter protocol (cellsched/arg_types.py: argparse turns
# it into its "argument --X: ..." error, and shows any other exception's message as a bare
# "invalid value")
ALLOWED = {NotImplementedError, argparse.ArgumentTypeError}
# Modules this test must not import into the pytest process, with why.
NOT_IMPORTED = {
    # A locustfile, run only by `locust -f` in bench_api's subprocess. Importing locust
    # monkey-patches the whole process with gevent (threads, sockets, ssl): here it raised
    # RecursionError, and in the full suite every Ray and etcd test after it hung.
    "cellsched.loadtests.locust_api",
}


def _modules():
    for folder, package in PACKAGES.items():
        for f in sorted((ROOT / folder).rglob("*.py")):
            rel = f.relative_to(ROOT / folder).with_suffix("")
            parts = [p for p in rel.parts if p != "__init__"]
            name = ".".join([package, *parts])
            if name not in NOT_IMPORTED:
                yield f, name


def test_every_raise_in_the_packages_names_a_cell_error():
    offenders = []
    for path, name in _modules():
        module = importlib.import_module(name)
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.Raise) or node.exc is None:
                continue
            target = node.exc.func if isinstance(node.exc, ast.Call) else node.exc
            if isinstance(target, ast.Name):
                obj = getattr(module, target.id, None) or getattr(builtins, target.id, None)
            elif isinstance(target, ast.Attribute) and isinstance(target.value, ast.Name):
                obj = getattr(getattr(module, target.value.id, None), target.attr, None)
            else:
                continue
            if not isinstance(obj, type):
                continue  # re-raising a caught exception object
            if obj in ALLOWED or issubclass(obj, errors.CellError):
                continue
            offenders.append(f"{path.relative_to(ROOT)}:{node.lineno} raises {obj.__name__}")
    assert not offenders, offenders


def test_every_cell_error_is_drawn_in_the_tree():
    def subclasses(cls):
        for sub in cls.__subclasses__():
            yield sub
            yield from subclasses(sub)

    for _, name in _modules():
        importlib.import_module(name)  # every package's error classes are defined by now
    tree = errors.__doc__ or ""
    missing = [c.__name__ for c in subclasses(errors.CellError)
               if c.__module__.startswith("cellsched.") and c.__name__ not in tree]
    assert not missing, f"CellError subclasses missing from the tree in cellstate/errors.py: {missing}"
