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

# Debian's etcd-server and prometheus for the integration tests, and chromium for the dashboard's
# browser test (tests/test_ui_dashboard.py, through Playwright); each installed only when missing.
# prometheus without its recommends (node exporter, smartmontools, ipmitool: nothing the tests
# run), and with services kept from starting: the package's postinst would start a daemon on
# :9090 where an init script runs. Docker images ship a /usr/sbin/policy-rc.d that refuses
# (exit 101); where there is none, one is written for the install and removed after.
APT_INSTALL := DEBIAN_FRONTEND=noninteractive apt-get install -y -qq -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold
system-deps:
	@command -v etcd >/dev/null || { apt-get update -qq && $(APT_INSTALL) etcd-server >/dev/null; }
	@command -v prometheus >/dev/null || { \
	  rc=/usr/sbin/policy-rc.d; own=; \
	  if [ ! -e $$rc ]; then printf '#!/bin/sh\nexit 101\n' > $$rc && chmod 755 $$rc && own=1; fi; \
	  { apt-get update -qq && $(APT_INSTALL) --no-install-recommends prometheus >/dev/null; }; st=$$?; \
	  if [ -n "$$own" ]; then rm -f $$rc; fi; exit $$st; }
	@command -v chromium >/dev/null || { apt-get update -qq && $(APT_INSTALL) chromium >/dev/null; }

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
