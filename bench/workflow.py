"""Benchmark of one topic run through the real state machine: transitions, invocations, DynamoDB requests.

Runs ``statemachines/topic_run.asl.json`` with the real handlers in-process
(:class:`~leanopsctl.local.runtime.LocalRuntime`: moto's ASL interpreter, DynamoDB Local) and measures what a
run costs in the units that AWS bills (design §7): Step Functions state transitions, Lambda invocations and
DynamoDB requests — for the steady state (a topic that has committed before, one new batch of data), and
for an up-to-date run, a run that finds the topic locked, a first run and a run of several batches. It also
times each task and each local run.

Run it from the repository root (``make bench`` does exactly this, after ``bench/protocol.py``)::

    python bench/workflow.py            # full run, writes bench/results/workflow.json
    python bench/workflow.py --quick    # smoke run, writes bench/results/workflow.quick.json

It starts its own in-memory DynamoDB Local and stops it on the way out; dummy AWS credentials keep every
request away from AWS. Data, sink, topics file and handler logs live in a private temporary directory. The
results file path is printed on stdout, a short summary on stderr.
"""

from __future__ import annotations

import importlib
import json
import random
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from types import ModuleType
from typing import Any

import boto3
import botocore
import botocore.handlers
import moto
import yaml
from common import (
    REPO_ROOT,
    BenchError,
    Stopwatch,
    dynamodb_local,
    parse_quick_args,
    run_and_report,
    use_dummy_aws_env,
)
from leanopsctl.executions import EXECUTION_NAME_PREFIX
from leanopsctl.local.dynamodb_local import local_client
from leanopsctl.local.runtime import ExecutionResult, LocalRuntime

from leanops.config import DEFAULT_BATCH_SIZE, DEFAULT_LEASE_SECONDS
from leanops.constants import ENV_CONFIG
from leanops.protocol import Acquired, Protocol, Release, TopicRef
from leanops.protocol.dynamodb import OUTPUT_SK_PREFIX, RUN_SK_PREFIX, DynamoDBStore, _cached_client
from leanops.protocol.table import PARTITION_KEY, SORT_KEY, create_table

TEMPLATE = REPO_ROOT / "template.yaml"

TABLE_NAME = "leanops-bench-workflow"
MACHINE = "TopicRunStateMachine"
TOPIC = "vehicle_telemetry"
PROCESSOR = "examples.vehicle_telemetry.processor:process"
BATCH_SIZE = DEFAULT_BATCH_SIZE
LEASE_SECONDS = DEFAULT_LEASE_SECONDS
RUN_TIMEOUT_SECONDS = 120.0
#: The issue's budget for the DynamoDB requests of a steady one-batch run.
DYNAMODB_REQUEST_BUDGET = 5
#: The states a one-batch run enters, in order.
ONE_BATCH_PATH = ["Acquire", "Acquired?", "ProcessBatch", "AdvanceCheckpoint", "MoreBacklog?", "Done"]

#: Step Functions Standard, USD per million state transitions; Lambda, USD per million requests (design §7).
USD_PER_MILLION_TRANSITIONS = 25.0
USD_PER_MILLION_LAMBDA_REQUESTS = 0.20

#: Removed too, besides the credential variables: an endpoint for every service.
ALSO_UNSET_AWS_ENV = ("AWS_ENDPOINT_URL",)


@dataclass(frozen=True)
class Settings:
    """How many runs of each kind."""

    #: Steady one-batch runs before the measured ones (DynamoDB Local's JIT, Python's caches); not reported.
    warmup_runs: int
    #: Measured steady one-batch runs: counts must agree, timings are summarised over them.
    runs: int
    #: Runs of each other scenario (up to date, skipped, N batches); counts must agree between them.
    repeats: int
    #: N of the N-batch run (transitions_per_extra_batch), at least 3.
    batches_run: int
    quick: bool


FULL = Settings(warmup_runs=3, runs=25, repeats=3, batches_run=5, quick=False)
QUICK = Settings(warmup_runs=0, runs=3, repeats=1, batches_run=3, quick=True)


# ------------------------------------------------------------------------------------------------------------
# Counting every DynamoDB request, whoever's client makes it
# ------------------------------------------------------------------------------------------------------------

