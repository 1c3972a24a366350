# The README's two commands: `make demo` and `make test`. Both set themselves up.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.setup-stamp

.PHONY: setup demo test lint system-deps bench clean

setup: $(STAMP)

# Idempotent: re-runs pip only when pyproject.toml changes.
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

demo: setup
	$(PY) -m cellsched.cli demo

# Debian's etcd-server for the integration tests and chromium for the dashboard's browser test
# (tests/test_ui_dashboard.py, through Playwright); each installed only when missing.
system-deps:
	@command -v etcd >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq etcd-server >/dev/null; }
	@command -v chromium >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }

# import-linter and mypy read the installed layout that tools/stage.py links under
# build/stage (docs/architecture.md, "Layout for static tools").
lint: setup
	$(VENV)/bin/ruff check .
	tools/lint_imports.sh
	$(PY) tools/stage.py >/dev/null
	$(PY) -m mypy
	$(PY) -m vulture

test: setup system-deps lint
	$(PY) -m pytest -q -p no:cacheprovider

clean:
	rm -rf $(VENV) build *.egg-info
