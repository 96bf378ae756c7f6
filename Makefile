# The two commands: `make demo` and `make test`. Everything else they need is installed here.

PYTHON ?= $(shell for p in python3.13 python3.12 python3.11 python3; do \
	if command -v $$p >/dev/null 2>&1 && $$p -c 'import sys; sys.exit(sys.version_info < (3, 11))'; \
	then echo $$p; break; fi; done)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.srcore-installed
SERVICES := example_services/todo example_services/meta example_services/paste
# Every optional part of srcore (the demo serves under gunicorn; the tests use them all).
# The test and lint tools are PEP 735 dependency groups (pip 25.1 reads them).
EXTRAS := celery,redis,postgres,server
JOBS ?= auto

.PHONY: demo test lint typecheck unit browser-deps prometheus-deps bench reliability clean help

help:
	@echo "make demo   set up and run the example network on 127.0.0.1"
	@echo "make test   set up and run the whole test suite (lint, types, tests)"
	@echo "make bench  run the benchmarks"
	@echo "make reliability  webhooks under failing receivers, killed workers, Redis restarts"

$(STAMP): pyproject.toml $(addsuffix /pyproject.toml,$(SERVICES))
	@test -n "$(PYTHON)" || { echo "Python 3.11 or newer is required"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade 'pip>=25.1'
	$(BIN)/python -m pip install --quiet -e '.[$(EXTRAS)]' $(addprefix -e ,$(SERVICES)) \
		--group dev $(foreach s,$(SERVICES),--group $(s)/pyproject.toml:test)
	@touch $@

# Ctrl-C stops the network and exits 0: the demo takes the terminal's foreground for its own
# process group, so the Ctrl-C reaches it alone and make reports its status.
# DEMO_ARGS: e.g. "--var /tmp/x --first-port 6000" (the tests run the recipe that way).
DEMO_ARGS ?=
demo: $(STAMP)
	$(BIN)/python scripts/demo.py $(DEMO_ARGS)

# Browser tests drive Debian's Chromium; install it when we can (CI runs as root).
browser-deps:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing chromium (browser tests)"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium fonts-dejavu-core >/dev/null; \
	  else echo "chromium is not installed: browser tests will be skipped (they fail under CI=true)"; fi; }

# The metrics tests check each scrape with Debian's promtool and a prometheus server they run
# themselves; the package's own service is left disabled and stopped.
prometheus-deps:
	@command -v promtool >/dev/null 2>&1 && command -v prometheus >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing prometheus (metrics tests)"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null; \
	    systemctl disable prometheus >/dev/null 2>&1; systemctl stop prometheus >/dev/null 2>&1; \
	    service prometheus stop >/dev/null 2>&1; true; \
	  else echo "prometheus is not installed: metrics tests will be skipped (they fail under CI=true)"; fi; }

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check srcore

typecheck: $(STAMP)
	$(BIN)/mypy --strict srcore

unit: $(STAMP) browser-deps prometheus-deps
	$(BIN)/pytest -n $(JOBS) -p no:cacheprovider

test: lint typecheck unit

bench: $(STAMP)
	$(BIN)/python bench/run.py

reliability: $(STAMP)
	$(BIN)/python bench/reliability.py

clean:
	rm -rf $(VENV) var artifacts build dist .pytest_cache .mypy_cache .ruff_cache