#: The Lambda function whose handler runs on this thread (set around each in-process invocation).
_invocation = threading.local()
#: The thread :class:`~leanops.heartbeat.Heartbeat` renews leases on.
HEARTBEAT_THREAD = "leanops-heartbeat"


@dataclass
class Request:
    """One DynamoDB API call, as the meter saw it."""

    operation: str
    #: Items touched, by sort key (``run#...`` folded into ``run``), or ``execution`` for a name claim.
    items: list[str]
    #: The Lambda function making the call; ``<function>/heartbeat`` from a heartbeat thread;
    #: ``local-runtime`` for the runtime itself; ``other`` for anything else.
    caller: str
    error_code: str | None = None


@dataclass
class Measurement:
    """Every DynamoDB call made while one run was measured."""

    requests: list[Request] = field(default_factory=list)
    #: HTTP attempts of every DynamoDB call (the runtime's included): above the request count when botocore
    #: retried a call.
    http_attempts: int = 0


def item_names(params: dict[str, Any]) -> list[str]:
    """Short names of the items a request touches (its sort keys), from its API parameters."""
    if "TransactItems" in params:
        bodies = [body for entry in params["TransactItems"] for body in entry.values()]
    else:
        bodies = [params]
    names = []
    for body in bodies:
        key = body.get("Key") or body.get("Item") or {}
        partition = str(key.get(PARTITION_KEY, {}).get("S", ""))
        sort = str(key.get(SORT_KEY, {}).get("S", ""))
        if partition.startswith(EXECUTION_NAME_PREFIX):
            names.append("execution")
        elif sort.startswith(RUN_SK_PREFIX):
            names.append("run")
        elif sort.startswith(OUTPUT_SK_PREFIX) or "KeyConditionExpression" in body:
            names.append("output#")  # a commit's output item, or the Query of recent ones (late objects)
        else:
            names.append(sort or "?")
    return names


class Meter:
    """Counts the DynamoDB calls of every botocore client created after :meth:`install`.

    The handlers build their client through ``leanops.protocol.dynamodb.default_client()`` (cached per
    endpoint) on the default boto3 session, which ``mock_aws`` replaces; any client is reached by adding the
    hooks to ``botocore.handlers.BUILTIN_HANDLERS``, which every new botocore session registers. The cache is
    cleared so that no client made before the hooks exists; the default session, if any, gets them too.

    - ``before-parameter-build.dynamodb`` keeps the API parameters (which items the call touches);
    - ``before-call.dynamodb`` counts one API call (botocore retries below it, so a retried call counts
      once), with the function whose handler made it (a thread-local set around each invocation);
    - ``before-send.dynamodb`` counts HTTP attempts, retries included;
    - ``after-call.dynamodb`` notes the error code of a failed call.
    """

    _CONTEXT_KEY = "leanops_bench_workflow"

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._current: Measurement | None = None
        self._hooks = (
            ("before-parameter-build.dynamodb", self._before_parameter_build),
            ("before-call.dynamodb", self._before_call),
            ("before-send.dynamodb", self._before_send),
            ("after-call.dynamodb", self._after_call),
        )

    def install(self) -> None:
        for spec in self._hooks:
            botocore.handlers.BUILTIN_HANDLERS.append(spec)
        if boto3.DEFAULT_SESSION is not None:
            for event, handler in self._hooks:
                boto3.DEFAULT_SESSION._session.register(
                    event, handler, unique_id=f"{self._CONTEXT_KEY}-{event}"
                )
        _cached_client.cache_clear()

    def uninstall(self) -> None:
        for spec in self._hooks:
            with suppress(ValueError):
                botocore.handlers.BUILTIN_HANDLERS.remove(spec)

    @contextmanager
    def measuring(self) -> Iterator[Measurement]:
        """Record every call made inside the block, on any thread."""
        with self._lock:
            self._current = Measurement()
            seen = self._current
        try:
            yield seen
        finally:
            with self._lock:
                self._current = None

    def _before_parameter_build(self, params: dict[str, Any], context: dict[str, Any], **_: Any) -> None:
        context[self._CONTEXT_KEY] = {"items": item_names(params)}

    def _before_call(self, model: Any, context: dict[str, Any], **_: Any) -> None:
        state = context.get(self._CONTEXT_KEY)
        with self._lock:
            if self._current is None or state is None:
                return
            items = state["items"]
            function = getattr(_invocation, "function", None)
            thread = threading.current_thread().name
            if "execution" in items:
                caller = "local-runtime"
            elif thread.startswith(HEARTBEAT_THREAD):
                caller = "ProcessFunction/heartbeat"
            else:
                caller = function or "other"
            request = Request(model.name, items, caller)
            state["request"] = request
            self._current.requests.append(request)

    def _before_send(self, **_: Any) -> None:
        with self._lock:
            if self._current is not None:
                self._current.http_attempts += 1

    def _after_call(
        self, http_response: Any, parsed: dict[str, Any], context: dict[str, Any], **_: Any
    ) -> None:
        state = context.get(self._CONTEXT_KEY) or {}
        request = state.get("request")
        if request is not None and http_response.status_code >= 300:
            request.error_code = parsed.get("Error", {}).get("Code")


