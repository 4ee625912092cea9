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
	touch $(STAMP)

install: $(STAMP)

# Programs the tests start on loopback: Debian's redis-server, for the queue-server tests (installed as root;
# without it, and without root, those tests skip and say why).
services:
	@if command -v redis-server >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y --no-install-recommends redis-server; \
	else echo "make services: redis-server is missing; install it as root (sudo make services, or" \
	  "sudo apt-get install redis-server): without it the queue-server tests are skipped" >&2; exit 1; fi

# Two worker processes (pytest-xdist), each test file in one of them: most of the suite waits on servers,
# subprocesses and simulated dwell times, not on the CPU, so two nearly halve its time on a 2-core machine.
test: $(STAMP)
	@command -v redis-server >/dev/null 2>&1 || $(MAKE) --no-print-directory services || true
	$(PY) -m pytest -n 2 --dist loadfile

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
