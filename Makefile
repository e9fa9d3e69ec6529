# scratchnet — `make run` starts the service, `make test` runs every check.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
HOST   ?= 127.0.0.1
PORT   ?= 8000

.PHONY: run test lint typecheck unit bench bench-engine bench-lbfgs bench-sweep bench-api bench-executor bench-store bench-client bench-dask bench-snapshots docs-pictures fuzz clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev,dask]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/python -m service --host $(HOST) --port $(PORT)

lint: $(STAMP)
	$(BIN)/ruff check engine service scratchnet tests benchmarks
	$(BIN)/ruff format --check engine service scratchnet tests benchmarks

typecheck: $(STAMP)
	$(BIN)/mypy

unit: $(STAMP)
	$(BIN)/python -m pytest -q

test: lint typecheck unit

# Benchmarks run on demand, never in `make test`; each prints its side-by-side ratios.
bench: bench-engine bench-lbfgs bench-sweep bench-api bench-store

bench-engine: $(STAMP)
	$(BIN)/python -m benchmarks.engine_bench

bench-lbfgs: $(STAMP)
	$(BIN)/python -m benchmarks.lbfgs_bench

bench-sweep: $(STAMP)
	$(BIN)/python -m benchmarks.sweep_bench

bench-api: $(STAMP)
	$(BIN)/python -m benchmarks.api_bench

bench-executor: $(STAMP)
	$(BIN)/python -m benchmarks.executor_bench

bench-store: $(STAMP)
	$(BIN)/python -m benchmarks.store_bench

bench-client: $(STAMP)
	$(BIN)/python -m benchmarks.client_bench

bench-dask: $(STAMP)
	$(BIN)/python -m benchmarks.dask_bench

bench-snapshots: $(STAMP)
	$(BIN)/python -m benchmarks.snapshot_bench

# README's animation, docs/evolution.gif, drawn by the service from the tutorial job.
docs-pictures: $(STAMP)
	PYTHONPATH=. $(BIN)/python docs/make_evolution.py

# schemathesis against a real server, every phase and check (minutes; needs schemathesis).
fuzz: $(STAMP)
	benchmarks/fuzz_api.sh

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