class MeteredRuntime(LocalRuntime):
    """The local runtime, noting on the invoking thread which function runs, so calls can be attributed."""

    def _dispatch(self, logical_id: str, payload: Any) -> Any:
        previous = getattr(_invocation, "function", None)
        _invocation.function = logical_id
        try:
            return super()._dispatch(logical_id, payload)
        finally:
            _invocation.function = previous


# ------------------------------------------------------------------------------------------------------------
# The topic: generated telemetry, one new object per run
# ------------------------------------------------------------------------------------------------------------


def import_generator() -> ModuleType:
    """``examples.vehicle_telemetry.generate`` (the repository root is not on ``sys.path`` for a script)."""
    if str(REPO_ROOT) not in sys.path:
        sys.path.insert(0, str(REPO_ROOT))
    return importlib.import_module("examples.vehicle_telemetry.generate")


class Topic:
    """The benchmark's topic in a private directory: source data, sink, topics file."""

    def __init__(self, root: Path, generator: ModuleType) -> None:
        self.root = root
        self.data = root / "data"
        self.sink = root / "out"
        self.config = root / "topics.yaml"
        self.generator = generator
        self.objects = 0
        self.records = 0
        topic = {
            "source": {"type": "files", "uri": str(self.data)},
            "sink": {"type": "files", "uri": str(self.sink)},
            "processor": PROCESSOR,
            "batch_size": BATCH_SIZE,
            "lease_seconds": LEASE_SECONDS,
        }
        self.config.write_text(yaml.safe_dump({"topics": {TOPIC: topic}}))

    def first_data(self, records: int) -> None:
        """The initial backlog, by the sample generator (objects of ``BATCH_SIZE`` records)."""
        summary = self.generator.generate(self.data, records, BATCH_SIZE, malformed=0.0)
        self.objects, self.records = summary.objects, records

    def add_object(self, records: int = BATCH_SIZE) -> Path:
        """One new object after every existing one (same naming as the generator: keys sort in order)."""
        first = self.records
        hour = (self.generator.START_TS + first) // 3600 % 24
        path = self.data / f"date=2025-11-25/hour={hour:02d}/part-{self.objects:05d}.jsonl"
        rng = random.Random(self.objects)
        lines = "".join(self.generator.reading_line(index, rng) for index in range(first, first + records))
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(lines)
        self.objects, self.records = self.objects + 1, first + records
        keys = sorted(str(p.relative_to(self.data)) for p in self.data.rglob("*.jsonl"))
        if keys[-1] != str(path.relative_to(self.data)):
            raise BenchError(f"new object {path} does not sort after the existing ones")
        return path


# ------------------------------------------------------------------------------------------------------------
# One run, and what it cost
# ------------------------------------------------------------------------------------------------------------


@dataclass
class RunRecord:
    """What one execution did and cost."""

    name: str
    outcome: str
    batches: int
    records: int
    states: list[str]
    transitions: int
    invocations: dict[str, int]
    dynamodb_requests: int
    dynamodb_operations: dict[str, int]
    dynamodb_by_caller: dict[str, int]
    dynamodb_by_item: dict[str, int]
    dynamodb_error_codes: list[str]
    heartbeat_requests: int
    local_runtime_requests: int
    http_attempts: int
    wall_seconds: float
    execution_seconds: float
    task_seconds: list[tuple[str, float]]

    def counts(self) -> tuple[Any, ...]:
        """What must be identical between runs of the same scenario."""
        return (
            self.outcome,
            self.batches,
            tuple(self.states),
            tuple(sorted(self.invocations.items())),
            tuple(sorted(self.dynamodb_operations.items())),
            tuple(sorted(self.dynamodb_by_caller.items())),
            self.local_runtime_requests,
        )


