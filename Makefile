# Quick start: `make run` (set up, load the sample dumps, start the daemon `ticker run`) and
# `make test` (set up with test extras, run the whole suite).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# The sample pages: the two real headers (with filler text) and three pages without ticker.
# The other files beside them are parser test variants with invented rates.
SAMPLES := tests/fixtures/dumps/tca_2025-*.txt tests/fixtures/dumps/no_ticker_*.txt

.PHONY: run test lint bench clean

$(VENV)/.run: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(VENV)/.test: pyproject.toml $(VENV)/.run
	$(BIN)/python -m pip install --quiet -e '.[test,serve]'
	touch $@

# The daemon scrapes every [[sources]] page now and then on [schedule] scrape; Ctrl-C stops it.
run: $(VENV)/.run
	$(BIN)/ticker backfill $(SAMPLES)
	$(BIN)/ticker chart
	$(BIN)/ticker run

# The suite waits on processes, sockets and sleeps much of the time: two workers a core.
WORKERS ?= $(shell $(PYTHON) -c 'import os; print(2 * (os.cpu_count() or 1))')

test: $(VENV)/.test
	$(BIN)/pytest -q -n $(WORKERS)

lint: $(VENV)/.test
	$(BIN)/ruff check ticker tests
	$(BIN)/ruff format --check ticker tests
	$(BIN)/mypy

bench: $(VENV)/.test
	$(BIN)/python tests/benchmarks/bench_backfill.py
	$(BIN)/python tests/benchmarks/bench_startup.py
	$(BIN)/python tests/benchmarks/bench_scrape.py
	$(BIN)/python tests/benchmarks/bench_daemon_memory.py
	$(BIN)/python tests/benchmarks/bench_serve.py
	$(BIN)/python tests/benchmarks/bench_reference.py
	$(BIN)/python tests/benchmarks/bench_recover.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
