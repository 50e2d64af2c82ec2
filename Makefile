# One command each: make demo, make test, make lint, make asl, make bench, make soak.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
SOURCES := functions tests bench workflows examples

.PHONY: deps test unit integration lint demo bench soak asl clean

# --- installation (idempotent; re-runs when the pinned requirement files change) ---
$(BIN)/.installed: pyproject.toml requirements-dev.txt functions/requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements-dev.txt -e .
	touch $@

node_modules/.installed: package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

deps: $(BIN)/.installed node_modules/.installed

# --- checks ---
lint: deps
	$(BIN)/ruff check $(SOURCES)
	$(BIN)/ruff format --check $(SOURCES)
	$(BIN)/mypy

test: lint
	$(BIN)/pytest -q

unit: deps
	$(BIN)/pytest -q tests/unit

integration: deps
	$(BIN)/pytest -q tests/integration

soak: deps
	LEANOPS_SOAK=1 $(BIN)/pytest -q -m soak tests

bench: deps
	$(BIN)/python bench/protocol.py

demo: deps
	$(BIN)/python examples/protocol_walkthrough.py

clean:
	rm -rf $(VENV) node_modules .leanops .pytest_cache .mypy_cache .ruff_cache .hypothesis