def task_durations(history: list[dict[str, Any]]) -> list[tuple[str, float]]:
    """(state name, seconds) of each Task state, from ``TaskStateEntered`` to ``TaskStateExited``."""
    entered: dict[str, datetime] = {}
    durations = []
    for event in history:
        if event["type"] == "TaskStateEntered":
            entered[event["stateEnteredEventDetails"]["name"]] = event["timestamp"]
        elif event["type"] == "TaskStateExited":
            name = event["stateExitedEventDetails"]["name"]
            if name in entered:
                durations.append((name, (event["timestamp"] - entered.pop(name)).total_seconds()))
    return durations


def execution_seconds(history: list[dict[str, Any]]) -> float:
    """From the first history event to the last (the interpreter's time, without the runtime's polling)."""
    return (history[-1]["timestamp"] - history[0]["timestamp"]).total_seconds()


def check_no_retries(result: ExecutionResult, invocations: dict[str, int]) -> None:
    """One invocation per Task state entered, and no failure in the history: a run without retries."""
    failures = [
        event["type"] for event in result.history if "Failed" in event["type"] or "TimedOut" in event["type"]
    ]
    tasks = sum(1 for event in result.history if event["type"] == "TaskStateEntered")
    if failures or sum(invocations.values()) != tasks:
        raise BenchError(
            f"execution {result.execution_arn} had failures or retries ({failures}; "
            f"{sum(invocations.values())} invocations for {tasks} tasks): not a run without retries"
        )


class Runner:
    """Starts executions of the topic and measures each one."""

    def __init__(self, runtime: LocalRuntime, meter: Meter) -> None:
        self.runtime = runtime
        self.meter = meter
        self.functions = sorted(runtime.template.functions)

    def run(self, scenario: str, outcome: str, batches: int) -> RunRecord:
        """One execution; it must succeed with ``outcome`` after ``batches`` batches and no retry."""
        name = f"bench-{scenario}-{uuid.uuid4().hex[:12]}"
        before = {function: self.runtime.invocations(function) for function in self.functions}
        with self.meter.measuring() as seen:
            started = time.perf_counter()
            result = self.runtime.run(MACHINE, {"topic": TOPIC}, name, timeout=RUN_TIMEOUT_SECONDS)
            wall = time.perf_counter() - started
        invocations = {
            function: self.runtime.invocations(function) - before[function] for function in self.functions
        }
        if not result.succeeded:
            raise BenchError(
                f"{scenario}: execution {name} ended {result.status}: {result.error}: {result.cause}"
            )
        output = result.output or {}
        if (output.get("outcome"), output.get("batches")) != (outcome, batches):
            raise BenchError(
                f"{scenario}: expected outcome {outcome!r} after {batches} batches, got "
                f"{output.get('outcome')!r} after {output.get('batches')}"
            )
        check_no_retries(result, invocations)
        handlers = [request for request in seen.requests if request.caller != "local-runtime"]
        if not any("run" in request.items for request in handlers):
            raise BenchError("the meter did not see the run-key claim: it does not see the handlers' clients")
        return RunRecord(
            name=name,
            outcome=output["outcome"],
            batches=int(output["batches"]),
            records=int(output.get("records", 0)),
            states=[
                event["stateEnteredEventDetails"]["name"]
                for event in result.history
                if str(event["type"]).endswith("StateEntered")
            ],
            transitions=result.states_entered,
            invocations=invocations,
            dynamodb_requests=len(handlers),
            dynamodb_operations=dict(sorted(Counter(request.operation for request in handlers).items())),
            dynamodb_by_caller=dict(sorted(Counter(request.caller for request in handlers).items())),
            dynamodb_by_item=dict(sorted(Counter("+".join(request.items) for request in handlers).items())),
            dynamodb_error_codes=[request.error_code for request in handlers if request.error_code],
            heartbeat_requests=sum(1 for request in handlers if request.caller.endswith("/heartbeat")),
            local_runtime_requests=len(seen.requests) - len(handlers),
            http_attempts=seen.http_attempts,
            wall_seconds=wall,
            execution_seconds=execution_seconds(result.history),
            task_seconds=task_durations(result.history),
        )


