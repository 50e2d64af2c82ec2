"""The cost model: dollars per run, per million runs and per month, from measured counts (design §7).

Nothing here is typed in but numbers derived by rule or measured by a test (below). What a run *uses*
comes from the benchmarks' results, the SAM template and the handlers' code:

- ``bench/results/workflow.json`` (``bench/workflow.py``): state transitions (the states a run enters),
  Lambda invocations by function, the median duration of each Task state and of the whole execution, for a
  one-batch run and per extra batch;
- ``bench/results/protocol.json`` (``bench/protocol.py``): DynamoDB write and read request units of the
  run's protocol calls, per run and per extra batch, and of the run-key claim;
- ``template.yaml``: each function's ``MemorySize`` and ``Architectures``, and the state machine's
  definition (which Task state invokes which function; its size sets the Express memory); the state
  machine's log level by workflow type and its tracing, the schedules, and the alarms (per topic and per
  deployment, by workflow type);
- the handlers, run on moto's S3 by ``tests/unit/test_cost.py``, which checks the constants below against
  what it counts: S3 requests by kind of a topic whose source and sink are ``s3://``
  (:data:`S3_REQUESTS_PER_RUN`), the log lines the handlers print (:data:`FUNCTION_LOG_BYTES_PER_RUN`) and
  the custom metrics they emit (:data:`METRICS_PER_TOPIC`).

What a unit *costs* comes from :data:`leanopsctl.prices.PRICES`, the one price table. Numbers derived by
rule rather than measured: the output item every commit puts (:data:`OUTPUT_ITEM_WRITE_UNITS`), as long as
the protocol benchmark commits without one, the late-object look-back's read
(:data:`LATE_LOOKBACK_READ_UNITS`), the lines Lambda logs per invocation
(:func:`lambda_platform_log_lines`) and the execution history events Step Functions logs
(:func:`execution_log_records`), whose formats AWS documents.

Components are billed per run (Step Functions, Lambda, DynamoDB, S3, Scheduler, logs, X-Ray) or per month
(custom metrics per topic, alarms per topic and per deployment): the monthly ones are spread over the
scenario's runs, so their price per run depends on how often runs happen.

Examples
--------
>>> usage = load_usage("bench/results", "template.yaml")
>>> report = estimate(usage, Scenario("express", runs_per_day=1440, topics=1000))
>>> report["total"]["usd_per_month"]  # doctest: +SKIP
>>> report["dominant"]["component"]  # doctest: +SKIP
"""

from __future__ import annotations

import json
import math
import re
import statistics
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from leanops.errors import ConfigError, InvalidInput
from leanopsctl.local.template import FUNCTION_TYPES, load_yaml, read_template
from leanopsctl.prices import PRICES

#: Where ``make bench`` writes its results, relative to the project folder.
DEFAULT_RESULTS_DIR: Final = Path("bench") / "results"
WORKFLOW_RESULTS: Final = "workflow.json"
PROTOCOL_RESULTS: Final = "protocol.json"
DEFAULT_TEMPLATE: Final = Path("template.yaml")
#: The state machine a run executes (its logical id in the template).
STATE_MACHINE: Final = "TopicRunStateMachine"

STANDARD: Final = "standard"
EXPRESS: Final = "express"
WORKFLOW_TYPES: Final = (STANDARD, EXPRESS)
ARCHITECTURES: Final = ("arm64", "x86_64")
#: Lambda's default architecture when neither the function nor ``Globals.Function`` sets one.
DEFAULT_ARCHITECTURE: Final = "x86_64"

#: Write units of the output (manifest) item that each commit puts in its transaction (docs/decisions/0001,
#: amendment): a transactional write costs 2 units per started KB and the item stays under 1 KB (object
#: keys, positions, counts, the owner ARN). bench/protocol.py commits without outputs, so they are added to
#: its units, once per commit: one per one-batch run and one per extra batch.
OUTPUT_ITEM_WRITE_UNITS: Final = 2.0
#: Write units of the run record every run puts in its releasing commit's transaction (docs/decisions/0014):
#: an item under 1 KB, written transactionally. bench/protocol.py commits without one: added once per run.
RUN_RECORD_WRITE_UNITS: Final = 2.0
#: The late-object look-back (files sources, docs/decisions/0005): one strongly consistent Query per run for
#: the topic's last ``late_lookback_batches`` (default 20) output items. Each is under 1 KB when a batch opens
#: a few objects, so the Query reads at most 20 KB: 5 units of 4 KB. Priced at that bound, per run.
LATE_LOOKBACK_REQUESTS: Final = 1
LATE_LOOKBACK_READ_UNITS: Final = 5.0
#: Acquire reads the topic's pushed settings (decision 0013): one strongly consistent GetItem of an item
#: under 4 KB per run, which bench/protocol.py (the protocol alone) does not make.
PUSHED_SETTINGS_REQUESTS: Final = 1
PUSHED_SETTINGS_READ_UNITS: Final = 1.0
#: The sort key prefix of output items, as protocol.json's item_sizes_bytes would show them when measured.
OUTPUT_ITEM_KIND: Final = "output#"

#: S3 requests by kind of a steady one-batch run of a ``files`` topic whose source and sink are both
#: ``s3://`` (JSON Lines, nothing quarantined), and what each extra batch adds. Counted from the code paths
#: and measured: tests/unit/test_cost.py counts every S3 call of such runs on moto. A one-batch run:
#:
#: - Acquire: the source check, a one-key listing (LIST); the late-object look-back's listing of its
#:   window (LIST); ``has_records_after``, which reads the checkpoint's object to its end (GET) and lists the
#:   keys after it (LIST). The sink's marker is read once per warm Lambda and sink, not per run.
#: - ProcessBatch: the read, the checkpoint's object again (GET), the listing after it (LIST) and the new
#:   object (GET); the batch's output object (PUT; a quarantine object would be one more).
#: - AdvanceCheckpoint, after a run's first commit: the other attempts at that batch, a listing of its stem
#:   in the sink and in ``_quarantine/`` (2 LIST). Nothing to delete in a steady run.
#:
#: An extra batch: its object (GET), the listing after it (LIST), its output (PUT). A listing takes one
#: LIST per 1,000 keys, and a batch one GET per object it opens: small objects cost more.
#: GET counts HEAD requests too (the up-to-date check's stat of the checkpoint's object): S3 bills both in
#: its GET tier.
S3_REQUESTS_PER_RUN: Final = {"LIST": 6, "GET": 3, "PUT": 1, "DELETE": 0}
S3_REQUESTS_PER_EXTRA_BATCH: Final = {"LIST": 1, "GET": 1, "PUT": 1, "DELETE": 0}
#: Scheduler invocations per run: each scheduled run is one invocation of its topic's schedule (template:
#: one AWS::Scheduler::Schedule per topic, one startExecution per invocation). Retries only on failure.
SCHEDULER_INVOCATIONS_PER_RUN: Final = 1
#: What the handlers print in a steady one-batch run of that topic: Powertools' JSON log lines and each
#: invocation's EMF metrics blob (one log event each), their bytes with the newline, and what each extra
#: batch adds. Measured by tests/unit/test_cost.py, which runs the real handlers (the sample processor,
#: which logs one line per batch, included; a processor that logs more adds its own). A batch whose
#: ``batch processed`` line names many source keys logs more.
FUNCTION_LOG_EVENTS_PER_RUN: Final = 6
FUNCTION_LOG_BYTES_PER_RUN: Final = 3700
FUNCTION_LOG_EVENTS_PER_EXTRA_BATCH: Final = 4
FUNCTION_LOG_BYTES_PER_EXTRA_BATCH: Final = 2400
#: The custom metrics a scheduled topic's steady runs emit (EMF, namespace leanops), each with the one
#: dimension set {topic, service}: the work (LockAcquired, BatchSeconds, Batches, Records) and the health
#: every run reports for the alarms (LagSeconds, LagRatio, StalenessRatio, RunFailed; leanops.health).
#: Counted from the handlers' EMF output by tests/unit/test_cost.py. Other names (UpToDate, LockContention,
#: LockHeldLeases, LateObjects, Quarantined, OrphansDeleted...) are billed only in the hours they are emitted.
METRIC_NAMES_PER_TOPIC: Final = (
    "LockAcquired",
    "BatchSeconds",
    "Batches",
    "Records",
    "LagSeconds",
    "LagRatio",
    "StalenessRatio",
    "RunFailed",
)
METRICS_PER_TOPIC: Final = len(METRIC_NAMES_PER_TOPIC)
#: Execution log levels that log a successful run's events (ERROR and FATAL log failures only).
LOGS_EVERY_EVENT: Final = "ALL"
#: Step Functions' events per run: ExecutionStarted and ExecutionSucceeded; per state entered, its
#: <Type>StateEntered and <Type>StateExited; per Task state that invokes a Lambda function by ARN (the
#: definition's Resource), LambdaFunctionScheduled, LambdaFunctionStarted and LambdaFunctionSucceeded.
EVENTS_PER_EXECUTION: Final = 2
EVENTS_PER_STATE: Final = 2
EVENTS_PER_INVOCATION: Final = 3

