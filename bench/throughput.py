"""Benchmark of batch throughput and memory: the process task (files -> processor -> files) vs a bare loop.

Measures how many records per second one topic moves through the orchestrated path (per batch exactly what
the state machine runs between states: the process task, then the advance task that commits) and through a
bare loop that reads, parses, calls the same processor and writes the same files with no orchestration,
in the same run, alternately. It also measures the peak memory of a process task in fresh child processes:
for a 100,000-record batch, and for one batch read from an object 50 times the batch's size compared with
one from an object of the batch's size (a source that streams line by line needs the same memory for both).

Run it from the repository root (``make bench`` does exactly this)::

    python bench/throughput.py            # full run, writes bench/results/throughput.json
    python bench/throughput.py --quick    # smoke run, writes bench/results/throughput.quick.json

It starts its own in-memory DynamoDB Local and stops it on the way out; dummy AWS credentials keep every
request away from AWS. Data, sinks, the topics file and handler logs live in a private temporary directory
on local disk. The results file path is printed on stdout, a short summary on stderr.
"""

from __future__ import annotations

import argparse
import bisect
import contextlib
import gc
import importlib
import json
import logging
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import IO, Any

import yaml
from common import (
    REPO_ROOT,
    BenchError,
    Stopwatch,
    argument_parser,
    dynamodb_local,
    output_help,
    results_path,
    run_and_report,
    use_dummy_aws_env,
)
from leanopsctl import push
from leanopsctl.local.dynamodb_local import local_client
from leanopsctl.local.invocation import LambdaContext
from leanopsctl.local.template import Template, lambda_arn, read_template

from leanops.batch import load_processor
from leanops.config import load_topics
from leanops.constants import ENV_CONFIG, ENV_DYNAMODB_ENDPOINT, ENV_STATE_TABLE
from leanops.data.files import MARKER
from leanops.handlers import acquire as acquire_handler
from leanops.handlers import advance as advance_handler
from leanops.handlers import process as process_handler
from leanops.isolation import stop_children
from leanops.observability import logger as powertools_logger
from leanops.protocol.table import create_table
from leanops.tasks import default_protocol

NAME = "throughput"
SCRIPT = "bench/throughput.py"
TEMPLATE = REPO_ROOT / "template.yaml"
TABLE_NAME = "leanops-bench-throughput"
PROCESSOR = "examples.vehicle_telemetry.processor:process"
LEASE_SECONDS = 120
SEED = 7
MALFORMED = 0.01
#: The issue's acceptance thresholds.
RATIO_MIN = 0.7
RSS_RATIO_MAX = 1.3
#: How many times larger the large object is than the batch read from it.
LARGE_OBJECT_FACTOR = 50
#: Removed too, besides the credential variables: an endpoint for every service.
ALSO_UNSET_AWS_ENV = ("AWS_ENDPOINT_URL",)
#: JSON Lines as the files sink writes them (leanops.data.files).
_encode = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode
WRITE_CHUNK = 8192


@dataclass(frozen=True)
class Settings:
    """How much data, how many rounds, how large the batches."""

    #: Records of the throughput data set, in objects of ``per_object`` records.
    records: int
    per_object: int
    #: Batch size of the throughput topics (and of the bare loop's chunks).
    batch_size: int
    #: Interleaved rounds (bare and orchestrated, alternating which goes first).
    rounds: int
    #: Batch size of the ``peak_rss_mb`` child (read from the throughput data).
    peak_batch: int
    #: Batch size B of the ``rss_ratio_large_object`` children: objects of B and of 50 x B records.
    rss_batch: int
    #: Child processes of each kind (medians are reported).
    rss_repeats: int
    quick: bool


FULL = Settings(
    records=500_000,
    per_object=100_000,
    batch_size=100_000,
    rounds=5,
    peak_batch=100_000,
    rss_batch=20_000,
    rss_repeats=3,
    quick=False,
)
QUICK = Settings(
    records=100_000,
    per_object=20_000,
    batch_size=20_000,
    rounds=1,
    peak_batch=100_000,
    rss_batch=5_000,
    rss_repeats=1,
    quick=True,
)


# ------------------------------------------------------------------------------------------------------------
# The project: generated telemetry, a topics file, sinks
# ------------------------------------------------------------------------------------------------------------


def import_generator() -> ModuleType:
    """``examples.vehicle_telemetry.generate`` (the repository root is not on ``sys.path`` for a script)."""
    if str(REPO_ROOT) not in sys.path:
        sys.path.insert(0, str(REPO_ROOT))
    return importlib.import_module("examples.vehicle_telemetry.generate")


