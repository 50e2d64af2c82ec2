# One command each: make demo, make test, make lint, make asl, make bench, make soak.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
SOURCES := functions tests bench workflows examples

.PHONY: deps test unit integration lint demo walkthrough bench soak asl clean

# --- installation (idempotent; re-runs when the pinned requirement files change) ---
$(BIN)/.installed: pyproject.toml requirements-dev.txt functions/requirements.txt workflows/requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements-dev.txt -r workflows/requirements.txt -e .
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
	node_modules/.bin/asl-validator $$(printf -- '--json-path %s ' statemachines/*.asl.json)

test: lint
	$(BIN)/pytest -q

unit: deps
	$(BIN)/pytest -q tests/unit

integration: deps
	$(BIN)/pytest -q tests/integration

soak: deps
	LEANOPS_SOAK=1 $(BIN)/pytest -q tests/integration/test_protocol_stateful.py

bench: deps
	$(BIN)/python bench/protocol.py
	$(BIN)/python bench/workflow.py
	$(BIN)/python bench/cost.py

# The sample pipeline, end to end and locally: generate telemetry, run the topic twice, show its status.
demo: deps
	$(BIN)/python -m examples.vehicle_telemetry.generate --records 10000 --per-object 2500
	$(BIN)/leanops run vehicle_telemetry
	$(BIN)/leanops run vehicle_telemetry
	$(BIN)/leanops status

# The protocol step by step: contention, a stalled holder taken over and fenced out.
walkthrough: deps
	$(BIN)/python examples/protocol_walkthrough.py

# Render workflows/ to statemachines/*.asl.json (commit the result; tests/workflows fail when it is stale).
asl: deps
	$(BIN)/python -m workflows

clean:
	rm -rf $(VENV) node_modules .leanops .pytest_cache .mypy_cache .ruff_cache .hypothesis