#: Placeholders of typical length for what the log lines name (a 36-character id, a stack's generated
#: names), so that the rendered lines below have the bytes of real ones.
_UUID = "8f5e2c7a-1b3d-4e6f-9a8b-7c6d5e4f3a2b"
_ACCOUNT = "123456789012"
_MACHINE_NAME = "TopicRunStateMachine-AbCdEfGh1234"

#: The components of a run's cost, in the order they are shown.
COMPONENTS: Final = {
    "step_functions": "Step Functions",
    "lambda_requests": "Lambda requests",
    "lambda_duration": "Lambda duration",
    "dynamodb": "DynamoDB",
    "s3": "S3 requests",
    "scheduler": "EventBridge Scheduler",
    "logs": "CloudWatch Logs",
    "xray": "X-Ray traces",
    "metrics": "CloudWatch metrics",
    "alarms": "CloudWatch alarms",
}
#: Components billed per month rather than per run (the rest are per run).
MONTHLY_COMPONENTS: Final = frozenset({"metrics", "alarms"})

#: What the model assumes, reported with every estimate.
ASSUMPTIONS: Final = (
    "Every run is a steady-state run (the topic has committed before) that processes batches_per_run "
    "batches with no retry or failure; counts are per run from workflow.json and protocol.json, the extra "
    "batches at their measured per-extra-batch rate. An up-to-date run enters the same 6 states; a run that "
    "finds the topic locked costs less; a topic's first run reads 1 unit more.",
    "Standard bills every state entered (the counted *StateEntered events); a retry would add a transition "
    "and an invocation.",
    "Durations are local proxies, not AWS measurements: Lambda = the median task_seconds of the Task state "
    "that invokes the function (in-process handler, DynamoDB Local), Express = the median execution time "
    "from the local history. AWS adds network latency and cold starts; the processor's own work grows with "
    "batch_size.",
    "DynamoDB units: protocol.json's write/read units (computed from item sizes by the documented rules "
    "where DynamoDB Local under-reports) plus the run-key claim, plus 2 write units per commit for its "
    "output item (transactional, under 1 KB) when protocol.json did not measure it, plus 5 read units per "
    "run for the late-object look-back's Query (its bound for 20 output items); Step Functions' own check "
    "of the execution name is free.",
    "Express memory = 50 MB + the definition's size (no Map or Parallel state), billed in 64 MB chunks; "
    "duration rounded up to 100 ms per execution. Lambda: template MemorySize / 1024 GB x duration rounded "
    "up to 1 ms, the template's architecture.",
    "S3 (with an s3:// source and sink, the default): the requests counted in a steady run by kind ("
    + ", ".join(f"{n} {kind}" for kind, n in S3_REQUESTS_PER_RUN.items() if n)
    + "; an extra batch "
    + ", ".join(f"{n} {kind}" for kind, n in S3_REQUESTS_PER_EXTRA_BATCH.items() if n)
    + "), new objects of one batch each; a topic read from DynamoDB, or with a local sink, has fewer or "
    "none (--no-s3 leaves them out).",
    "Every run is started by its topic's schedule: one Scheduler invocation per run.",
    "CloudWatch Logs: the handlers' lines of a steady run as measured (Powertools JSON and EMF), Lambda's "
    "START, END and REPORT lines per invocation (text format, with the XRAY line when traced), and, when "
    "the template's log level for the workflow type is ALL (Express), every execution history event "
    "without execution data (2 per execution, 2 per state, 3 per Lambda task); ERROR (Standard) logs "
    "nothing for a successful run. 26 bytes per event are added (the PutLogEvents size rule).",
    "X-Ray (the template traces the state machine): one trace per execution, sampled by X-Ray's default "
    "rule (the first each second, 5% of the rest) at the scenario's average rate, starts spread evenly "
    "(the schedules' flexible window).",
    "Custom metrics: METRICS_PER_TOPIC per topic (the names a steady run emits, one dimension set), "
    "billed for the hours they get data (all of them from 24 runs a day). Alarms: the template's per-topic "
    "alarms for every topic, plus its deployment-wide alarm metrics for the workflow type.",
    "A month is 730 hours. First price tiers; free tiers and the items in prices.not_included are left out.",
)


# ------------------------------------------------------------------------------------------------------------
# What a run uses
# ------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FunctionUse:
    """A Lambda function of the run: how often a run invokes it, for how long, with what memory."""

    name: str
    #: Invocations in a one-batch run, and added by each extra batch.
    invocations: float
    invocations_per_extra_batch: float
    #: Duration of one invocation (a local proxy: the median task_seconds of the state that invokes it).
    seconds: float
    memory_mb: int
    architecture: str


@dataclass(frozen=True)
class Usage:
    """What one run uses, in billed units: a one-batch run, and what each extra batch adds."""

    transitions: float
    transitions_per_extra_batch: float
    functions: tuple[FunctionUse, ...]
    #: Wall time of one execution (Express bills it), one-batch run and per extra batch.
    execution_seconds: float
    execution_seconds_per_extra_batch: float
    #: Size of the state machine definition (Express memory) and its count of Map/Parallel states.
    definition_bytes: int
    write_units: float
    write_units_per_extra_batch: float
    read_units: float = 0.0
    read_units_per_extra_batch: float = 0.0
    map_or_parallel_states: int = 0
    #: S3 requests by kind (LIST, GET, PUT, DELETE) of an s3:// source and sink, per run and per extra batch.
    s3_requests: Mapping[str, float] = field(default_factory=dict)
    s3_requests_per_extra_batch: Mapping[str, float] = field(default_factory=dict)
    #: Scheduler invocations per run (1 when schedules start the runs).
    scheduler_invocations: float = 0.0
    #: The handlers' own log events and bytes, per run and per extra batch.
    function_log_events: float = 0.0
    function_log_bytes: float = 0.0
    function_log_events_per_extra_batch: float = 0.0
    function_log_bytes_per_extra_batch: float = 0.0
    #: Lambda's own log events and bytes per invocation (START, END, REPORT).
    platform_log_events_per_invocation: float = 0.0
    platform_log_bytes_per_invocation: float = 0.0
    #: Execution history events and their bytes, per run and per extra batch: logged when the workflow
    #: type's level (``execution_log_levels``, from the template) is ALL.
    execution_log_events: float = 0.0
    execution_log_bytes: float = 0.0
    execution_log_events_per_extra_batch: float = 0.0
    execution_log_bytes_per_extra_batch: float = 0.0
    execution_log_levels: Mapping[str, str] = field(default_factory=dict)
    #: X-Ray: "execution" (the state machine is traced: one trace per run), "functions" (only the functions
    #: are: one per invocation) or "" (no tracing).
    tracing: str = ""
    #: Custom metrics per topic; alarm metrics per topic, and per deployment by workflow type.
    metrics_per_topic: float = 0.0
    alarm_metrics_per_topic: float = 0.0
    alarm_metrics_per_deployment: Mapping[str, float] = field(default_factory=dict)
    #: Where the numbers come from (paths, when the benchmarks ran).
    inputs: Mapping[str, Any] = field(default_factory=dict)
    #: Inconsistencies found between the inputs (reported, not fatal).
    warnings: tuple[str, ...] = ()


