# Two commands: `make run` (the whole service) and `make test` (lint + the test suite).
# Each sets itself up: a .venv with the project and its dev extra, reinstalled when
# pyproject.toml changes.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: setup run test lint format security bench bench-scaling clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	@touch $(STAMP)

setup: $(STAMP)

run: setup
	$(BIN)/python -m scripts.run_service

# Two passes: most tests on two processes (pytest-xdist; whole files, as their stacks are
# module fixtures), then the tests marked `serial` (they measure latency or recovery time) with
# the machine to themselves.
test: setup lint
	$(BIN)/python -m pytest -n 2 --dist loadfile -m "not serial"
	$(BIN)/python -m pytest -m serial

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: setup
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

security: setup
	$(BIN)/python -m scripts.security

bench: setup
	$(BIN)/python -m benchmarks.run

bench-scaling: setup
	$(BIN)/python -m benchmarks.run --scaling

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache celerybeat-schedule* .run