def summarise(name: str, records: list[RunRecord], *, allow_heartbeats: bool = False) -> dict[str, Any]:
    """The counts of a scenario's runs, which must agree (heartbeat renewals aside, when allowed)."""
    counted = {record.counts() for record in records if not (allow_heartbeats and record.heartbeat_requests)}
    if len(counted) > 1:
        raise BenchError(f"scenario {name} counted differently between runs: {sorted(counted)}")
    first = next(
        (record for record in records if not (allow_heartbeats and record.heartbeat_requests)), records[0]
    )
    return {
        "runs": len(records),
        "outcome": first.outcome,
        "batches": first.batches,
        "records": first.records,
        "states": first.states,
        "transitions": first.transitions,
        "lambda_invocations": sum(first.invocations.values()),
        "lambda_invocations_by_function": first.invocations,
        "dynamodb_requests": first.dynamodb_requests,
        "dynamodb_requests_max": max(record.dynamodb_requests for record in records),
        "dynamodb_requests_by_operation": first.dynamodb_operations,
        "dynamodb_requests_by_caller": first.dynamodb_by_caller,
        "dynamodb_requests_by_item": first.dynamodb_by_item,
        "dynamodb_error_codes": first.dynamodb_error_codes,
        "heartbeat_requests_total": sum(record.heartbeat_requests for record in records),
        "local_runtime_requests": first.local_runtime_requests,
        "http_attempts_max": max(record.http_attempts for record in records),
        "wall_seconds": [round(record.wall_seconds, 4) for record in records],
        "execution_seconds": [round(record.execution_seconds, 4) for record in records],
    }


# ------------------------------------------------------------------------------------------------------------
# Scenarios
# ------------------------------------------------------------------------------------------------------------


def hold_lock_elsewhere(protocol: Protocol) -> Acquired:
    """Take the topic's lock as another execution (outside any measurement)."""
    got = protocol.acquire(
        TopicRef(TOPIC), f"arn:aws:states:us-east-1:123456789012:execution:other:{uuid.uuid4().hex}", 60
    )
    if not isinstance(got, Acquired):
        raise BenchError(f"expected to take the free lock of {TOPIC} as another owner, got {got!r}")
    return got


def run_scenarios(runner: Runner, topic: Topic, protocol: Protocol, settings: Settings) -> dict[str, Any]:
    """Every scenario, in an order that leaves the topic as the next one needs it."""
    # The first run ever: no checkpoint yet (it also imports the handlers: a cold start, not timed).
    topic.first_data(BATCH_SIZE)
    first = [runner.run("first", "processed", 1)]
    for _ in range(settings.warmup_runs):
        topic.add_object()
        runner.run("warmup", "processed", 1)
    steady = []
    for _ in range(settings.runs):
        topic.add_object()
        steady.append(runner.run("steady", "processed", 1))
    up_to_date = [runner.run("up-to-date", "up_to_date", 0) for _ in range(settings.repeats)]
    skipped = []
    for _ in range(settings.repeats):
        holder = hold_lock_elsewhere(protocol)
        skipped.append(runner.run("skipped", "skipped_locked", 0))
        status = protocol.status(TopicRef(TOPIC))
        if status.lock is None or status.lock.owner != holder.lease.owner:
            raise BenchError("the skipped run changed the lock that another execution holds")
        if protocol.release(holder.lease) is not Release.RELEASED:
            raise BenchError("could not release the other execution's lock")
    multi = []
    for _ in range(settings.repeats):
        for _ in range(settings.batches_run):
            topic.add_object()
        multi.append(runner.run(f"{settings.batches_run}-batches", "processed", settings.batches_run))
    return {
        "first": first,
        "steady": steady,
        "up_to_date": up_to_date,
        "skipped": skipped,
        f"batches_{settings.batches_run}": multi,
    }


# ------------------------------------------------------------------------------------------------------------
# Results
# ------------------------------------------------------------------------------------------------------------


