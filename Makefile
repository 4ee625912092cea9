# Two commands for a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: test demo bench install services qserver-lists clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[test,bench]"
	$(PY) -m xfct_bluesky.analysis.compile  # the numba kernels into numba's cache (~70 s), not at the first fit
	touch $(STAMP)

install: $(STAMP)

# Programs the tests start on loopback, from Debian's packages: redis-server for the queue-server tests,
# PostgreSQL (initdb and postgres, run as a non-root user) for the storage tests on a facility catalog, and
# Chromium for the browser test of the live view. Installed as root; a service the install would start is kept
# from starting (policy-rc.d), since the tests start their own servers and stop them by PID. Without them and
# without root, those tests skip and say why (under CI=true a skip of them fails).
SERVICE_PACKAGES = $(if $(shell command -v redis-server),,redis-server) \
	$(if $(wildcard /usr/lib/postgresql/*/bin/initdb),,postgresql) \
	$(if $(shell command -v chromium),,chromium)
services:
	@missing="$(strip $(SERVICE_PACKAGES))"; \
	if [ -z "$$missing" ]; then :; \
	elif [ "$$(id -u)" = 0 ]; then \
	  policy=/usr/sbin/policy-rc.d; made=; [ -e $$policy ] || { printf '#!/bin/sh\nexit 101\n' > $$policy; chmod +x $$policy; made=1; }; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; rc=$$?; \
	  [ -z "$$made" ] || rm -f $$policy; exit $$rc; \
	else echo "make services: missing $$missing; install as root (sudo make services, or" \
	  "sudo apt-get install $$missing): without them the tests that need them are skipped" >&2; exit 1; fi

# Three worker processes (pytest-xdist), each test file in one of them: most of the suite waits on servers,
# subprocesses and simulated dwell times, not on the CPU, so on a 2-core machine three take 594 s where two
# took 662 s (the same tree, one after the other, 1 Dec 2026). The files go out slowest first (the order
# tests/conftest.py sets; --no-loadscope-reorder keeps xdist from sorting them by their number of tests). The
# 20 slowest tests are listed at the end, to keep the suite under its 10 minutes.
test: $(STAMP)
	@$(if $(strip $(SERVICE_PACKAGES)),$(MAKE) --no-print-directory services || true,:)
	$(PY) -m pytest -n 3 --dist loadfile --no-loadscope-reorder --durations=20

# profile_collection/existing_plans_and_devices.yaml, by the queue server's own tool from the profile loaded with
# the simulated hardware (tests/test_queueserver.py fails when the checked-in file is stale).
qserver-lists: $(STAMP)
	tmp=$$(mktemp -d) && trap 'rm -rf "$$tmp"' EXIT && \
	env -u DISPLAY -u XFCT_BLUESKY_TILED_URI XFCT_BLUESKY_DATA="$$tmp" XFCT_BLUESKY_HARDWARE=sim MPLBACKEND=Agg \
	  $(VENV)/bin/qserver-list-plans-devices --startup-dir profile_collection/startup --file-dir profile_collection

demo: $(STAMP)
	$(VENV)/bin/xfct-bluesky demo

bench: $(STAMP)
	$(PY) benchmarks/bench_simulation.py

clean:
	rm -rf $(VENV) build *.egg-info