def topic_settings(source: str, batch_size: int, sink: str, isolation: str = "process") -> dict[str, Any]:
    return {
        "isolation": isolation,
        "source": {"type": "files", "uri": source},
        "sink": {"type": "files", "uri": sink},
        "processor": PROCESSOR,
        "batch_size": batch_size,
        "lease_seconds": LEASE_SECONDS,
        "timestamp_field": "ts",
        "on_malformed": "quarantine",
    }


class Project:
    """The benchmark's data and topics in a private directory.

    - ``data/``: the throughput data set (``records`` in objects of ``per_object``);
    - ``rss-small/``, ``rss-large/``: one object of B records, one of 50 x B records;
    - ``out/<topic>/``: one fresh sink per topic; ``bare/<round>/``: the bare loop's sinks;
    - ``topics.yaml``: every topic the run uses, each used once (a fresh checkpoint and sink each time).
    """

    def __init__(self, root: Path, settings: Settings, generator: ModuleType) -> None:
        self.root, self.settings = root, settings
        self.data, self.small, self.large = root / "data", root / "rss-small", root / "rss-large"
        self.config = root / "topics.yaml"
        self.log = root / "functions.log"
        began = time.perf_counter()
        self.summary = generator.generate(
            self.data, settings.records, settings.per_object, seed=SEED, malformed=MALFORMED
        )
        b = settings.rss_batch
        self.small_summary = generator.generate(self.small, b, b, seed=SEED, malformed=MALFORMED)
        self.large_summary = generator.generate(
            self.large, LARGE_OBJECT_FACTOR * b, LARGE_OBJECT_FACTOR * b, seed=SEED, malformed=MALFORMED
        )
        self.generate_seconds = time.perf_counter() - began
        (self.small_key,) = object_keys(self.small)
        (self.large_key,) = object_keys(self.large)
        topics: dict[str, Any] = {
            "warmup": topic_settings("./rss-small", max(1, b // 4), "./out/warmup"),
            "warmup_none": topic_settings(
                "./rss-small", max(1, b // 4), "./out/warmup_none", isolation="none"
            ),
        }
        for n in range(1, settings.rounds + 1):
            topics[f"round{n}"] = topic_settings("./data", settings.batch_size, f"./out/round{n}")
            topics[f"round{n}_none"] = topic_settings(
                "./data", settings.batch_size, f"./out/round{n}_none", isolation="none"
            )
        for n in range(1, settings.rss_repeats + 1):
            topics[f"peak{n}"] = topic_settings("./data", settings.peak_batch, f"./out/peak{n}")
            topics[f"small{n}"] = topic_settings("./rss-small", b, f"./out/small{n}")
            topics[f"large{n}"] = topic_settings("./rss-large", b, f"./out/large{n}")
        self.config.write_text(yaml.safe_dump({"topics": topics}, sort_keys=False))

    def sink(self, topic: str) -> Path:
        return self.root / "out" / topic

    def object_sizes(self) -> dict[str, float]:
        """Megabytes of the source objects."""

        def mb(path: Path) -> float:
            return round(path.stat().st_size / 2**20, 1)

        return {
            "throughput_object_mb": mb(self.data / object_keys(self.data)[0]),
            "small_object_mb": mb(self.small / self.small_key),
            "large_object_mb": mb(self.large / self.large_key),
        }


def object_keys(root: Path) -> list[str]:
    """The visible objects under ``root``, as keys in lexical order (hidden ``_`` / ``.`` names left out)."""
    keys = []
    for path in root.rglob("*"):
        key = path.relative_to(root).as_posix()
        if path.is_file() and not any(part.startswith(("_", ".")) for part in key.split("/")):
            keys.append(key)
    return sorted(keys)


def sink_bytes(sink: Path) -> dict[str, int]:
    """Objects and bytes in a sink: output objects at its root, quarantine objects under ``_quarantine/``."""
    totals = {"objects": 0, "bytes": 0, "quarantine_objects": 0, "quarantine_bytes": 0, "other": 0}
    for path in sink.rglob("*"):
        if not path.is_file():
            continue
        key = path.relative_to(sink).as_posix()
        if key == MARKER:  # the sink's claim (state identity), not output
            continue
        if key.startswith("_quarantine/"):
            totals["quarantine_objects"] += 1
            totals["quarantine_bytes"] += path.stat().st_size
        elif "/" in key or key.startswith(("_", ".")):
            totals["other"] += 1  # a temporary file left behind, or anything unexpected
        else:
            totals["objects"] += 1
            totals["bytes"] += path.stat().st_size
    return totals


def remove_tree(path: Path) -> None:
    """Delete a sink once measured (keeps the disk and the page cache the same for every round)."""
    for child in sorted(path.rglob("*"), key=lambda p: len(p.parts), reverse=True):
        if child.is_dir():
            child.rmdir()
        else:
            child.unlink()
    if path.exists():
        path.rmdir()


# ------------------------------------------------------------------------------------------------------------
# The orchestrated path: the Lambda handlers, in-process, as the state machine calls them
# ------------------------------------------------------------------------------------------------------------


class Lambda:
    """Calls the real handlers in-process, with what Lambda gives them.

    The event and the result go through JSON, as between Step Functions states; the context gives the
    function's timeout and memory from template.yaml (``get_remaining_time_in_millis``, which the process
    task reads to stop before its deadline). Handler output (Powertools log lines, metrics as EMF on stdout)
    goes to the function log, as it would go to CloudWatch.
    """

    HANDLERS: dict[str, Callable[[dict[str, Any], Any], dict[str, Any]]] = {
        "AcquireFunction": acquire_handler.handler,
        "ProcessFunction": process_handler.handler,
        "AdvanceFunction": advance_handler.handler,
    }

    def __init__(self, template: Template, log: IO[str]) -> None:
        self.template, self.log = template, log

    def invoke(self, function: str, event: dict[str, Any]) -> dict[str, Any]:
        spec = self.template.function(function)
        context = LambdaContext(
            function_name=function,
            function_version="$LATEST",
            invoked_function_arn=lambda_arn(function),
            memory_limit_in_mb=spec.memory_size,
            aws_request_id=str(uuid.uuid4()),
            log_group_name=f"/aws/lambda/{function}",
            log_stream_name=f"bench/[$LATEST]{uuid.uuid4().hex}",
            deadline=time.monotonic() + spec.timeout,
        )
        with contextlib.redirect_stdout(self.log):
            result = self.HANDLERS[function](json.loads(json.dumps(event)), context)
        return json.loads(json.dumps(result))


def route_handler_logs(log: IO[str]) -> None:
    """Powertools' logger writes to the ``sys.stdout`` of its creation; send it to the function log."""
    handler = powertools_logger.registered_handler
    if isinstance(handler, logging.StreamHandler):
        handler.setStream(log)


def acquire(runtime: Lambda, topic: str) -> dict[str, Any]:
    """The Acquire task of a new execution: the run state, holding the topic's lock."""
    name = f"bench-{topic}-{uuid.uuid4().hex[:8]}"
    execution = f"arn:aws:states:us-east-1:123456789012:execution:TopicRunStateMachine:{name}"
    state = runtime.invoke(
        "AcquireFunction", {"input": {"topic": topic}, "execution": execution, "execution_name": name}
    )
    if state.get("outcome") != "acquired":
        raise BenchError(f"topic {topic}: acquire returned {state.get('outcome')!r}, expected 'acquired'")
    return state


@dataclass
class PathResult:
    """One pass of one path over the whole data set."""

    seconds: float
    records: int
    batches: int
    written: int
    quarantined: int
    sink: dict[str, int] = field(default_factory=dict)

    @property
    def records_per_second(self) -> float:
        return self.records / self.seconds

    def to_json(self) -> dict[str, Any]:
        return {
            "seconds": round(self.seconds, 3),
            "records": self.records,
            "records_per_second": round(self.records_per_second),
            "batches": self.batches,
            "written": self.written,
            "quarantined": self.quarantined,
            "sink": self.sink,
        }


def orchestrated(runtime: Lambda, topic: str) -> PathResult:
    """Acquire (not timed), then ProcessBatch -> AdvanceCheckpoint until the commit releases the lock."""
    state = acquire(runtime, topic)
    batches = written = quarantined = 0
    began = time.perf_counter()
    while True:
        batch = runtime.invoke("ProcessFunction", state)
        state = runtime.invoke("AdvanceFunction", {**state, "batch": batch})
        batches += 1
        written += int(batch["written"])
        quarantined += int(batch["quarantined"])
        if state["released"]:  # the MoreBacklog? choice
            break
    seconds = time.perf_counter() - began
    if state["outcome"] != "processed":
        raise BenchError(f"topic {topic}: the run ended {state['outcome']!r}, expected 'processed'")
    return PathResult(seconds, int(state["records"]), batches, written, quarantined)


# ------------------------------------------------------------------------------------------------------------
# The bare loop: read, parse, process, write; no orchestration
# ------------------------------------------------------------------------------------------------------------


@dataclass
class BareContext:
    """What the processor needs: topic, batch id, fence, logger, and ``reject`` appending to a list."""

    topic: str
    batch_id: str
    fence: int
    logger: Any
    records: list[dict[str, Any]]
    origin: Callable[[int], dict[str, Any]]
    rejects: list[dict[str, Any]]
    _index: dict[int, int] | None = None

    def reject(self, record: dict[str, Any], reason: str) -> None:
        if self._index is None:
            self._index = {id(r): i for i, r in enumerate(self.records)}
        index = self._index.get(id(record))
        origin = self.origin(index) if index is not None else {}
        self.rejects.append({**origin, "reason": reason, "raw": record})


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    """JSON Lines to a temporary name, then ``os.replace``: atomic, as the sink writes (without fsync)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.parent / f"_tmp-{path.name}"
    with open(temporary, "wb") as out:
        for first in range(0, len(rows), WRITE_CHUNK):
            out.write(("\n".join(map(_encode, rows[first : first + WRITE_CHUNK])) + "\n").encode())
    os.replace(temporary, path)


def bare(
    data: Path,
    sink: Path,
    processor: Callable[..., list[dict[str, Any]]],
    batch_size: int,
    log: logging.Logger,
    *,
    max_batches: int | None = None,
) -> PathResult:
    """The same data, processor and output files as a topic run, as a plain loop."""
    began = time.perf_counter()
    records: list[dict[str, Any]] = []
    lines: list[int] = []
    segments: list[tuple[int, str]] = []  # (index of an object's first record in the batch, its key)
    rejects: list[dict[str, Any]] = []
    batch_id: str | None = "origin"  # None: the next batch starts at the next object (its key, line 0)
    batches = written = quarantined = taken = 0

    def flush(next_batch: str | None) -> None:
        nonlocal records, lines, segments, rejects, batch_id, batches, written, quarantined
        firsts = [first for first, _ in segments]
        keys, numbers = segments, lines

        def origin(i: int) -> dict[str, Any]:
            return {"source_key": keys[bisect.bisect_right(firsts, i) - 1][1], "line": numbers[i] + 1}

        ctx = BareContext("bare", batch_id or "", 1, log, records, origin, [])
        output = processor(records, ctx) if records else []
        refused = rejects + ctx.rejects
        if output:
            write_jsonl(sink / f"bare.{batches:05d}.jsonl", output)
        if refused:
            write_jsonl(sink / "_quarantine" / f"bare.{batches:05d}.jsonl", refused)
        batches, written, quarantined = batches + 1, written + len(output), quarantined + len(refused)
        records, lines, segments, rejects, batch_id = [], [], [], [], next_batch

    for key in object_keys(data):
        if batch_id is None:
            batch_id = f"{key}#0"  # the position a topic run's batch starts after
        with open(data / key, "rb") as stream:
            segments.append((len(records), key))
            for index, line in enumerate(stream):
                if line.isspace():
                    continue
                if len(records) + len(rejects) >= batch_size:
                    taken += len(records) + len(rejects)
                    flush(f"{key}#{index}")
                    if max_batches is not None and batches >= max_batches:
                        return PathResult(time.perf_counter() - began, taken, batches, written, quarantined)
                    segments.append((0, key))
                try:
                    record = json.loads(line)
                except ValueError as exc:
                    rejects.append(bare_reject(key, index, line, f"not valid JSON: {exc}"))
                    continue
                if type(record) is dict:
                    records.append(record)
                    lines.append(index)
                else:
                    rejects.append(
                        bare_reject(key, index, line, f"not a JSON object: {type(record).__name__}")
                    )
        if len(records) + len(rejects) >= batch_size:  # the batch ends with this object
            taken += len(records) + len(rejects)
            flush(None)
            if max_batches is not None and batches >= max_batches:
                return PathResult(time.perf_counter() - began, taken, batches, written, quarantined)
    if records or rejects:
        taken += len(records) + len(rejects)
        flush(None)
    return PathResult(time.perf_counter() - began, taken, batches, written, quarantined)


def bare_reject(key: str, index: int, line: bytes, reason: str) -> dict[str, Any]:
    text = line.decode("utf-8", "replace").rstrip("\r\n")
    return {"source_key": key, "line": index + 1, "reason": reason, "raw": text}


def bare_logger(log: IO[str]) -> logging.Logger:
    """A plain logger for the processor's one line per batch, to the same log file."""
    log_ = logging.getLogger("leanops.bench.bare")
    log_.propagate = False
    log_.setLevel(logging.INFO)
    if not log_.handlers:
        log_.addHandler(logging.StreamHandler(log))
    return log_


# ------------------------------------------------------------------------------------------------------------
# Memory: fresh child processes
# ------------------------------------------------------------------------------------------------------------

CHILD_KINDS = ("baseline", "task", "bare")


def child_main(args: argparse.Namespace) -> int:
    """One measurement in a fresh process: print ``{"maxrss_kib": ..., ...}`` on stdout.

    Every kind imports the same modules (this script's, the handlers', the processor); ``baseline`` then
    does nothing, ``task`` runs Acquire and one ProcessBatch of ``--topic`` through the handlers, ``bare``
    runs one batch of the bare loop.
    """
    import_generator()
    topics = Path(os.environ[ENV_CONFIG])
    processor = load_processor(PROCESSOR, topics.parent)
    detail: dict[str, Any] = {}
    with open(topics.parent / "children.log", "a") as log:
        route_handler_logs(log)
        if args.child == "task":
            runtime = Lambda(read_template(TEMPLATE), log)
            state = acquire(runtime, args.topic)
            batch = runtime.invoke("ProcessFunction", state)
            detail = {key: batch[key] for key in ("records", "written", "quarantined", "more", "end")}
            stop_children()  # reaped: its peak is in RUSAGE_CHILDREN
            detail["isolation_child_maxrss_kib"] = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        elif args.child == "bare":
            result = bare(
                Path(args.data), Path(args.sink), processor, args.batch_size, bare_logger(log), max_batches=1
            )
            detail = {"records": result.records, "written": result.written, "quarantined": result.quarantined}
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    print(json.dumps({"maxrss_kib": maxrss, "vm_hwm_kib": vm_hwm_kib(), **detail}))
    return 0


def run_child(kind: str, *options: str) -> dict[str, Any]:
    """Run this script as ``--child kind`` in a fresh interpreter; its JSON line.

    The child is started by a small shell that waits for it: Linux carries a process's peak RSS across
    ``execve`` (and ``vfork``), so a child started straight from this large process would report at least
    this process's peak as its own ``ru_maxrss``. A shell's child starts from the shell's few MiB instead.
    """
    command = [str(Path(__file__).resolve()), "--child", kind, *options]
    launcher = ["/bin/sh", "-c", '"$0" "$@"; exit $?', sys.executable, *command]
    done = subprocess.run(launcher, cwd=REPO_ROOT, capture_output=True, text=True, timeout=600, check=False)
    if done.returncode != 0:
        raise BenchError(
            f"child {kind} {' '.join(options)} failed ({done.returncode}): {done.stderr[-2000:]}"
        )
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def vm_hwm_kib() -> int | None:
    """``VmHWM`` of /proc/self/status: the peak RSS of this process image (a cross-check of ru_maxrss)."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return None


def mib(kib: float) -> float:
    return round(kib / 1024, 1)


def measure_memory(project: Project, settings: Settings) -> dict[str, Any]:
    """Peak RSS of children, interleaved by kind, ``rss_repeats`` times each; medians."""
    b = settings.rss_batch
    runs: dict[str, list[dict[str, Any]]] = {"baseline": [], "peak": [], "small": [], "large": [], "bare": []}
    for n in range(1, settings.rss_repeats + 1):
        runs["baseline"].append(run_child("baseline"))
        runs["small"].append(run_child("task", "--topic", f"small{n}"))
        runs["large"].append(run_child("task", "--topic", f"large{n}"))
        runs["peak"].append(run_child("task", "--topic", f"peak{n}"))
        bare_sink = project.root / "bare" / f"peak{n}"
        runs["bare"].append(
            run_child(
                "bare",
                "--data",
                str(project.data),
                "--sink",
                str(bare_sink),
                "--batch-size",
                str(settings.peak_batch),
            )
        )
        for topic in (f"small{n}", f"large{n}", f"peak{n}"):
            remove_tree(project.sink(topic))
        remove_tree(bare_sink)
    for run in runs["small"]:
        expect(run, "small-object batch", records=b, more=False, end=f"{project.small_key}#{b}")
    for run in runs["large"]:
        expect(run, "large-object batch", records=b, more=True, end=f"{project.large_key}#{b}")
    for run in runs["peak"] + runs["bare"]:
        expect(run, "peak batch", records=settings.peak_batch)

    def median_kib(kind: str) -> float:
        return statistics.median(run["maxrss_kib"] for run in runs[kind])

    base, small, large = median_kib("baseline"), median_kib("small"), median_kib("large")
    peak, bare_peak = median_kib("peak"), median_kib("bare")
    return {
        "peak_rss_mb": mib(peak),
        "rss_ratio_large_object": round(large / small, 3),
        "memory": {
            "baseline_rss_mb": mib(base),
            "peak_rss_mb": mib(peak),
            "peak_rss_above_baseline_mb": mib(peak - base),
            "peak_batch_records": settings.peak_batch,
            "bare_peak_rss_mb": mib(bare_peak),
            "bare_peak_rss_above_baseline_mb": mib(bare_peak - base),
            "small_object_rss_mb": mib(small),
            "large_object_rss_mb": mib(large),
            "small_object_above_baseline_mb": mib(small - base),
            "large_object_above_baseline_mb": mib(large - base),
            "rss_ratio_large_object": round(large / small, 3),
            "rss_ratio_large_object_above_baseline": round((large - base) / (small - base), 3)
            if small > base
            else None,
            "rss_batch_records": b,
            "small_object_records": b,
            "large_object_records": LARGE_OBJECT_FACTOR * b,
            **project.object_sizes(),
            "runs": {
                kind: [round(run["maxrss_kib"] / 1024, 1) for run in kind_runs]
                for kind, kind_runs in runs.items()
            },
            "batches": {kind: kind_runs[0] for kind, kind_runs in runs.items() if kind != "baseline"},
            # ru_maxrss against /proc/self/status VmHWM of the same child: they agree when nothing was
            # inherited from the launching process.
            "ru_maxrss_vs_vm_hwm_max_diff_mb": max_hwm_difference(runs),
        },
    }


def max_hwm_difference(runs: dict[str, list[dict[str, Any]]]) -> float | None:
    differences = [
        abs(run["maxrss_kib"] - run["vm_hwm_kib"])
        for kind_runs in runs.values()
        for run in kind_runs
        if run.get("vm_hwm_kib") is not None
    ]
    return mib(max(differences)) if differences else None


def expect(run: dict[str, Any], what: str, **expected: Any) -> None:
    wrong = {key: run.get(key) for key, value in expected.items() if run.get(key) != value}
    if wrong:
        raise BenchError(f"{what}: expected {expected}, the child reported {wrong}")


# ------------------------------------------------------------------------------------------------------------
# Rounds
# ------------------------------------------------------------------------------------------------------------


def check_pass(what: str, result: PathResult, project: Project, settings: Settings) -> None:
    """Every record read once; the quarantine holds exactly the malformed and invalid lines."""
    summary = project.summary
    bad = summary.malformed_json + summary.invalid
    expected_batches = -(-settings.records // settings.batch_size)
    problems = []
    if result.records != settings.records:
        problems.append(f"read {result.records} records, expected {settings.records}")
    if result.batches != expected_batches:
        problems.append(f"{result.batches} batches, expected {expected_batches}")
    if result.quarantined != bad or result.written != summary.valid:
        problems.append(
            f"wrote {result.written} and quarantined {result.quarantined}, expected {summary.valid} and {bad}"
        )
    if result.sink.get("other"):
        problems.append(f"{result.sink['other']} unexpected files in the sink")
    if problems:
        raise BenchError(f"{what}: " + "; ".join(problems))


def run_rounds(project: Project, settings: Settings, runtime: Lambda, log: IO[str]) -> list[dict[str, Any]]:
    processor = load_processor(PROCESSOR, project.root)
    plain_log = bare_logger(log)
    # Warm-up (not reported): imports, the handlers' DynamoDB client, DynamoDB Local's JIT, the page cache.
    orchestrated(runtime, "warmup")
    orchestrated(runtime, "warmup_none")
    remove_tree(project.sink("warmup_none"))
    bare(
        project.small, project.root / "bare" / "warmup", processor, max(1, settings.rss_batch // 4), plain_log
    )
    remove_tree(project.sink("warmup"))
    remove_tree(project.root / "bare" / "warmup")
    rounds = []
    for n in range(1, settings.rounds + 1):
        paths = ("bare", "orchestrated", "no_isolation")
        order = paths[n % 3 :] + paths[: n % 3]  # each path goes first, second and third in turn
        results: dict[str, PathResult] = {}
        for path in order:
            gc.collect()  # each pass starts with the previous one's garbage collected
            if path == "bare":
                sink = project.root / "bare" / f"round{n}"
                result = bare(project.data, sink, processor, settings.batch_size, plain_log)
            else:
                topic = f"round{n}" if path == "orchestrated" else f"round{n}_none"
                sink = project.sink(topic)
                result = orchestrated(runtime, topic)
            result.sink = sink_bytes(sink)
            remove_tree(sink)
            check_pass(f"round {n} {path}", result, project, settings)
            results[path] = result
        rounds.append(
            {
                "round": n,
                "order": list(order),
                "orchestrated": results["orchestrated"].to_json(),
                "no_isolation": results["no_isolation"].to_json(),
                "bare": results["bare"].to_json(),
                "isolation_ratio": round(
                    results["orchestrated"].records_per_second / results["no_isolation"].records_per_second, 3
                ),
                "isolation_same_output_bytes": results["orchestrated"].sink["bytes"]
                == results["no_isolation"].sink["bytes"],
                "ratio": round(
                    results["orchestrated"].records_per_second / results["bare"].records_per_second, 3
                ),
                "same_output_bytes": results["orchestrated"].sink["bytes"] == results["bare"].sink["bytes"],
                "same_quarantine_bytes": results["orchestrated"].sink["quarantine_bytes"]
                == results["bare"].sink["quarantine_bytes"],
            }
        )
        print(
            f"  round {n}: orchestrated {results['orchestrated'].records_per_second:,.0f} rec/s, "
            f"no isolation {results['no_isolation'].records_per_second:,.0f} rec/s, "
            f"bare {results['bare'].records_per_second:,.0f} rec/s",
            file=sys.stderr,
        )
    return rounds


# ------------------------------------------------------------------------------------------------------------
# Results
# ------------------------------------------------------------------------------------------------------------

NOTES = [
    "Orchestrated path: the real Lambda handlers, called in-process "
    "(leanops.handlers.acquire/process/advance.handler) with a Lambda context from template.yaml "
    "(timeout, memory; get_remaining_time_in_millis) and the environment they read (LEANOPS_STATE_TABLE, "
    "LEANOPS_CONFIG, AWS_ENDPOINT_URL_DYNAMODB), on a state table in DynamoDB Local (create_table). "
    "Events and results go through JSON as between states. Per round: Acquire (not timed), then "
    "ProcessBatch and AdvanceCheckpoint (the commit) per batch, looping on the commit's released flag as "
    "MoreBacklog? does. Seconds run from the first ProcessBatch to the last commit; records_per_second = "
    "input lines (malformed ones included) / seconds. Handler log lines and EMF metrics go to a log file,"
    " as they would go to CloudWatch. No Step Functions interpreter is involved (bench/workflow.py "
    "measures that); the heartbeat thread runs as in Lambda (no renewal is due).",
    "Bare loop: the same objects (listed and sorted), open, iterate lines, json.loads, non-objects and "
    "invalid JSON to a quarantine list, the same processor function in batches of the same size with a "
    "minimal context (topic, batch_id, fence, logger, reject appending to a list, with the line's "
    "origin), each batch's output written as JSON Lines (the sink's encoder, 8192 records per write) to a"
    " temporary name then os.replace, and the quarantine lines too. No DynamoDB, no heartbeat, no fsync.",
    "Rounds alternate which path goes first; each uses a fresh topic (fresh checkpoint) and a fresh sink,"
    " deleted after its bytes are counted. A pass must read every line once, write every valid reading "
    "and quarantine exactly the malformed and invalid lines (counts from the generator). "
    "same_output_bytes: the bare loop uses the batch ids the topic run does, so both write byte-identical"
    " output. ratio = median orchestrated records/s / median bare records/s; median_of_round_ratios pairs"
    " passes run close together. A warm-up (imports, DynamoDB Local's JIT, page cache) runs first and is "
    "not reported.",
    "Memory: peak RSS (ru_maxrss, KiB on Linux; reported in MiB) of fresh child processes (python "
    "bench/throughput.py --child ...), each started through /bin/sh: Linux carries a process's peak RSS "
    "across execve, so a child started straight from the benchmark (hundreds of MiB after generating the "
    "data) would report at least that; ru_maxrss_vs_vm_hwm_max_diff_mb compares every child's ru_maxrss "
    "with its /proc/self/status VmHWM (they agree when nothing was inherited). Every child imports the "
    "same modules (this script's, the handlers', the processor); baseline does nothing more (a task child"
    " also builds the handlers' DynamoDB client and runs Acquire: part of its figure above baseline). "
    "peak_rss_mb: a child running Acquire and one ProcessBatch of peak_batch records through the "
    "handlers. rss_ratio_large_object: the same for one batch of B records from an object of 50 x B "
    "records (the batch ends inside it: more=true, end=<key>#B) divided by one batch of B records from an"
    " object of exactly B records. bare_peak_rss_mb: the bare loop's first batch of peak_batch records, "
    "for comparison. Medians over rss_repeats children of each kind.",
    "Data: examples.vehicle_telemetry.generate (seed 7, malformed share 0.01: the quarantine is part of "
    "the path) on local disk in a temporary directory; sinks are JSON Lines on the same disk.",
]


def print_summary(results: dict[str, Any]) -> None:
    memory = results["memory"]
    lines = [
        f"throughput: orchestrated {results['records_per_second']:,} rec/s, bare "
        f"{results['bare_records_per_second']:,} rec/s, ratio {results['ratio']:.3f} "
        f"(>= {RATIO_MIN}: {'ok' if results['ratio_ok'] else 'FAIL'}); median of round ratios "
        f"{results['median_of_round_ratios']:.3f}",
        f"isolation: on {results['isolation']['records_per_second_on']:,} rec/s, off "
        f"{results['isolation']['records_per_second_off']:,} rec/s, on/off "
        f"{results['isolation']['ratio_on_over_off']:.3f} (cost {results['isolation']['cost_percent']}%)",
        f"memory: peak {results['peak_rss_mb']} MiB for a {memory['peak_batch_records']:,}-record batch "
        f"(baseline {memory['baseline_rss_mb']} MiB, bare loop {memory['bare_peak_rss_mb']} MiB); "
        f"large/small object {memory['large_object_rss_mb']}/{memory['small_object_rss_mb']} MiB = "
        f"{results['rss_ratio_large_object']:.3f} (<= {RSS_RATIO_MAX}: "
        f"{'ok' if results['rss_ratio_large_object_ok'] else 'FAIL'})",
    ]
    print("\n".join(lines), file=sys.stderr)


def push_topics(config: Path) -> None:
    """The topics file into the state table, where runs read their settings (``leanops topics push``)."""
    store = default_protocol().store
    push.apply(push.plan(load_topics(config), store), store, actor="bench", prune=False)


def benchmark(settings: Settings) -> dict[str, Any]:
    """Generate the data, start DynamoDB Local, run the rounds and the memory children; the results."""
    stopwatch = Stopwatch.start()
    generator = import_generator()
    with (
        dynamodb_local() as (endpoint, version),
        tempfile.TemporaryDirectory(prefix="leanops-bench-throughput-") as directory,
    ):
        project = Project(Path(directory), settings, generator)
        create_table(local_client(endpoint), TABLE_NAME)
        os.environ[ENV_STATE_TABLE] = TABLE_NAME
        os.environ[ENV_CONFIG] = str(project.config)
        os.environ[ENV_DYNAMODB_ENDPOINT] = endpoint
        push_topics(project.config)
        with open(project.log, "a") as log:
            route_handler_logs(log)
            rounds = run_rounds(project, settings, Lambda(read_template(TEMPLATE), log), log)
        memory = measure_memory(project, settings)
        generate_seconds = project.generate_seconds
        data = project.summary.to_json()
    orchestrated_rps = statistics.median(r["orchestrated"]["records_per_second"] for r in rounds)
    bare_rps = statistics.median(r["bare"]["records_per_second"] for r in rounds)
    ratio = orchestrated_rps / bare_rps
    no_isolation_rps = statistics.median(r["no_isolation"]["records_per_second"] for r in rounds)
    return {
        "records_per_second": round(orchestrated_rps),
        "bare_records_per_second": round(bare_rps),
        "ratio": round(ratio, 3),
        "ratio_threshold": RATIO_MIN,
        "ratio_ok": ratio >= RATIO_MIN,
        "median_of_round_ratios": round(statistics.median(r["ratio"] for r in rounds), 3),
        "isolation": {
            "records_per_second_on": round(orchestrated_rps),
            "records_per_second_off": round(no_isolation_rps),
            "ratio_on_over_off": round(orchestrated_rps / no_isolation_rps, 3),
            "median_of_round_ratios": round(statistics.median(r["isolation_ratio"] for r in rounds), 3),
            "cost_percent": round(100 * (1 - orchestrated_rps / no_isolation_rps), 1),
            "same_output_bytes": all(r["isolation_same_output_bytes"] for r in rounds),
        },
        **memory,
        "rss_ratio_threshold": RSS_RATIO_MAX,
        "rss_ratio_large_object_ok": memory["rss_ratio_large_object"] <= RSS_RATIO_MAX,
        "rounds": rounds,
        "orchestrated_path": "handlers",
        "data": data,
        "generate_seconds": round(generate_seconds, 1),
        "topic": {
            "processor": PROCESSOR,
            "batch_size": settings.batch_size,
            "lease_seconds": LEASE_SECONDS,
            "sink": "files, jsonl, local disk",
            "timestamp_field": "ts",
            "on_malformed": "quarantine",
        },
        "dynamodb_local_version": version,
        **stopwatch.record(settings, NOTES),
    }


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark (or, with ``--child``, one memory measurement); exit 1 when it could not run."""
    default_output, quick_output = results_path(NAME), results_path(NAME, quick=True)
    parser = argument_parser(__doc__)
    parser.add_argument("--quick", action="store_true", help="a smoke run (100,000 records, one round)")
    parser.add_argument("--output", type=Path, help=output_help(default_output, quick_output))
    parser.add_argument("--child", choices=CHILD_KINDS, help=argparse.SUPPRESS)
    parser.add_argument("--topic", help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    parser.add_argument("--sink", help=argparse.SUPPRESS)
    parser.add_argument("--batch-size", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return child_main(args)
    output = args.output or (quick_output if args.quick else default_output)
    use_dummy_aws_env(*ALSO_UNSET_AWS_ENV)
    settings = QUICK if args.quick else FULL
    return run_and_report(SCRIPT, output, lambda: benchmark(settings), print_summary)


if __name__ == "__main__":
    sys.exit(main())