def spread(values: list[float]) -> dict[str, float]:
    """Median, p90 (inclusive quantiles), min and max, rounded to 0.1 ms."""
    p90 = statistics.quantiles(values, n=10, method="inclusive")[-1] if len(values) > 1 else values[0]
    return {
        "median": round(statistics.median(values), 4),
        "p90": round(p90, 4),
        "min": round(min(values), 4),
        "max": round(max(values), 4),
        "samples": len(values),
    }


def task_seconds(records: list[RunRecord]) -> dict[str, dict[str, float]]:
    """Each task state's duration over the runs."""
    by_task: dict[str, list[float]] = {}
    for record in records:
        for name, seconds in record.task_seconds:
            by_task.setdefault(name, []).append(seconds)
    return {name: spread(values) for name, values in sorted(by_task.items())}


def headline(runs: dict[str, list[RunRecord]], settings: Settings) -> dict[str, Any]:
    """The top-level numbers, from the scenarios' runs."""
    steady_runs = runs["steady"]
    scenarios = {
        "first_run": summarise("first_run", runs["first"]),
        "steady_run": summarise("steady_run", steady_runs, allow_heartbeats=True),
        "up_to_date_run": summarise("up_to_date_run", runs["up_to_date"]),
        "skipped_run": summarise("skipped_run", runs["skipped"]),
    }
    n = settings.batches_run
    scenarios[f"steady_run_{n}_batches"] = summarise(f"steady_run_{n}_batches", runs[f"batches_{n}"])
    steady, multi = scenarios["steady_run"], scenarios[f"steady_run_{n}_batches"]
    if steady["states"] != ONE_BATCH_PATH:
        raise BenchError(f"a one-batch run went through {steady['states']}, expected {ONE_BATCH_PATH}")
    wall = spread([record.wall_seconds for record in steady_runs])
    tasks = task_seconds(steady_runs)
    requests = steady["dynamodb_requests_max"]
    return {
        "transitions_per_run": steady["transitions"],
        "lambda_invocations_per_run": steady["lambda_invocations"],
        "lambda_invocations_per_run_by_function": steady["lambda_invocations_by_function"],
        "dynamodb_requests_per_run": requests,
        "dynamodb_requests_per_run_by_operation": steady["dynamodb_requests_by_operation"],
        "dynamodb_requests_per_run_by_function": steady["dynamodb_requests_by_caller"],
        "dynamodb_requests_per_run_by_item": steady["dynamodb_requests_by_item"],
        "dynamodb_request_budget": DYNAMODB_REQUEST_BUDGET,
        "dynamodb_requests_within_budget": requests <= DYNAMODB_REQUEST_BUDGET,
        "local_runtime_requests_per_run": steady["local_runtime_requests"],
        "heartbeat_renewals_total": sum(
            summary["heartbeat_requests_total"] for summary in scenarios.values()
        ),
        "task_seconds": {name: values["median"] for name, values in tasks.items()},
        "task_seconds_detail": tasks,
        "transitions_per_extra_batch": (multi["transitions"] - steady["transitions"]) / (n - 1),
        "lambda_invocations_per_extra_batch": (multi["lambda_invocations"] - steady["lambda_invocations"])
        / (n - 1),
        "dynamodb_requests_per_extra_batch": (multi["dynamodb_requests"] - steady["dynamodb_requests"])
        / (n - 1),
        "local_run_seconds_median": wall["median"],
        "local_run_seconds_p90": wall["p90"],
        "local_run_seconds_min": wall["min"],
        "local_run_seconds_max": wall["max"],
        "local_runs_timed": wall["samples"],
        "execution_seconds_from_history": spread([record.execution_seconds for record in steady_runs]),
        "transitions_first_run": scenarios["first_run"]["transitions"],
        "dynamodb_requests_first_run": scenarios["first_run"]["dynamodb_requests"],
        "transitions_up_to_date_run": scenarios["up_to_date_run"]["transitions"],
        "dynamodb_requests_up_to_date_run": scenarios["up_to_date_run"]["dynamodb_requests"],
        "lambda_invocations_up_to_date_run": scenarios["up_to_date_run"]["lambda_invocations"],
        "transitions_skipped_run": scenarios["skipped_run"]["transitions"],
        "dynamodb_requests_skipped_run": scenarios["skipped_run"]["dynamodb_requests"],
        "lambda_invocations_skipped_run": scenarios["skipped_run"]["lambda_invocations"],
        "usd_per_million_runs_transitions_only": round(
            steady["transitions"] * USD_PER_MILLION_TRANSITIONS, 4
        ),
        "usd_per_million_runs_lambda_requests_only": round(
            steady["lambda_invocations"] * USD_PER_MILLION_LAMBDA_REQUESTS, 4
        ),
        "scenarios": scenarios,
    }