@dataclass(frozen=True)
class Scenario:
    """How often runs happen: ``runs_per_day`` runs of each of ``topics`` topics, of ``batches_per_run``;
    ``s3``: the topics' source and sink are ``s3://`` (else their S3 requests are left out)."""

    workflow_type: str
    runs_per_day: float
    topics: int = 1
    batches_per_run: int = 1
    s3: bool = True

    def __post_init__(self) -> None:
        if not isinstance(self.s3, bool):
            raise InvalidInput(f"s3 must be true or false, not {self.s3!r}")
        if self.workflow_type not in WORKFLOW_TYPES:
            raise InvalidInput(f"the workflow type must be standard or express, not {self.workflow_type!r}")
        if not _finite(self.runs_per_day) or self.runs_per_day <= 0:
            raise InvalidInput(f"runs per day must be a positive number, not {self.runs_per_day!r}")
        for name in ("topics", "batches_per_run"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InvalidInput(
                    f"{name.replace('_', ' ')} must be a whole number of at least 1, not {value!r}"
                )

    def runs_per_month(self, prices: Mapping[str, Any] = PRICES) -> float:
        """Runs of all topics in a month of ``prices["hours_per_month"]`` hours."""
        return self.runs_per_day * self.topics * float(prices["hours_per_month"]) / 24


# ------------------------------------------------------------------------------------------------------------
# The estimate
# ------------------------------------------------------------------------------------------------------------


def _ceil_to(value: float, increment: float) -> float:
    """``value`` rounded up to a multiple of ``increment``, ignoring float noise (0.2 s stays 0.2 s)."""
    return math.ceil(round(value / increment, 9)) * increment


def lambda_billed_ms(seconds: float, prices: Mapping[str, Any] = PRICES) -> float:
    """One invocation's billed duration in ms: rounded up to the billing increment, at least one."""
    increment = float(prices["lambda"]["duration_increment_ms"])
    return max(increment, _ceil_to(seconds * 1000, increment))


def express_billed_seconds(seconds: float, prices: Mapping[str, Any] = PRICES) -> float:
    """One Express execution's billed duration in seconds: rounded up to the billing increment."""
    increment = float(prices["step_functions"]["express_duration_increment_ms"])
    return max(increment, _ceil_to(seconds * 1000, increment)) / 1000


def express_billed_memory_mb(definition_bytes: int, prices: Mapping[str, Any] = PRICES) -> float:
    """Express billed memory: base + definition size, rounded up to the next chunk (no Map/Parallel)."""
    sfn = prices["step_functions"]
    used = float(sfn["express_base_memory_mb"]) + definition_bytes / (1024 * 1024)
    return _ceil_to(used, float(sfn["express_memory_chunk_mb"]))


def lambda_platform_log_lines(traced: bool) -> tuple[str, ...]:
    """The log events Lambda itself writes per invocation in the text log format (the template sets no
    other): START, END and REPORT, whose REPORT has an XRAY line when the function is traced. The numbers
    are typical; their digits change a byte or two."""
    report = (
        f"REPORT RequestId: {_UUID}\tDuration: 31.52 ms\tBilled Duration: 32 ms\tMemory Size: 1024 MB\t"
        "Max Memory Used: 98 MB\t\n"
    )
    if traced:
        report += "XRAY TraceId: 1-6744c1a0-5f0e3c2a9b8d7e6f5a4b3c2d\tSegmentId: 53995c3f42cd8ad8\t"
        report += "Sampled: true\t\n"
    return (f"START RequestId: {_UUID} Version: $LATEST\n", f"END RequestId: {_UUID}\n", report)


def execution_log_records(state: str = "ProcessBatch", function: str = "ProcessFunction") -> dict[str, Any]:
    """One execution history event of each kind a run logs, as Step Functions writes it to CloudWatch Logs
    without execution data (``IncludeExecutionData: false``): the event's id, type, details (the state's
    name, the function's ARN; ``*Details`` flags instead of input and output), the previous event's id, its
    time and the (Express) execution ARN. ``state`` and ``function`` are typical names of the definition; a
    Choice or Succeed state's events are the Task state's, a few bytes shorter in their type."""
    function_arn = f"arn:aws:lambda:us-east-1:{_ACCOUNT}:function:leanops-{function}-AbCdEfGh1234"
    role_arn = f"arn:aws:iam::{_ACCOUNT}:role/leanops-TopicRunStateMachineRole-AbCdEfGh1234"
    details: dict[str, dict[str, Any]] = {
        "ExecutionStarted": {"inputDetails": {"truncated": False}, "roleArn": role_arn},
        "ExecutionSucceeded": {"outputDetails": {"truncated": False}},
        "TaskStateEntered": {"name": state, "inputDetails": {"truncated": False}},
        "TaskStateExited": {"name": state, "outputDetails": {"truncated": False}},
        "LambdaFunctionScheduled": {
            "resource": function_arn,
            "timeoutInSeconds": 135,
            "inputDetails": {"truncated": False},
        },
        "LambdaFunctionStarted": {},
        "LambdaFunctionSucceeded": {"outputDetails": {"truncated": False}},
    }
    return {
        kind: {
            "id": "12",
            "type": kind,
            "details": detail,
            "previous_event_id": "11",
            "event_timestamp": "1764064800123",
            "execution_arn": f"arn:aws:states:us-east-1:{_ACCOUNT}:express:{_MACHINE_NAME}:{_UUID}:{_UUID}",
            "redrive_count": "0",
        }
        for kind, detail in details.items()
    }


def execution_log_usage(transitions: float, invocations: float, *, execution: bool) -> tuple[float, float]:
    """Events and bytes (messages only) Step Functions logs at level ALL for ``transitions`` states entered
    and ``invocations`` Lambda tasks, plus the execution's own two events if ``execution``."""
    size = {
        kind: len(json.dumps(record, separators=(",", ":")))
        for kind, record in execution_log_records().items()
    }
    events = transitions * EVENTS_PER_STATE + invocations * EVENTS_PER_INVOCATION
    size_bytes = transitions * (size["TaskStateEntered"] + size["TaskStateExited"]) + invocations * (
        size["LambdaFunctionScheduled"] + size["LambdaFunctionStarted"] + size["LambdaFunctionSucceeded"]
    )
    if execution:
        events += EVENTS_PER_EXECUTION
        size_bytes += size["ExecutionStarted"] + size["ExecutionSucceeded"]
    return events, size_bytes


def sampled_share(requests_per_second: float, prices: Mapping[str, Any] = PRICES) -> float:
    """The share of requests X-Ray's default sampling rule records at a steady rate: the reservoir's first
    requests each second, then the fixed rate of the rest."""
    if requests_per_second <= 0:
        return 0.0
    xray = prices["xray"]
    reservoir, rate = float(xray["default_reservoir_per_second"]), float(xray["default_fixed_rate"])
    recorded = min(requests_per_second, reservoir) + rate * max(0.0, requests_per_second - reservoir)
    return recorded / requests_per_second


def estimate(usage: Usage, scenario: Scenario, prices: Mapping[str, Any] = PRICES) -> dict[str, Any]:
    """The cost of ``scenario``'s runs, by component: per run, per million runs and per month (JSON-ready).

    Each per-run component is computed per million runs (quantity per run x price per million units), then
    scaled; each monthly one (:data:`MONTHLY_COMPONENTS`) per month, then spread over the month's runs.
    ``dominant`` names the component that costs most.
    """
    extra = scenario.batches_per_run - 1
    sfn, lam, ddb = prices["step_functions"], prices["lambda"], prices["dynamodb"]
    mb_per_gb = float(lam["mb_per_gb"])

    transitions = usage.transitions + extra * usage.transitions_per_extra_batch
    invocations = {f.name: f.invocations + extra * f.invocations_per_extra_batch for f in usage.functions}
    billed_ms = {f.name: lambda_billed_ms(f.seconds, prices) for f in usage.functions}
    gb_seconds_by_arch: dict[str, float] = {}
    for f in usage.functions:
        gb_s = invocations[f.name] * billed_ms[f.name] / 1000 * f.memory_mb / mb_per_gb
        gb_seconds_by_arch[f.architecture] = gb_seconds_by_arch.get(f.architecture, 0.0) + gb_s
    execution_seconds = usage.execution_seconds + extra * usage.execution_seconds_per_extra_batch
    express_seconds = express_billed_seconds(execution_seconds, prices)
    express_memory_mb = express_billed_memory_mb(usage.definition_bytes, prices)
    express_gb_seconds = express_seconds * express_memory_mb / mb_per_gb
    express_usd_per_gb_second = float(sfn["express_usd_per_gb_hour"]) / 3600
    write_units = usage.write_units + extra * usage.write_units_per_extra_batch
    read_units = usage.read_units + extra * usage.read_units_per_extra_batch
    total_invocations = sum(invocations.values())
    total_gb_seconds = sum(gb_seconds_by_arch.values())

    per_million: dict[str, float] = {}
    details: dict[str, str] = {}
    if scenario.workflow_type == STANDARD:
        per_million["step_functions"] = transitions * float(sfn["standard_usd_per_million_transitions"])
        details["step_functions"] = f"{transitions:g} transitions"
    else:
        per_million["step_functions"] = float(sfn["express_usd_per_million_requests"]) + (
            express_gb_seconds * express_usd_per_gb_second * 1_000_000
        )
        details["step_functions"] = f"1 request + {express_seconds:g} s x {express_memory_mb:g} MB"
    per_million["lambda_requests"] = total_invocations * float(lam["usd_per_million_requests"])
    details["lambda_requests"] = f"{total_invocations:g} invocations"
    per_million["lambda_duration"] = sum(
        gb_s * float(lam["usd_per_gb_second"][arch]) * 1_000_000 for arch, gb_s in gb_seconds_by_arch.items()
    )
    details["lambda_duration"] = f"{total_gb_seconds:.4g} GB-s ({', '.join(sorted(gb_seconds_by_arch))})"
    per_million["dynamodb"] = write_units * float(
        ddb["usd_per_million_write_request_units"]
    ) + read_units * float(ddb["usd_per_million_read_request_units"])
    details["dynamodb"] = f"{write_units:g} WRU + {read_units:g} RRU"

    runs_per_month = scenario.runs_per_month(prices)
    # --- S3: requests by kind, at the kind's price ------------------------------------------------------
    s3_kinds = list(dict.fromkeys([*usage.s3_requests, *usage.s3_requests_per_extra_batch]))
    s3_requests = (
        {
            kind: usage.s3_requests.get(kind, 0.0) + extra * usage.s3_requests_per_extra_batch.get(kind, 0.0)
            for kind in s3_kinds
        }
        if scenario.s3
        else {}
    )
    s3_prices = prices["s3"]["usd_per_million_requests"]
    per_million["s3"] = sum(count * float(s3_prices[kind]) for kind, count in s3_requests.items())
    details["s3"] = (
        ", ".join(f"{count:g} {kind}" for kind, count in s3_requests.items() if count)
        if scenario.s3
        else "no s3:// source or sink"
    ) or "none"
    # --- Scheduler: one invocation per scheduled run -----------------------------------------------------
    per_million["scheduler"] = usage.scheduler_invocations * float(
        prices["scheduler"]["usd_per_million_invocations"]
    )
    details["scheduler"] = (
        f"{usage.scheduler_invocations:g} invocation{'s' if usage.scheduler_invocations != 1 else ''}"
    )
    # --- CloudWatch Logs: the functions' lines, Lambda's own, and the execution's events at level ALL ----
    cwl = prices["cloudwatch_logs"]
    overhead = float(cwl["event_overhead_bytes"])
    function_log_events = (
        usage.function_log_events
        + extra * usage.function_log_events_per_extra_batch
        + total_invocations * usage.platform_log_events_per_invocation
    )
    function_log_bytes = (
        usage.function_log_bytes
        + extra * usage.function_log_bytes_per_extra_batch
        + total_invocations * usage.platform_log_bytes_per_invocation
        + overhead * function_log_events
    )
    execution_log_level = usage.execution_log_levels.get(scenario.workflow_type, "OFF")
    execution_log_events = execution_log_bytes = 0.0
    if execution_log_level == LOGS_EVERY_EVENT:
        execution_log_events = usage.execution_log_events + extra * usage.execution_log_events_per_extra_batch
        execution_log_bytes = (
            usage.execution_log_bytes
            + extra * usage.execution_log_bytes_per_extra_batch
            + overhead * execution_log_events
        )
    log_bytes = function_log_bytes + execution_log_bytes
    per_million["logs"] = (
        log_bytes / float(cwl["bytes_per_gb"]) * float(cwl["usd_per_gb_ingested"]) * 1_000_000
    )
    details["logs"] = (
        f"{function_log_bytes / 1000:.3g} KB Lambda + {execution_log_bytes / 1000:.3g} KB execution "
        f"({execution_log_level})"
    )
    # --- X-Ray: traces recorded under the default sampling rule ------------------------------------------
    seconds_per_month = float(prices["hours_per_month"]) * 3600
    traced_requests = {"execution": 1.0, "functions": total_invocations}.get(usage.tracing, 0.0)
    requests_per_second = traced_requests * runs_per_month / seconds_per_month
    traces = traced_requests * sampled_share(requests_per_second, prices)
    per_million["xray"] = traces * float(prices["xray"]["usd_per_million_traces_recorded"])
    details["xray"] = (
        f"{traces:.3g} traces (default sampling at {requests_per_second:.3g}/s)"
        if usage.tracing
        else "not traced"
    )
    # --- CloudWatch metrics and alarms: per month, spread over the runs ----------------------------------
    cwm = prices["cloudwatch_metrics"]
    metric_hours_share = min(1.0, scenario.runs_per_day / 24)
    metrics = usage.metrics_per_topic * scenario.topics
    monthly = {"metrics": metrics * metric_hours_share * float(cwm["usd_per_metric_month"])}
    details["metrics"] = f"{usage.metrics_per_topic:g} per topic x {scenario.topics} ({metrics:g} metrics)"
    if metric_hours_share < 1:
        details["metrics"] += f", {metric_hours_share:.0%} of the hours"
    deployment_alarms = usage.alarm_metrics_per_deployment.get(scenario.workflow_type, 0.0)
    alarm_metrics = usage.alarm_metrics_per_topic * scenario.topics + deployment_alarms
    monthly["alarms"] = alarm_metrics * float(cwm["usd_per_alarm_metric_month"])
    details["alarms"] = (
        f"{usage.alarm_metrics_per_topic:g} per topic x {scenario.topics} + {deployment_alarms:g} "
        "alarm metrics"
    )
    for key, usd in monthly.items():
        per_million[key] = usd / runs_per_month * 1_000_000

    components = {
        key: _amounts(per_million[key], runs_per_month)
        | {
            "label": label,
            "detail": details[key],
            "billed": "per month" if key in MONTHLY_COMPONENTS else "per run",
        }
        for key, label in COMPONENTS.items()
    }
    total_per_million = sum(per_million.values())
    total = _amounts(total_per_million, runs_per_month)
    dominant = max(COMPONENTS, key=lambda key: per_million[key])
    warnings = list(usage.warnings)
    warnings += _tier_warnings(scenario, runs_per_month, express_gb_seconds, gb_seconds_by_arch, prices)
    if metrics > float(cwm["first_tier_metrics"]):
        warnings.append(
            f"{metrics:,.0f} custom metrics, past the first tier of "
            f"{float(cwm['first_tier_metrics']):,.0f}: the metrics estimate is an upper bound"
        )
    if scenario.workflow_type == EXPRESS and execution_seconds > 300:
        warnings.append(
            f"{scenario.batches_per_run} batches take {execution_seconds:.0f} s locally: Express executions "
            "stop after 5 minutes"
        )
    if usage.map_or_parallel_states:
        warnings.append(
            "the definition has Map or Parallel states: Express memory also grows with the execution data, "
            "which the model leaves out"
        )
    return {
        "workflow_type": scenario.workflow_type,
        "runs_per_day": scenario.runs_per_day,
        "topics": scenario.topics,
        "batches_per_run": scenario.batches_per_run,
        "s3": scenario.s3,
        "runs_per_month": round(runs_per_month, 6),
        "usage_per_run": {
            "transitions": transitions,
            "lambda_invocations": invocations,
            "lambda_billed_ms": billed_ms,
            "lambda_memory_mb": {f.name: f.memory_mb for f in usage.functions},
            "lambda_architecture": {f.name: f.architecture for f in usage.functions},
            "lambda_gb_seconds": round(total_gb_seconds, 9),
            "express_billed_seconds": express_seconds,
            "express_billed_memory_mb": express_memory_mb,
            "express_gb_seconds": round(express_gb_seconds, 9),
            "dynamodb_write_units": write_units,
            "dynamodb_read_units": read_units,
            "s3_requests": s3_requests,
            "scheduler_invocations": usage.scheduler_invocations,
            "log_events": {"lambda": function_log_events, "execution": execution_log_events},
            "log_bytes": {"lambda": round(function_log_bytes, 3), "execution": round(execution_log_bytes, 3)},
            "execution_log_level": execution_log_level,
            "xray_traces": round(traces, 9),
            "xray_sampled_share": round(sampled_share(requests_per_second, prices), 9),
        },
        "usage_per_month": {
            "custom_metrics": metrics,
            "custom_metric_hours_share": round(metric_hours_share, 9),
            "alarm_metrics": alarm_metrics,
        },
        "components": components,
        "total": total,
        "dominant": {
            "component": dominant,
            "label": COMPONENTS[dominant],
            "share": round(per_million[dominant] / total_per_million, 4) if total_per_million else 0.0,
        },
        "prices": {"region": prices["region"], "as_of": prices["as_of"], "currency": prices["currency"]},
        "inputs": dict(usage.inputs),
        "assumptions": list(ASSUMPTIONS),
        "warnings": warnings,
    }


def _amounts(usd_per_million_runs: float, runs_per_month: float) -> dict[str, Any]:
    return {
        "usd_per_run": round(usd_per_million_runs / 1_000_000, 12),
        "usd_per_million_runs": round(usd_per_million_runs, 6),
        "usd_per_month": round(usd_per_million_runs * runs_per_month / 1_000_000, 6),
    }


def _tier_warnings(
    scenario: Scenario,
    runs_per_month: float,
    express_gb_seconds: float,
    gb_seconds_by_arch: Mapping[str, float],
    prices: Mapping[str, Any],
) -> list[str]:
    """Where a month's volume leaves the first price tier (the model then overstates the cost a little)."""
    warnings = []
    sfn, lam = prices["step_functions"], prices["lambda"]
    express_gb_hours = express_gb_seconds * runs_per_month / 3600
    if scenario.workflow_type == EXPRESS and express_gb_hours > float(
        sfn["express_first_tier_gb_hours_per_month"]
    ):
        warnings.append(
            f"Express duration reaches {express_gb_hours:,.0f} GB-hours a month, past the first tier: "
            "the estimate is an upper bound"
        )
    for arch, gb_s in gb_seconds_by_arch.items():
        monthly = gb_s * runs_per_month
        if monthly > float(lam["first_tier_gb_seconds_per_month"][arch]):
            warnings.append(
                f"Lambda {arch} duration reaches {monthly:,.0f} GB-seconds a month, past the first tier: "
                "the estimate is an upper bound"
            )
    return warnings


# ------------------------------------------------------------------------------------------------------------
# Reading the inputs
# ------------------------------------------------------------------------------------------------------------


def load_usage(
    results_dir: Path | str = DEFAULT_RESULTS_DIR, template_path: Path | str = DEFAULT_TEMPLATE
) -> Usage:
    """What a run uses, from ``results_dir``'s workflow.json and protocol.json and the template.

    Raises
    ------
    InvalidInput
        A results file is missing (``run make bench first``), is not JSON, or lacks or garbles a number.
    ConfigError
        The template is missing or malformed, or does not match the results (a counted function it lacks).
    """
    results_dir = Path(results_dir)
    workflow_path, protocol_path = results_dir / WORKFLOW_RESULTS, results_dir / PROTOCOL_RESULTS
    workflow = _Results(workflow_path)
    protocol = _Results(protocol_path)
    template = read_template(template_path)
    architectures = _architectures(template.path)
    definition_path = template.state_machine(STATE_MACHINE).definition_path
    definition, definition_bytes = _definition(definition_path)
    state_functions = _task_functions(definition, template.state_machine(STATE_MACHINE).substitutions)
    warnings: list[str] = []

    # --- Step Functions -------------------------------------------------------------------------------
    transitions = workflow.number("transitions_per_run")
    transitions_per_extra_batch = workflow.number("transitions_per_extra_batch")
    multi_key, batches = workflow.multi_batch_scenario()
    execution_seconds = workflow.number("execution_seconds_from_history", "median")
    multi_seconds = statistics.median(workflow.numbers("scenarios", multi_key, "execution_seconds"))
    execution_seconds_per_extra_batch = max(0.0, (multi_seconds - execution_seconds) / (batches - 1))

    # --- Lambda ---------------------------------------------------------------------------------------
    by_function = workflow.number_map("lambda_invocations_per_run_by_function")
    steady_by_function = workflow.number_map("scenarios", "steady_run", "lambda_invocations_by_function")
    multi_by_function = workflow.number_map("scenarios", multi_key, "lambda_invocations_by_function")
    task_seconds = workflow.number_map("task_seconds")
    if sum(by_function.values()) != workflow.number("lambda_invocations_per_run"):
        warnings.append(
            f"{workflow.path}: lambda_invocations_per_run is not the sum of its by_function counts"
        )
    functions = []
    for name in sorted(set(by_function) | set(multi_by_function)):
        invocations = by_function.get(name, 0.0)
        per_extra = (multi_by_function.get(name, 0.0) - steady_by_function.get(name, 0.0)) / (batches - 1)
        if invocations == 0 and per_extra == 0:
            continue
        if name not in template.functions:
            raise ConfigError(
                f"{workflow.path} counts invocations of {name}, which {template.path} does not define: "
                "run make bench again"
            )
        states = [state for state, function in state_functions.items() if function == name]
        timed = [task_seconds[state] for state in states if state in task_seconds]
        if not timed:
            raise InvalidInput(
                f"{workflow.path}: task_seconds has no state that invokes {name} "
                f"(states: {', '.join(states) or 'none'}): run make bench again"
            )
        functions.append(
            FunctionUse(
                name=name,
                invocations=invocations,
                invocations_per_extra_batch=per_extra,
                seconds=statistics.fmean(timed),
                memory_mb=template.functions[name].memory_size,
                architecture=architectures.get(name, DEFAULT_ARCHITECTURE),
            )
        )
    extra_invocations = workflow.number("lambda_invocations_per_extra_batch")
    if not math.isclose(sum(f.invocations_per_extra_batch for f in functions), extra_invocations):
        warnings.append(f"{workflow.path}: lambda_invocations_per_extra_batch does not match its scenarios")

    # --- DynamoDB -------------------------------------------------------------------------------------
    prefix = "" if protocol.get("units_source") == "computed" else "reported_"
    claim_write = protocol.number("scenarios", "claim_run_key", f"{prefix}write_units")
    claim_read = protocol.number("scenarios", "claim_run_key", f"{prefix}read_units")
    measured_sizes = protocol.get("item_sizes_bytes")
    measures_outputs = isinstance(measured_sizes, dict) and any(
        str(kind).startswith(OUTPUT_ITEM_KIND) for kind in measured_sizes
    )
    output_units = 0.0 if measures_outputs else OUTPUT_ITEM_WRITE_UNITS  # one commit per batch
    write_units = protocol.number("write_units_per_run") + claim_write + output_units + RUN_RECORD_WRITE_UNITS
    read_units = (
        protocol.number("read_units_per_run")
        + claim_read
        + LATE_LOOKBACK_READ_UNITS
        + PUSHED_SETTINGS_READ_UNITS
    )
    write_units_per_extra_batch = protocol.number("write_units_per_extra_batch") + output_units
    if "read_units_per_extra_batch" in protocol.data:
        read_units_per_extra_batch = protocol.number("read_units_per_extra_batch")
    else:
        protocol_multi, protocol_batches = protocol.multi_batch_scenario()
        read_units_per_extra_batch = (
            protocol.number("scenarios", protocol_multi, f"{prefix}read_units")
            - protocol.number("scenarios", "steady_run", f"{prefix}read_units")
        ) / (protocol_batches - 1)
    # The protocol benchmark drives the same calls the workflow's tasks make (but the look-back, which is
    # not protocol): the requests must agree.
    protocol_requests = (
        protocol.number("dynamodb_requests_per_run")
        + protocol.number("scenarios", "claim_run_key", "requests")
        + LATE_LOOKBACK_REQUESTS
        + PUSHED_SETTINGS_REQUESTS
    )
    if protocol_requests != workflow.number("dynamodb_requests_per_run") or protocol.number(
        "dynamodb_requests_per_extra_batch"
    ) != workflow.number("dynamodb_requests_per_extra_batch"):
        warnings.append(
            f"{protocol.path} and {workflow.path} count different DynamoDB requests per run or per extra "
            "batch: one of them is stale, run make bench again"
        )

    # --- S3, logs, tracing, schedules, metrics and alarms --------------------------------------------------
    observed = _observability(template.path, set(by_function) | set(multi_by_function))
    invocations_per_run = sum(f.invocations for f in functions)
    invocations_per_extra_batch = sum(f.invocations_per_extra_batch for f in functions)
    execution_log_events, execution_log_bytes = execution_log_usage(
        transitions, invocations_per_run, execution=True
    )
    extra_log_events, extra_log_bytes = execution_log_usage(
        transitions_per_extra_batch, invocations_per_extra_batch, execution=False
    )
    platform_lines = lambda_platform_log_lines(observed["functions_traced"])

    return Usage(
        transitions=transitions,
        transitions_per_extra_batch=transitions_per_extra_batch,
        functions=tuple(functions),
        execution_seconds=execution_seconds,
        execution_seconds_per_extra_batch=execution_seconds_per_extra_batch,
        definition_bytes=definition_bytes,
        write_units=write_units,
        write_units_per_extra_batch=write_units_per_extra_batch,
        read_units=read_units,
        read_units_per_extra_batch=read_units_per_extra_batch,
        map_or_parallel_states=_count_states(definition, {"Map", "Parallel"}),
        s3_requests=dict(S3_REQUESTS_PER_RUN),
        s3_requests_per_extra_batch=dict(S3_REQUESTS_PER_EXTRA_BATCH),
        scheduler_invocations=SCHEDULER_INVOCATIONS_PER_RUN if observed["scheduled"] else 0,
        function_log_events=FUNCTION_LOG_EVENTS_PER_RUN,
        function_log_bytes=FUNCTION_LOG_BYTES_PER_RUN,
        function_log_events_per_extra_batch=FUNCTION_LOG_EVENTS_PER_EXTRA_BATCH,
        function_log_bytes_per_extra_batch=FUNCTION_LOG_BYTES_PER_EXTRA_BATCH,
        platform_log_events_per_invocation=len(platform_lines),
        platform_log_bytes_per_invocation=sum(len(line.encode()) for line in platform_lines),
        execution_log_events=execution_log_events,
        execution_log_bytes=execution_log_bytes,
        execution_log_events_per_extra_batch=extra_log_events,
        execution_log_bytes_per_extra_batch=extra_log_bytes,
        execution_log_levels=observed["log_levels"],
        tracing=observed["tracing"],
        metrics_per_topic=METRICS_PER_TOPIC,
        alarm_metrics_per_topic=observed["alarm_metrics_per_topic"],
        alarm_metrics_per_deployment=observed["alarm_metrics_per_deployment"],
        inputs={
            "workflow": {"path": str(workflow.path), "finished_at": workflow.get("finished_at")},
            "protocol": {
                "path": str(protocol.path),
                "finished_at": protocol.get("finished_at"),
                "units_source": protocol.get("units_source"),
                "output_item_write_units_added_per_commit": output_units,
                "late_lookback_read_units_added_per_run": LATE_LOOKBACK_READ_UNITS,
            },
            "template": {
                "path": str(template_path),
                "state_machine": STATE_MACHINE,
                "execution_log_levels": observed["log_levels"],
                "tracing": observed["tracing"],
                "alarm_metrics_per_topic": observed["alarm_metrics_per_topic"],
                "alarm_metrics_per_deployment": observed["alarm_metrics_per_deployment"],
            },
            "handlers": {
                "measured_by": "tests/unit/test_cost.py (real handlers, moto's S3, an s3:// source and sink)",
                "s3_requests_per_run": dict(S3_REQUESTS_PER_RUN),
                "s3_requests_per_extra_batch": dict(S3_REQUESTS_PER_EXTRA_BATCH),
                "log_events_per_run": FUNCTION_LOG_EVENTS_PER_RUN,
                "log_bytes_per_run": FUNCTION_LOG_BYTES_PER_RUN,
                "log_events_per_extra_batch": FUNCTION_LOG_EVENTS_PER_EXTRA_BATCH,
                "log_bytes_per_extra_batch": FUNCTION_LOG_BYTES_PER_EXTRA_BATCH,
                "metric_names_per_topic": list(METRIC_NAMES_PER_TOPIC),
            },
        },
        warnings=tuple(warnings),
    )


class _Results:
    """A benchmark results file, with checked access to its numbers (errors name the file and the key)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            text = path.read_text()
        except FileNotFoundError:
            raise InvalidInput(f"{path} not found: run make bench first") from None
        except OSError as exc:
            raise InvalidInput(
                f"{path}: cannot read it ({exc.strerror or exc}): run make bench first"
            ) from None
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise InvalidInput(
                f"{path}: not valid JSON ({exc.msg}, line {exc.lineno}): run make bench again"
            ) from None
        if not isinstance(data, dict):
            raise InvalidInput(f"{path}: not a JSON object: run make bench again")
        self.data: dict[str, Any] = data

    def get(self, key: str) -> Any:
        return self.data.get(key)

    def value(self, *keys: str) -> Any:
        node: Any = self.data
        for depth, key in enumerate(keys):
            if not isinstance(node, dict) or key not in node:
                where = ".".join(keys[: depth + 1])
                raise InvalidInput(f"{self.path}: {where} is missing: run make bench again")
            node = node[key]
        return node

    def number(self, *keys: str) -> float:
        return self._checked(self.value(*keys), ".".join(keys))

    def numbers(self, *keys: str) -> list[float]:
        value = self.value(*keys)
        where = ".".join(keys)
        if not isinstance(value, list) or not value:
            raise InvalidInput(f"{self.path}: {where} must be a non-empty list: run make bench again")
        return [self._checked(item, f"{where}[{i}]") for i, item in enumerate(value)]

    def mapping(self, *keys: str) -> dict[str, Any]:
        value = self.value(*keys)
        if not isinstance(value, dict):
            raise InvalidInput(f"{self.path}: {'.'.join(keys)} must be an object: run make bench again")
        return value

    def number_map(self, *keys: str) -> dict[str, float]:
        where = ".".join(keys)
        return {name: self._checked(item, f"{where}.{name}") for name, item in self.mapping(*keys).items()}

    def multi_batch_scenario(self) -> tuple[str, int]:
        """The N-batch scenario (``steady_run_<N>_batches``) and its N, at least 2."""
        scenarios = self.mapping("scenarios")
        found = [
            (key, int(m.group(1)))
            for key in scenarios
            if (m := re.fullmatch(r"steady_run_(\d+)_batches", key))
        ]
        if len(found) != 1 or found[0][1] < 2:
            raise InvalidInput(
                f"{self.path}: scenarios must hold one steady_run_<N>_batches run with N >= 2: "
                "run make bench again"
            )
        return found[0]

    def _checked(self, value: Any, where: str) -> float:
        if not _finite(value) or value < 0:
            raise InvalidInput(
                f"{self.path}: {where} must be a non-negative number, not {value!r}: run make bench again"
            )
        return float(value)


def _finite(value: float) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _definition(path: Path) -> tuple[dict[str, Any], int]:
    """The state machine definition at ``path``, and its size in bytes."""
    try:
        text = path.read_text()
        data = json.loads(text)
    except OSError as exc:
        raise ConfigError(
            f"{path}: cannot read the state machine definition: {exc.strerror or exc}"
        ) from None
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path}: the state machine definition is not valid JSON ({exc.msg})") from None
    if not isinstance(data, dict) or not isinstance(data.get("States"), dict):
        raise ConfigError(f"{path}: a state machine definition must have States")
    return data, len(text.encode())


_PLACEHOLDER = re.compile(r"^\$\{([^}]+)\}$")


def _task_functions(definition: Mapping[str, Any], substitutions: Mapping[str, Any]) -> dict[str, str]:
    """Task state name -> the logical id of the Lambda function it invokes (through the substitutions)."""
    found: dict[str, str] = {}
    for name, state in _all_states(definition):
        if state.get("Type") != "Task":
            continue
        resource = state.get("Resource")
        parameters = state.get("Parameters") or {}
        if isinstance(resource, str) and resource.startswith("arn:aws:states:::lambda:invoke"):
            resource = parameters.get("FunctionName") if isinstance(parameters, dict) else None
        match = _PLACEHOLDER.match(resource) if isinstance(resource, str) else None
        if not match:
            continue
        function = _logical_id(substitutions.get(match.group(1)))
        if function is not None:
            found[name] = function
    return found


def _logical_id(value: Any) -> str | None:
    """The resource a substitution names: ``{"Fn::GetAtt": ["F", "Arn"]}``, ``{"Ref": "F"}`` or a published
    version ``{"Ref": "F.Version"}`` -> ``"F"``."""
    if isinstance(value, dict) and len(value) == 1:
        ((function, argument),) = value.items()
        if function == "Fn::GetAtt":
            parts = argument.split(".", 1) if isinstance(argument, str) else argument
            if isinstance(parts, list) and parts:
                return str(parts[0])
        if function == "Ref" and isinstance(argument, str):
            return argument.split(".", 1)[0]
    return None


def _all_states(definition: Mapping[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """Every state, nested ones (Parallel branches, Map iterators) included."""
    states: list[tuple[str, dict[str, Any]]] = []
    for name, state in (definition.get("States") or {}).items():
        if not isinstance(state, dict):
            continue
        states.append((name, state))
        for branch in state.get("Branches") or []:
            if isinstance(branch, dict):
                states += _all_states(branch)
        for key in ("Iterator", "ItemProcessor"):
            if isinstance(state.get(key), dict):
                states += _all_states(state[key])
    return states


def _count_states(definition: Mapping[str, Any], types: set[str]) -> int:
    return sum(1 for _, state in _all_states(definition) if state.get("Type") in types)


def _architectures(template_path: Path) -> dict[str, str]:
    """Each function's architecture, as SAM resolves it (the function's, else ``Globals.Function``'s).

    A ``!Ref`` to a template parameter resolves to the parameter's ``Default``.
    """
    data = load_yaml(template_path)
    parameters = data.get("Parameters") or {}
    globals_ = (data.get("Globals") or {}).get("Function") or {}
    found: dict[str, str] = {}
    for logical_id, resource in (data.get("Resources") or {}).items():
        if not isinstance(resource, dict) or resource.get("Type") not in FUNCTION_TYPES:
            continue
        properties = resource.get("Properties") or {}
        value = properties.get("Architectures")
        if value is None and str(resource["Type"]).startswith("AWS::Serverless"):
            value = globals_.get("Architectures")
        if value is None:
            found[logical_id] = DEFAULT_ARCHITECTURE
            continue
        value = _parameter_default(value, parameters)
        if isinstance(value, list) and len(value) == 1:
            value = _parameter_default(value[0], parameters)
        if value not in ARCHITECTURES:
            raise ConfigError(
                f"{template_path}: Architectures of {logical_id} must be [arm64] or [x86_64], not {value!r}"
            )
        found[logical_id] = str(value)
    return found


def _observability(template_path: Path, counted_functions: set[str]) -> dict[str, Any]:
    """What the template sets up around the runs: the state machine's log level by workflow type, its and
    the counted functions' tracing, whether schedules start runs, and alarm metrics (per topic: alarms with
    a ``topic`` dimension, per topic named; per deployment: the rest, by workflow type)."""
    data = load_yaml(template_path)
    parameters = data.get("Parameters") or {}
    conditions = data.get("Conditions") or {}
    resources = {k: v for k, v in (data.get("Resources") or {}).items() if isinstance(v, dict)}
    machine = resources.get(STATE_MACHINE) or {}
    properties = machine.get("Properties") or {}
    # The parameter that chooses the workflow type (Type: !Ref WorkflowType), if any: each type is priced
    # with that parameter set to it, every other at its default. A template with a fixed type is priced
    # as it is for either type.
    kind = properties.get("Type")
    type_parameter = kind.get("Ref") if isinstance(kind, dict) else None

    def values(workflow_type: str) -> dict[str, Any]:
        found = {name: spec.get("Default") for name, spec in parameters.items() if isinstance(spec, dict)}
        if isinstance(type_parameter, str):
            found[type_parameter] = workflow_type.upper()
        return found

    log_levels: dict[str, str] = {}
    alarm_metrics_per_deployment: dict[str, float] = {}
    #: Alarm metrics by topic, for each workflow type the template deploys.
    topic_alarm_metrics: dict[str, dict[str, float]] = {}
    for workflow_type in WORKFLOW_TYPES:
        given = values(workflow_type)
        logging = properties.get("Logging") or {}
        level = _evaluate(logging.get("Level", "OFF"), given, conditions) if logging else "OFF"
        log_levels[workflow_type] = str(level).upper()
        deployment, by_topic = 0.0, topic_alarm_metrics.setdefault(workflow_type, {})
        for resource in resources.values():
            if resource.get("Type") != "AWS::CloudWatch::Alarm":
                continue
            condition = resource.get("Condition")
            if condition is not None and not _condition(condition, given, conditions):
                continue
            alarm = resource.get("Properties") or {}
            metrics = _alarm_metrics(alarm)
            topic = _topic_dimension(alarm)
            if _per_topic_query(alarm):
                # A Metrics Insights alarm grouped by topic analyzes one metric of every topic: priced as
                # one alarm metric per topic (the "*" key: every topic).
                by_topic["*"] = by_topic.get("*", 0.0) + 1.0
            elif topic is None:
                deployment += metrics
            else:
                by_topic[topic] = by_topic.get(topic, 0.0) + metrics
        alarm_metrics_per_deployment[workflow_type] = deployment
    # Per topic: what every topic's queries cost, plus the average over the topics the template names in
    # alarms of their own, of the first type it deploys (no per-topic alarm depends on the type).
    per_topic = dict(next(iter(topic_alarm_metrics.values()), {}))
    every_topic = per_topic.pop("*", 0.0)
    functions_traced = any(
        _function_tracing(resources.get(name) or {}, data) == "Active" for name in counted_functions
    )
    machine_traced = bool((properties.get("Tracing") or {}).get("Enabled"))
    return {
        "log_levels": log_levels,
        "tracing": "execution" if machine_traced else "functions" if functions_traced else "",
        "functions_traced": functions_traced,
        # Schedules are pushed into the stack's schedule group (`leanops topics push`), or are resources.
        "scheduled": any(
            r.get("Type") in ("AWS::Scheduler::Schedule", "AWS::Scheduler::ScheduleGroup")
            for r in resources.values()
        ),
        "alarm_metrics_per_topic": every_topic
        + (sum(per_topic.values()) / len(per_topic) if per_topic else 0.0),
        "alarm_metrics_per_deployment": alarm_metrics_per_deployment,
    }


def _alarm_metrics(alarm: Mapping[str, Any]) -> float:
    """The metrics an alarm is billed for: one, or each metric (not expression) of a metric math alarm."""
    metrics = alarm.get("Metrics")
    if isinstance(metrics, list):
        return float(sum(1 for m in metrics if isinstance(m, dict) and "MetricStat" in m))
    return 1.0


def _per_topic_query(alarm: Mapping[str, Any]) -> bool:
    """Whether an alarm is a Metrics Insights query over the handlers' metrics grouped by topic."""
    for metric in alarm.get("Metrics") or []:
        expression = str(metric.get("Expression", "")) if isinstance(metric, dict) else ""
        if expression.lstrip().upper().startswith("SELECT") and "GROUP BY TOPIC" in expression.upper():
            return True
    return False


