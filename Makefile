# Two entry points for a fresh machine: `make demo` and `make test`.
# Both create .venv (with uv, from requirements.lock) when it is missing.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
# The local Fashion-MNIST copy when there is one (../shared beside the clone); otherwise the
# official files are downloaded (MD5-checked) into ~/.cache/catalogue-tagging/fashion-mnist.
# An explicit TAGGING_FASHION_MNIST_DIR wins.
SHARED_FMNIST := $(wildcard $(abspath ../shared/fashion-mnist))
ifneq ($(SHARED_FMNIST),)
export TAGGING_FASHION_MNIST_DIR ?= $(SHARED_FMNIST)
endif

.PHONY: setup system-deps demo test lint bench clean stack stack-status stack-down docs \
	docs-build screenshots

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml requirements.lock
	test -x $(PY) || python3.11 -m venv $(VENV) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip uv
	$(VENV)/bin/uv pip install -q -p $(PY) -r requirements.lock
	$(VENV)/bin/uv pip install -q -p $(PY) --no-deps -e .
	$(PY) -m pip check
	touch $@

# From Debian's packages, installed when missing (as root, else with sudo): PostgreSQL and
# Redis for the native stack (and its test), Chromium and its driver for the review page's
# browser tests. Nothing is downloaded at run time; the S3 test server comes from PyPI.
SUDO := $(if $(filter 0,$(shell id -u)),,sudo)
system-deps:
	@if ! ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 || ! command -v redis-server >/dev/null \
	    || ! test -x /usr/bin/chromium || ! test -x /usr/bin/chromedriver; then \
	  $(SUDO) apt-get update -q && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -q \
	    postgresql redis-server chromium chromium-driver; \
	fi

stack: setup system-deps  ## the distributed engine on this machine: PostgreSQL, Redis, Celery
	$(VENV)/bin/tagging stack up --workdir var/stack

stack-status: setup
	$(VENV)/bin/tagging stack status --workdir var/stack

stack-down: setup
	$(VENV)/bin/tagging stack down --workdir var/stack

demo: setup  ## demo catalogue + the Airflow DAG end to end (SQLite), then a summary
	$(VENV)/bin/tagging demo --workdir var/demo

test: setup system-deps  ## lint, the docs site (strict), then the whole test suite (the stack test included)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mkdocs build --strict --quiet
	$(VENV)/bin/pytest

# Material's notice about MkDocs 2 on every build: read once, not at every test run.
export NO_MKDOCS_2_WARNING := 1

# The documentation site (mkdocs.yml, docs/): served on 127.0.0.1 with live reload; built
# into var/site. The reference pages are generated from the code at build time.
docs: setup
	$(VENV)/bin/mkdocs serve

docs-build: setup
	$(VENV)/bin/mkdocs build --strict

# The site's pictures, from a real run (docs/screenshots.py): the quality plot and the
# Airflow graph from the learning-loop demo (run into var/demo-loop when missing), the
# review page from its browser test. Commit the PNGs it changes.
screenshots: setup system-deps
	$(PY) docs/screenshots.py

bench: setup
	$(PY) benchmarks/bench_tagging.py

clean:
	rm -rf var .pytest_cache