def function_log_levels(path: Path) -> dict[str, int]:
    """How many handler log records of each level (Powertools JSON lines) the function log holds."""
    levels: Counter[str] = Counter()
    for line in path.read_text(errors="replace").splitlines():
        with suppress(ValueError):
            record = json.loads(line)
            if isinstance(record, dict) and "level" in record:
                levels[str(record["level"])] += 1
    return dict(sorted(levels.items()))


NOTES = [
    "Every run executes the real statemachines/topic_run.asl.json with the real handlers, in-process "
    "(leanopsctl.local.runtime.LocalRuntime: moto's ASL interpreter, Lambda dispatched in-process, DynamoDB "
    "Local in memory). The topic uses the sample processor and the default batch_size and lease_seconds.",
    "Steady state (the headline): the topic has committed before, and exactly one new object of batch_size "
    "records was added before the run, so the run processes one batch (more=False, the source peeks past "
    "the last record) and its commit releases the lock. Each run has a unique execution name, so its "
    "run-key claim (manual:<name>) is new. Runs must succeed with the expected outcome, one invocation per "
    "Task state and no failure event in the history (no retries); their counts must be identical.",
    "transitions = *StateEntered events in the execution history: what a Standard workflow is billed for "
    "(usd_per_million_runs_transitions_only = transitions x $25 per million, design §7). AWS bills the same "
    "state transitions; retries would add to them.",
    "lambda_invocations come from LocalRuntime.invocations() before and after each run, per function.",
    "dynamodb_requests count every DynamoDB API call any handler makes (run-key claim, acquire, checkpoint "
    "read, heartbeat renewals, commit, release) with a before-call.dynamodb hook added to "
    "botocore.handlers.BUILTIN_HANDLERS before any client exists (and leanops.protocol.dynamodb's client "
    "cache cleared), so every botocore session, including the ones mock_aws makes, carries it. botocore "
    "retries below that event, so a retried call counts once (http_attempts_max counts HTTP attempts, the "
    "runtime's included). Calls are attributed to the function whose handler runs on the calling thread; a "
    "heartbeat renewal runs on its own thread and shows as ProcessFunction/heartbeat.",
    "local_runtime_requests_per_run: the local runtime's own claim of the execution name (a conditional "
    "PutItem on pk execution#<machine>), which Step Functions does itself on AWS; it is not in "
    "dynamodb_requests.",
    "Heartbeats renew the lease every lease_seconds / 3 (40 s with the default 120 s lease) while "
    "ProcessBatch runs; a local one-batch task takes well under a second, so none is expected "
    "(heartbeat_renewals_total). A run that did renew would be left out of the consistency check and "
    "dynamodb_requests_per_run would be the largest count seen.",
    "task_seconds: median time from TaskStateEntered to TaskStateExited per Task state over the measured "
    "one-batch runs (history timestamps have millisecond resolution); task_seconds_detail adds p90, min "
    "and max. ReleaseAfterFailure only runs after a failure, so successful runs have none.",
    "local_run_seconds_*: wall clock of LocalRuntime.run (claim the name, start, wait) over the measured "
    "one-batch runs, after warm-up runs that are not reported. LocalRuntime.wait polls every 50 ms, so "
    "these are rounded up by up to 50 ms; execution_seconds_from_history (first to last history event) "
    "leaves the polling out. DynamoDB Local, moto and in-process Lambda are not AWS: counts transfer, "
    "durations do not.",
    "transitions_per_extra_batch = (transitions of an N-batch run - transitions of a one-batch run) / "
    "(N - 1): each extra batch is ProcessBatch, AdvanceCheckpoint and MoreBacklog?. The same for "
    "lambda_invocations and dynamodb_requests (a commit that keeps the lock and renews the lease).",
    "function_log_levels: handler log records by level over all runs (a WARNING would show e.g. a failed "
    "lease renewal).",
    "skipped run: another owner holds the lock (taken with the protocol outside the measurement); the "
    "run's acquire fails its condition and the execution ends with outcome skipped_locked. The first run "
    "of the topic (no checkpoint yet, no copy on the lock item) reads the checkpoint item once more.",
]