def _topic_dimension(alarm: Mapping[str, Any]) -> str | None:
    """The topic an alarm watches (its ``topic`` dimension), or None for a deployment-wide alarm."""
    for dimension in alarm.get("Dimensions") or []:
        if isinstance(dimension, dict) and dimension.get("Name") == "topic":
            return str(dimension.get("Value"))
    return None


def _function_tracing(resource: Mapping[str, Any], data: Mapping[str, Any]) -> Any:
    """A function's tracing mode: its own ``Tracing`` (SAM) or ``TracingConfig.Mode``, else Globals'."""
    properties = resource.get("Properties") or {}
    mode = properties.get("Tracing") or (properties.get("TracingConfig") or {}).get("Mode")
    if mode is None and str(resource.get("Type", "")).startswith("AWS::Serverless"):
        mode = ((data.get("Globals") or {}).get("Function") or {}).get("Tracing")
    return mode


def _evaluate(value: Any, parameters: Mapping[str, Any], conditions: Mapping[str, Any]) -> Any:
    """A property value with ``Fn::If`` and ``Ref`` to parameters resolved (what the level needs)."""
    if isinstance(value, dict) and len(value) == 1:
        ((function, argument),) = value.items()
        if function == "Fn::If" and isinstance(argument, list) and len(argument) == 3:
            chosen = argument[1] if _condition(argument[0], parameters, conditions) else argument[2]
            return _evaluate(chosen, parameters, conditions)
        if function == "Ref" and argument in parameters:
            return parameters[argument]
    return value


