# One command each: make demo, make test, make lint, make asl, make bench, make soak.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
SOURCES := functions control tests bench workflows examples
# The repository root, also when SAM runs a build-<Function> target from a scratch copy of functions/.
ROOT := $(patsubst %/,%,$(dir $(abspath $(lastword $(MAKEFILE_LIST)))))
# Deployment tools (aws-sam-cli, cfn-lint) have their own venv: aws-sam-cli pins click and boto3 versions that
# conflict with the project's (requirements-dev.txt, layer/requirements.txt).
DEPLOY_VENV ?= $(VENV)/deploy
DEPLOY_BIN := $(DEPLOY_VENV)/bin
# `sam build` needs the functions' runtime, python3.13, on PATH: the one on PATH if it runs, else pyenv's.
PY313_BIN = $(shell python3.13 -c 'import sys; print(sys.exec_prefix + "/bin")' 2>/dev/null || { \
	v=$$(pyenv versions --bare 2>/dev/null | grep -E '^3\.13(\.[0-9]+)?$$' | tail -n 1); \
	test -n "$$v" && echo "$$(pyenv prefix $$v)/bin"; })
SAM = env SAM_CLI_TELEMETRY=0 PATH="$(PY313_BIN):$$PATH" $(DEPLOY_BIN)/sam
# The functions of template.yaml that `sam build` builds with this Makefile (BuildMethod: makefile).
SAM_FUNCTIONS := AcquireFunction ProcessFunction AdvanceFunction ReleaseFunction SafetyNetFunction ArchiveFunction

.PHONY: deps test unit integration lint demo walkthrough bench soak asl clean
.PHONY: sam-build $(addprefix build-,$(SAM_FUNCTIONS))

# --- installation (idempotent; re-runs when the pinned requirement files change) ---
$(BIN)/.installed: pyproject.toml requirements-dev.txt layer/requirements.txt workflows/requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements-dev.txt -r workflows/requirements.txt -e .
	touch $@

node_modules/.installed: package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

deps: $(BIN)/.installed node_modules/.installed

$(DEPLOY_BIN)/.installed: requirements-deploy.txt
	$(PYTHON) -m venv $(DEPLOY_VENV)
	$(DEPLOY_BIN)/python -m pip install --quiet --upgrade pip
	$(DEPLOY_BIN)/python -m pip install --quiet -r requirements-deploy.txt
	touch $@

deps: $(DEPLOY_BIN)/.installed

# --- checks ---
lint: deps
	$(BIN)/ruff check $(SOURCES)
	$(BIN)/ruff format --check $(SOURCES)
	$(BIN)/mypy
	node_modules/.bin/asl-validator $$(printf -- '--json-path %s ' statemachines/*.asl.json)
	$(SAM) validate --lint --region us-east-1
	$(DEPLOY_BIN)/cfn-lint --append-rules cfn_lint_serverless.rules -- template.yaml
	$(MAKE) --no-print-directory sam-build

# Two pytest processes (pytest-xdist): most integration tests wait on stacks and CLI processes, so two fit on
# two cores. --dist loadscope keeps each module on one process, in order (module-scoped stacks, tests that
# build on the previous one).
test: lint
	$(BIN)/pytest -q -n 2 --dist loadscope

unit: deps
	$(BIN)/pytest -q tests/unit

integration: deps
	$(BIN)/pytest -q tests/integration

soak: deps
	LEANOPS_SOAK=1 $(BIN)/pytest -q tests/integration/test_protocol_stateful.py
	$(BIN)/python bench/million.py
	$(BIN)/python bench/chaos.py --minutes 20 --seed 7 --out bench/results/chaos.json
	$(BIN)/python bench/retention.py

bench: deps
	$(BIN)/python bench/protocol.py
	$(BIN)/python bench/workflow.py
	$(BIN)/python bench/cost.py
	$(BIN)/python bench/throughput.py
	$(BIN)/python bench/resume.py
	$(BIN)/python bench/cli.py
	$(BIN)/python bench/payments_store.py
	$(BIN)/python bench/payments_feed.py

# 1,000 scheduled topics for 10 minutes on the local stack (~20 min with start, drain and the checks; apart
# from `make bench` for its length): bench/results/fleet.json. bench/README.md says what it measures.
.PHONY: fleet
fleet: deps
	$(BIN)/python bench/fleet.py

# The sample pipeline, end to end and locally: generate telemetry, run the topic twice, show its status.
# The first command starts the project's local stack, which stays up (`leanops local down` stops it).
demo: deps
	$(BIN)/python -m examples.vehicle_telemetry.generate --records 10000 --per-object 2500 --clean
	$(BIN)/leanops run vehicle_telemetry
	$(BIN)/leanops run vehicle_telemetry
	$(BIN)/leanops status
	$(BIN)/leanops output vehicle_telemetry
	$(BIN)/leanops report runs --since 1d

# The protocol step by step: contention, a stalled holder taken over and fenced out.
walkthrough: deps
	$(BIN)/python examples/protocol_walkthrough.py

# Render workflows/ to statemachines/*.asl.json (commit the result; tests/workflows fail when it is stale).
asl: deps
	$(BIN)/python -m workflows

# `sam build` (cached, parallel: samconfig.toml), offline, into .aws-sam/build.
sam-build: deps
	@test -n "$(PY313_BIN)" || { echo "sam build needs python3.13 (the functions' runtime) on PATH" >&2; exit 1; }
	$(SAM) build
	@# Lambda's limit: a function and its layers at most 262,144,000 bytes unzipped (pyarrow is most of it).
	@bytes=$$(du -sbc .aws-sam/build/DependenciesLayer .aws-sam/build/ProcessFunction | tail -n 1 | cut -f 1); \
	echo "sam build: ProcessFunction + DependenciesLayer = $$((bytes / 1000000)) MB unzipped (limit 262 MB)"; \
	test "$$bytes" -le 262144000 || { echo "sam build: over Lambda's unzipped size limit" >&2; exit 1; }

# SAM runs these in a scratch copy of functions/ (the CodeUri) with ARTIFACTS_DIR set: each function's package
# is that code plus the topics file and its processors' packages (leanopsctl.deploy.bundle, docs/design.md §4); the
# topics' settings are pushed apart (`leanops topics push`). LEANOPS_TOPICS=/abs/path.yaml packages another file.
BUNDLE_PYTHON = PYTHONPATH=.:$(ROOT)/control $(firstword $(wildcard $(ROOT)/$(BIN)/python) python3)
BUNDLE_TOPICS = $(or $(LEANOPS_TOPICS),$(ROOT)/topics.yaml)
$(addprefix build-,$(SAM_FUNCTIONS)):
	$(BUNDLE_PYTHON) -m leanopsctl.deploy.bundle --code . --topics "$(BUNDLE_TOPICS)" --out "$(ARTIFACTS_DIR)"

clean:
	-test -x $(BIN)/leanops && $(BIN)/leanops local down
	rm -rf $(VENV) node_modules .leanops .pytest_cache .mypy_cache .ruff_cache .hypothesis
	rm -rf .aws-sam