def print_summary(results: dict[str, Any]) -> None:
    """A few lines for a human, on stderr."""
    tasks = ", ".join(f"{name} {seconds * 1000:.0f} ms" for name, seconds in results["task_seconds"].items())
    operations = ", ".join(
        f"{op} {count}" for op, count in results["dynamodb_requests_per_run_by_operation"].items()
    )
    lines = [
        f"one-batch run: {results['transitions_per_run']} transitions "
        f"(${results['usd_per_million_runs_transitions_only']:g} per million runs), "
        f"{results['lambda_invocations_per_run']} Lambda invocations, "
        f"{results['dynamodb_requests_per_run']} DynamoDB requests ({operations}; budget "
        f"{results['dynamodb_request_budget']}) + {results['local_runtime_requests_per_run']} by the local "
        "runtime",
        f"per extra batch: {results['transitions_per_extra_batch']:g} transitions, "
        f"{results['lambda_invocations_per_extra_batch']:g} invocations, "
        f"{results['dynamodb_requests_per_extra_batch']:g} DynamoDB requests",
        f"up to date: {results['transitions_up_to_date_run']} transitions, "
        f"{results['dynamodb_requests_up_to_date_run']} requests; skipped (locked): "
        f"{results['transitions_skipped_run']} transitions, "
        f"{results['dynamodb_requests_skipped_run']} requests",
        f"local run: median {results['local_run_seconds_median']:.3f} s, "
        f"p90 {results['local_run_seconds_p90']:.3f} s "
        f"over {results['local_runs_timed']} runs; tasks (median): {tasks}",
        f"heartbeat renewals: {results['heartbeat_renewals_total']}",
    ]
    print("\n".join(lines), file=sys.stderr)


# ------------------------------------------------------------------------------------------------------------
# Main
# ------------------------------------------------------------------------------------------------------------


def benchmark(settings: Settings) -> dict[str, Any]:
    """Start DynamoDB Local, run every scenario through the local runtime, stop it; return the results."""
    stopwatch = Stopwatch.start()
    generator = import_generator()
    meter = Meter()
    meter.install()  # before any client exists
    try:
        with (
            dynamodb_local() as (endpoint, version),
            tempfile.TemporaryDirectory(prefix="leanops-bench-workflow-") as directory,
        ):
            root = Path(directory)
            client = local_client(endpoint)
            create_table(client, TABLE_NAME)
            topic = Topic(root, generator)
            protocol = Protocol(DynamoDBStore(TABLE_NAME, client))
            runtime = MeteredRuntime(
                TEMPLATE,
                table_name=TABLE_NAME,
                log_to=root / "functions.log",
                environment={ENV_CONFIG: str(topic.config)},
            )
            with runtime:
                runs = run_scenarios(Runner(runtime, meter), topic, protocol, settings)
            log_levels = function_log_levels(root / "functions.log")
    finally:
        meter.uninstall()
    return headline(runs, settings) | {
        "dynamodb_local_version": version,
        "function_log_levels": log_levels,
        "topic": {
            "batch_size": BATCH_SIZE,
            "lease_seconds": LEASE_SECONDS,
            "heartbeat_interval_seconds": LEASE_SECONDS / 3,
            "processor": PROCESSOR,
            "source_objects_at_end": topic.objects,
            "source_records_at_end": topic.records,
        },
        **stopwatch.record(settings, NOTES, moto=moto.__version__),
    }


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; print the results path on stdout. Exit 1 when it could not run."""
    quick_help = "a short smoke run (3 one-batch runs)"
    args = parse_quick_args(argv, __doc__, "workflow", quick_help)
    use_dummy_aws_env(*ALSO_UNSET_AWS_ENV)
    settings = QUICK if args.quick else FULL
    return run_and_report("bench/workflow.py", args.output, lambda: benchmark(settings), print_summary)


if __name__ == "__main__":
    sys.exit(main())