def _condition(name: Any, parameters: Mapping[str, Any], conditions: Mapping[str, Any]) -> bool:
    """Whether the template's condition ``name`` holds for these parameter values."""
    return bool(_truth(conditions.get(name), parameters, conditions))


def _truth(expression: Any, parameters: Mapping[str, Any], conditions: Mapping[str, Any]) -> Any:
    if isinstance(expression, dict) and len(expression) == 1:
        ((function, argument),) = expression.items()
        items = argument if isinstance(argument, list) else [argument]
        if function == "Fn::Equals" and len(items) == 2:
            left, right = (_truth(item, parameters, conditions) for item in items)
            return str(left) == str(right)
        if function == "Fn::Not":
            return not _truth(items[0], parameters, conditions)
        if function == "Fn::And":
            return all(_truth(item, parameters, conditions) for item in items)
        if function == "Fn::Or":
            return any(_truth(item, parameters, conditions) for item in items)
        if function == "Condition":
            return _condition(argument, parameters, conditions)
        if function == "Ref":
            return parameters.get(argument)
    return expression


def _parameter_default(value: Any, parameters: Mapping[str, Any]) -> Any:
    if isinstance(value, dict) and set(value) == {"Ref"}:
        parameter = parameters.get(value["Ref"])
        if isinstance(parameter, dict) and "Default" in parameter:
            return parameter["Default"]
    return value
