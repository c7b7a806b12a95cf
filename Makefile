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

.PHONY: setup demo test lint bench clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml requirements.lock
	test -x $(PY) || python3.11 -m venv $(VENV) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip uv
	$(VENV)/bin/uv pip install -q -p $(PY) -r requirements.lock
	$(VENV)/bin/uv pip install -q -p $(PY) --no-deps -e .
	$(PY) -m pip check
	touch $@

demo: setup  ## demo catalogue + the Airflow DAG end to end (SQLite), then a summary
	$(VENV)/bin/tagging demo --workdir var/demo

test: setup  ## lint, then the whole test suite
	$(VENV)/bin/ruff check .
	$(VENV)/bin/pytest

bench: setup
	$(PY) benchmarks/bench_tagging.py

clean:
	rm -rf var .pytest_cache
