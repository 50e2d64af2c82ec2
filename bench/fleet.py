"""A fleet of scheduled topics on the local stack: N topics on ``rate(1 minute)``, fired by the stack's
Scheduler, data landing on a fraction of them each minute; then what the runs did and cost, and a check that
every landed record was committed exactly once with one lock holder at a time.

    python bench/fleet.py                       # 1,000 topics, 10 minutes: bench/results/fleet.json
    python bench/fleet.py --quick               # 50 topics, 2 minutes: bench/results/fleet.quick.json
    python bench/fleet.py --topics 200 --period-minutes 2 --isolation none --output /tmp/fleet.json

**Project.** In a folder of its own (``--workdir``, else a new temporary one, removed afterwards unless
``--keep``): ``topics.yaml`` with topics ``t00000``... each a ``files`` source ``data/<topic>`` and its own
``files`` sink ``out/<topic>`` (JSON Lines), no processor (the passthrough), ``schedule: rate(P minutes)``,
``timestamp_field: ts``, ``isolation`` as ``--isolation`` (default: the package's, ``process``; it applies
to the passthrough too: the records still go through a child per topic); a private ``LEANOPS_HOME``. Every
topic gets one object before the start, so every topic's first run commits.

**Run.** The harness starts the stack (``leanopsctl.local.stack.stack_up`` with schedules, the CLI's
``leanops local up --schedules``, with a longer start timeout: the start pushes every topic and creates
every schedule), and its Scheduler fires each topic every period from when it first saw it: the whole
fleet at once, every period (no flexible window locally). A lander thread, at the middle of each minute,
appends one object of ``--records-per-object`` lines to a seeded ``--land-fraction`` of the topics
(``{"id": "<topic>-<n>", "ts": <epoch seconds>}``, written under a ``_`` name and renamed), for
``--minutes``. Then the drain: no more landing; the harness waits until every topic's checkpoint has passed
its last object and no execution runs (at most ``--drain-minutes``). Then the cut-off: the harness deletes
the schedules (nothing starts after it), waits for every execution to end, and reads runs, counters and
state, one consistent picture.

**Counting.** ``bench/fleet_site/sitecustomize.py`` is on the stack's ``PYTHONPATH``: in each Lambda worker
it logs every DynamoDB call (botocore hooks: operation, keys, the lock owner and fence of a lock write,
send and answer times, error code), and each isolated processor child logs its start. Executions come from
the stack's Step Functions API (``ListExecutions``, ``DescribeExecution``, ``GetExecutionHistory``). Keys of
``fleet.json``:

- ``topics``, ``runs`` (executions started), ``runs_per_minute`` (start to cut-off) against
  ``runs_expected_per_minute``,
  ``outcomes`` (``processed``, ``up_to_date``, ``skipped_locked``, ``duplicate``, ``paused``, ``failed``:
  the execution's output, ``failed`` for any status other than SUCCEEDED), ``runs_per_topic``,
  ``failed_runs``, ``errors``
  (a failed run's error and cause, a sample);
- ``transitions`` (``*StateEntered`` history events: what Standard bills), ``transitions_per_run``,
  by outcome;
- ``dynamodb_requests`` (every call of every worker), ``dynamodb_requests_per_run``, by operation, by
  function, by partition kind (``topic#`` partitions, ``leanops#topics``: the pushed topics, ``other``),
  ``dynamodb_errors`` (condition failures are the protocol saying no; anything else is a problem);
- ``latency_seconds``: execution start to stop, p50/p95/p99/max, overall and per outcome;
  ``schedule_delay_seconds``: execution start minus its scheduled time (how late the local Scheduler fired);
- ``lag_at_end``: per topic, cut-off minus the checkpoint's ``last_ingested_ts`` (p50/max), and
  ``topics_behind`` (a topic whose checkpoint has not passed its last landed object, once every run ended:
  its records are ``pending_records``, not lost);
- ``double_holders``: from the lock writes the workers logged, per topic: each successful acquisition
  starts a hold, from when its answer came back, that ends when the first successful release (or commit
  that releases) of that owner and fence was sent, or when its lease ran out (the latest lease its
  acquisition or renewals set). Two holds of different owners that overlap are a double holder (counted
  per pair). The interval is the narrowest the evidence allows, so an overlap is a real one.
  ``fence_anomalies``: an acquisition's fence not above the previous one of its topic, or a commit
  whose owner and fence were not an acquisition's;
- ``exactly_once``: every landed record against the committed output (the state's ``output#`` records,
  read strongly consistent) and the sink: ``lost_records`` (up to the checkpoint, not committed),
  ``pending_records`` (after the checkpoint: not run yet), ``duplicate_records``, ``unexpected_records``,
  ``missing_committed_objects``, ``orphan_objects`` (sink objects no commit names);
- ``isolation_children_started``, ``worker_processes`` (Lambda environments that made DynamoDB calls);
- ``machine`` (CPU count, load averages at start and end), ``load_samples`` (the 1-minute load average
  and the stack's CPU share, every 15 s), ``stack_cpu_seconds`` (the stack's processes: moto, the
  interpreter, workers, children; DynamoDB Local apart).

Exit 1 when the harness could not run, or when any of ``failed_runs``, ``double_holders``,
``fence_anomalies``, ``lost_records``, ``duplicate_records``, ``missing_committed_objects`` is not 0 (the
results are written either way).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import shutil
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import boto3
import psutil
import yaml
from botocore.config import Config
from common import (
    REPO_ROOT,
    load_average,
    machine_info,
    now_iso,
    results_path,
    use_dummy_aws_env,
    write_results,
)
from leanopsctl.local.dynamodb_local import local_client
from leanopsctl.local.pool import DEFAULT_CONCURRENCY
from leanopsctl.local.stack import StackRecord, stack_down, stack_up
from leanopsctl.local.template import LOCAL_REGION
from leanopsctl.target import STATE_MACHINE, template_for

from leanops.config import load_topics
from leanops.constants import ENV_CONFIG, ENV_DYNAMODB_ENDPOINT, ENV_HOME, ENV_STATE_TABLE
from leanops.protocol import TopicRef
from leanops.protocol.dynamodb import DynamoDBStore

SCRIPT = "bench/fleet.py"
FLEET_SITE = REPO_ROOT / "bench" / "fleet_site"
ENV_TRACE = "LEANOPS_FLEET_TRACE_DIR"
STATE_TABLE = "leanops-state"
OUTCOMES = ("processed", "up_to_date", "skipped_locked", "duplicate", "paused", "failed")
#: Invariants: each must be 0.
INVARIANTS = (
    "failed_runs",
    "double_holders",
    "fence_anomalies",
    "lost_records",
    "duplicate_records",
    "missing_committed_objects",
)
START_TIMEOUT_SECONDS = 1800.0


@dataclass(frozen=True)
class Settings:
    topics: int
    minutes: float
    land_fraction: float
    isolation: str | None
    period_minutes: int
    records_per_object: int
    concurrency: int
    drain_minutes: float
    seed: int


# ------------------------------------------------------------------------------------------------------------
# The project
# ------------------------------------------------------------------------------------------------------------


class Project:
    """``topics.yaml``, ``data/<topic>``, ``out/<topic>``, ``home/``, ``trace/``; landing and its ledger."""

    def __init__(self, root: Path, settings: Settings) -> None:
        self.root, self.settings = root, settings
        self.home, self.config, self.trace = root / "home", root / "topics.yaml", root / "trace"
        self.names = [f"t{i:05d}" for i in range(settings.topics)]
        self.trace.mkdir(parents=True, exist_ok=True)
        self.landed: dict[str, list[tuple[str, int]]] = {name: [] for name in self.names}
        self._lock = threading.Lock()
        rate = (
            "rate(1 minute)" if settings.period_minutes == 1 else f"rate({settings.period_minutes} minutes)"
        )
        declared = {}
        for name in self.names:
            topic: dict[str, Any] = {
                "source": {"type": "files", "uri": f"./data/{name}"},
                "sink": {"type": "files", "uri": f"./out/{name}", "format": "jsonl"},
                "schedule": rate,
                "timestamp_field": "ts",
            }
            if settings.isolation is not None:
                topic["isolation"] = settings.isolation
            declared[name] = topic
            (root / "data" / name).mkdir(parents=True, exist_ok=True)
            (root / "out" / name).mkdir(parents=True, exist_ok=True)
        self.config.write_text(yaml.safe_dump({"topics": declared}, sort_keys=False))
        inherited = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
        self.env = {
            **os.environ,
            ENV_HOME: str(self.home),
            ENV_STATE_TABLE: STATE_TABLE,
            ENV_TRACE: str(self.trace),
            "PYTHONPATH": os.pathsep.join([str(FLEET_SITE), str(REPO_ROOT), *inherited]),
        }
        for name in (ENV_DYNAMODB_ENDPOINT, ENV_CONFIG):
            self.env.pop(name, None)

    def land(self, topic: str) -> None:
        """One object of ``records_per_object`` lines, atomically (a ``_`` name is never read)."""
        with self._lock:
            objects = self.landed[topic]
            key = f"part-{len(objects):06d}.jsonl"
            first = sum(count for _, count in objects)
            objects.append((key, self.settings.records_per_object))
        now = round(time.time(), 3)
        lines = "".join(
            json.dumps({"id": f"{topic}-{first + i}", "ts": now}) + "\n"
            for i in range(self.settings.records_per_object)
        )
        folder = self.root / "data" / topic
        temporary = folder / f"_tmp-{key}"
        temporary.write_text(lines, encoding="utf-8")
        os.replace(temporary, folder / key)

    def covered_ids(self, topic: str, position: str | None) -> set[str]:
        """The ids a checkpoint at ``position`` (``<key>#<lines>``) has passed."""
        if position is None:
            return set()
        key, _, lines = position.rpartition("#")
        total = 0
        for name, count in self.landed[topic]:
            if name == key:
                total += int(lines)
                break
            total += count
        return {f"{topic}-{i}" for i in range(total)}

    def expected_ids(self, topic: str) -> set[str]:
        total = sum(count for _, count in self.landed[topic])
        return {f"{topic}-{i}" for i in range(total)}


class Lander(threading.Thread):
    """At the middle of each minute of the landing window, one object on a seeded fraction of the topics."""

    def __init__(self, project: Project, start: float, stop: threading.Event) -> None:
        super().__init__(name="lander", daemon=True)
        self.project, self.start_at, self.stop = project, start, stop
        self.rounds: list[dict[str, Any]] = []
        self.random = random.Random(project.settings.seed)

    def run(self) -> None:
        settings = self.project.settings
        minutes = int(settings.minutes)
        count = max(1, round(settings.land_fraction * settings.topics))
        for minute in range(minutes):
            if self.stop.wait(max(0.0, self.start_at + 60 * minute + 30 - time.time())):
                return
            began = time.time()
            chosen = self.random.sample(self.project.names, count)
            for topic in chosen:
                self.project.land(topic)
            self.rounds.append(
                {"minute": minute, "topics": len(chosen), "seconds": round(time.time() - began, 2)}
            )


class Sampler(threading.Thread):
    """Every 15 s: the 1-minute load average and the CPU the stack's process tree used since the last."""

    def __init__(self, pid: int, stop: threading.Event) -> None:
        super().__init__(name="sampler", daemon=True)
        self.pid, self.stop = pid, stop
        self.samples: list[dict[str, Any]] = []
        self.cpu_seconds: dict[int, float] = {}

    def tree_cpu(self) -> float:
        with contextlib.suppress(psutil.NoSuchProcess):
            root = psutil.Process(self.pid)
            for process in [root, *root.children(recursive=True)]:
                with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
                    times = process.cpu_times()
                    self.cpu_seconds[process.pid] = times.user + times.system
        return sum(self.cpu_seconds.values())

    def run(self) -> None:
        last_cpu, last = self.tree_cpu(), time.time()
        while not self.stop.wait(15.0):
            cpu, now = self.tree_cpu(), time.time()
            self.samples.append(
                {
                    "t": round(now, 1),
                    "load_1m": round(os.getloadavg()[0], 2),
                    "stack_cpus": round((cpu - last_cpu) / (now - last), 2),
                }
            )
            last_cpu, last = cpu, now


# ------------------------------------------------------------------------------------------------------------
# Reading the stack
# ------------------------------------------------------------------------------------------------------------


def clients(record: StackRecord) -> tuple[Any, Any]:
    session = boto3.session.Session(
        region_name=LOCAL_REGION, aws_access_key_id="local", aws_secret_access_key="local"
    )
    config = Config(retries={"mode": "standard", "max_attempts": 5}, read_timeout=120)
    return session.client("stepfunctions", endpoint_url=record.endpoint, config=config), local_client(
        record.dynamodb_endpoint
    )


def executions(sfn: Any, machine: str) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    token = None
    while True:
        page = sfn.list_executions(
            stateMachineArn=machine, maxResults=1000, **({"nextToken": token} if token else {})
        )
        found += page["executions"]
        token = page.get("nextToken")
        if not token:
            return found


def stop_schedules(record: StackRecord) -> None:
    """Delete every schedule of the stack's group: its Scheduler starts nothing more (the topics file does
    not change, so the stack does not push them again)."""
    session = boto3.session.Session(
        region_name=LOCAL_REGION, aws_access_key_id="local", aws_secret_access_key="local"
    )
    config = Config(retries={"mode": "standard", "max_attempts": 5}, read_timeout=120)
    scheduler = session.client("scheduler", endpoint_url=record.endpoint, config=config)
    group = record.schedule_group
    names = [
        schedule["Name"]
        for page in scheduler.get_paginator("list_schedules").paginate(GroupName=group)
        for schedule in page.get("Schedules", [])
    ]
    for name in names:
        scheduler.delete_schedule(Name=name, GroupName=group)


def behind(project: Project, store: DynamoDBStore) -> list[str]:
    """Topics whose checkpoint has not passed their last landed object."""
    late = []
    for topic in project.names:
        last = project.landed[topic][-1]
        checkpoint = store.read_checkpoint(TopicRef(topic))
        if checkpoint is None or checkpoint.position != f"{last[0]}#{last[1]}":
            late.append(topic)
    return late


def percentiles(values: Iterable[float]) -> dict[str, float | int | None]:
    ordered = sorted(values)
    if not ordered:
        return {"count": 0, "p50": None, "p95": None, "p99": None, "max": None}

    def at(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 3)

    return {
        "count": len(ordered),
        "p50": at(0.5),
        "p95": at(0.95),
        "p99": at(0.99),
        "max": round(ordered[-1], 3),
    }


def describe_runs(sfn: Any, listed: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each execution: status, outcome, start, stop, scheduled time, states entered, error."""
    runs = []
    for execution in listed:
        arn = execution["executionArn"]
        described = sfn.describe_execution(executionArn=arn)
        events = sfn.get_execution_history(executionArn=arn, maxResults=1000)["events"]
        status = described["status"]
        output = json.loads(described.get("output") or "{}") if status == "SUCCEEDED" else {}
        started = described["startDate"].timestamp()
        stopped = described["stopDate"].timestamp() if described.get("stopDate") else None
        scheduled = json.loads(described.get("input") or "{}").get("scheduled_time")
        runs.append(
            {
                "name": execution["name"],
                "topic": json.loads(described.get("input") or "{}").get("topic"),
                "status": status,
                "outcome": output.get("outcome") if status == "SUCCEEDED" else "failed",
                "started": started,
                "stopped": stopped,
                "scheduled": datetime.fromisoformat(scheduled.replace("Z", "+00:00")).timestamp()
                if scheduled
                else None,
                "transitions": sum(1 for e in events if e["type"].endswith("StateEntered")),
                "error": None
                if status == "SUCCEEDED"
                else f"{described.get('error')}: {described.get('cause')}"[:300],
            }
        )
    return runs


def read_calls(trace: Path) -> list[dict[str, Any]]:
    calls = []
    for path in sorted((trace / "dynamodb").glob("*.jsonl")):
        for line in path.read_text(encoding="utf-8").splitlines():
            with contextlib.suppress(ValueError):
                call = json.loads(line)
                call["pid"] = int(path.stem)
                calls.append(call)
    return calls


def partition_kind(pk: str | None) -> str:
    if pk is None:
        return "other"
    if pk.startswith("topic#"):
        return "topic#<name>"
    return pk if pk.startswith("leanops#") else "other"


def dynamodb_summary(calls: list[dict[str, Any]], runs: int) -> dict[str, Any]:
    by_op = Counter(c["op"] for c in calls)
    by_fn = Counter(c["fn"] for c in calls)
    by_partition: Counter[str] = Counter()
    for call in calls:
        for kind in {partition_kind(pk) for pk, _ in call["items"]} or {"other"}:
            by_partition[f"{call['op']} {kind}"] += 1
    errors = Counter(f"{c['op']} {c['code']}" for c in calls if c.get("code"))
    return {
        "dynamodb_requests": len(calls),
        "dynamodb_requests_per_run": round(len(calls) / runs, 3) if runs else None,
        "dynamodb_by_operation": dict(sorted(by_op.items())),
        "dynamodb_by_function": dict(sorted(by_fn.items())),
        "dynamodb_by_operation_and_partition": dict(sorted(by_partition.items())),
        "dynamodb_errors": dict(sorted(errors.items())),
        "pushed_topics_reads_per_run": round(
            sum(
                1
                for c in calls
                if c["op"] == "GetItem" and c["items"] and c["items"][0][0] == "leanops#topics"
            )
            / runs,
            3,
        )
        if runs
        else None,
    }


def holders(calls: list[dict[str, Any]]) -> dict[str, Any]:
    """Double holders and fence anomalies from the workers' lock writes (see the module docstring)."""
    by_topic: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for call in calls:
        lock = call.get("lock")
        if lock is not None and not call.get("code") and lock.get("owner"):
            by_topic[lock["pk"]].append({**lock, "t0": call["t0"], "t1": call["t1"]})
    double: list[dict[str, Any]] = []
    anomalies: list[dict[str, Any]] = []
    holds_total = 0
    for pk, writes in by_topic.items():
        writes.sort(key=lambda w: w["t1"])
        holds: dict[tuple[str, str], dict[str, Any]] = {}
        last_fence = None
        for write in writes:
            key = (write["owner"], str(write["fence"]))
            if write["kind"] == "acquire":
                fence = int(write["fence"]) if write["fence"] is not None else None
                if fence is None or (last_fence is not None and fence <= last_fence):
                    anomalies.append({"topic": pk, "what": "fence not increasing", "fence": fence})
                last_fence = fence if fence is not None else last_fence
                holds.setdefault(
                    key, {"start": write["t1"], "lease": int(write["lease"]) / 1000, "end": None}
                )
                continue
            hold = holds.get(key)
            if hold is None and write["fence"] is None:  # a failed run's release names its owner only
                hold = next((h for (o, _), h in reversed(holds.items()) if o == write["owner"]), None)
            if hold is None:
                if write["kind"] in ("commit", "commit_release", "renew"):
                    anomalies.append(
                        {"topic": pk, "what": f"{write['kind']} without acquisition", "key": key}
                    )
                continue
            if write.get("lease") is not None and write["kind"] in ("renew", "commit"):
                hold["lease"] = max(hold["lease"], int(write["lease"]) / 1000)
            if write["kind"] in ("release", "commit_release") and hold["end"] is None:
                hold["end"] = write["t0"]
        intervals = sorted(
            (h["start"], min(h["end"] if h["end"] is not None else h["lease"], h["lease"]), owner)
            for (owner, _), h in holds.items()
        )
        holds_total += len(intervals)
        for i, (_, end, owner) in enumerate(intervals):
            for other_start, _, other in intervals[i + 1 :]:
                if other_start >= end:
                    break
                if other != owner:
                    double.append(
                        {"topic": pk, "first": owner, "second": other, "overlap_s": end - other_start}
                    )
    return {
        "double_holders": len(double),
        "double_holder_sample": double[:10],
        "fence_anomalies": len(anomalies),
        "fence_anomaly_sample": anomalies[:10],
        "holds": holds_total,
    }


def exactly_once(
    project: Project, store: DynamoDBStore, checkpoints: dict[str, str | None]
) -> dict[str, Any]:
    """Every landed record up to its topic's checkpoint in the committed output once (records after it are
    pending); the sink holds what the commits name."""
    lost = duplicate = unexpected = missing = orphans = committed_objects = pending = 0
    examples: list[str] = []
    for topic in project.names:
        sink = project.root / "out" / topic
        named: set[str] = set()
        seen: Counter[str] = Counter()
        for record in store.outputs(TopicRef(topic), newest_first=False, limit=None):
            if record.superseded:
                continue
            for field_name in ("object", "quarantine"):
                name = record.data.get(field_name)
                if not name:
                    continue
                named.add(Path(name).name)
                path = (
                    sink / Path(name).name
                    if field_name == "object"
                    else sink / "_quarantine" / Path(name).name
                )
                if not path.exists():
                    missing += 1
                    examples.append(f"{topic}: {name} missing")
                    continue
                if field_name == "object":
                    committed_objects += 1
                    for line in path.read_text(encoding="utf-8").splitlines():
                        seen[json.loads(line)["id"]] += 1
        expected = project.expected_ids(topic)
        covered = project.covered_ids(topic, checkpoints.get(topic))
        pending += len(expected - covered)  # landed after the checkpoint: not yet run, not lost
        lost += len(covered - set(seen))
        duplicate += sum(count - 1 for count in seen.values() if count > 1)
        unexpected += len(set(seen) - expected)
        visible = {p.name for p in sink.iterdir() if p.is_file() and not p.name.startswith(("_", "."))}
        orphans += len(visible - named)
    return {
        "landed_records": sum(len(project.expected_ids(t)) for t in project.names),
        "committed_objects": committed_objects,
        "lost_records": lost,
        "pending_records": pending,
        "duplicate_records": duplicate,
        "unexpected_records": unexpected,
        "missing_committed_objects": missing,
        "orphan_objects": orphans,
        "examples": examples[:10],
    }


# ------------------------------------------------------------------------------------------------------------
# The simulation
# ------------------------------------------------------------------------------------------------------------


def simulate(settings: Settings, root: Path) -> dict[str, Any]:
    load_at_start = load_average()
    started_at = now_iso()
    project = Project(root, settings)
    for topic in project.names:  # every topic's first run commits
        project.land(topic)
    os.environ.clear()
    os.environ.update(project.env)
    topics = load_topics(project.config)
    began = time.time()
    record, _ = stack_up(
        project.home,
        topics.path,
        template_for(topics),
        schedules=True,
        concurrency=settings.concurrency,
        timeout=START_TIMEOUT_SECONDS,
    )
    up_seconds = time.time() - began
    print(f"{SCRIPT}: stack up in {up_seconds:.0f} s ({settings.topics} topics pushed)", file=sys.stderr)
    stop = threading.Event()
    sampler = Sampler(record.pid, stop)
    sampler.start()
    try:
        start = time.time()
        lander = Lander(project, start, stop)
        lander.start()
        sfn, dynamodb = clients(record)
        store = DynamoDBStore(record.table, dynamodb)
        machine = record.state_machines[STATE_MACHINE]
        window_end = start + settings.minutes * 60
        while time.time() < window_end:
            time.sleep(min(30.0, max(0.0, window_end - time.time())))
            running = sfn.list_executions(stateMachineArn=machine, statusFilter="RUNNING", maxResults=1000)
            print(
                f"{SCRIPT}: {(time.time() - start) / 60:.1f} min, {len(running['executions'])} running, "
                f"load {os.getloadavg()[0]:.1f}",
                file=sys.stderr,
            )
        lander.join()
        drain_deadline = time.time() + settings.drain_minutes * 60
        late = behind(project, store)
        while time.time() < drain_deadline:
            running = sfn.list_executions(stateMachineArn=machine, statusFilter="RUNNING", maxResults=1000)
            late = behind(project, store)
            print(
                f"{SCRIPT}: drain: {len(late)} topics behind, {len(running['executions'])} running",
                file=sys.stderr,
            )
            if not late and not running["executions"]:
                break
            time.sleep(10.0)
        cutoff = time.time()
        stack_cpu = sampler.tree_cpu()
        stop.set()
        # The cut-off: no run starts after it (its schedules deleted), every run started before it ends;
        # then the runs, the calls and the state are one consistent picture.
        stop_schedules(record)
        listed = executions(sfn, machine)
        for _ in range(120):
            if all(e["status"] != "RUNNING" for e in listed):
                break
            time.sleep(5.0)
            listed = executions(sfn, machine)
        runs = describe_runs(sfn, listed)
        late = behind(project, store)
        calls = read_calls(project.trace)
        checkpoints = {t: store.read_checkpoint(TopicRef(t)) for t in project.names}
        positions = {t: c.position if c else None for t, c in checkpoints.items()}
        once = exactly_once(project, store, positions)
    finally:
        stop.set()
        stack_down(project.home)
    return report(
        settings,
        project,
        runs,
        calls,
        checkpoints,
        once,
        late,
        lander,
        sampler,
        stack_cpu,
        start=start,
        cutoff=cutoff,
        up_seconds=up_seconds,
        load_at_start=load_at_start,
        started_at=started_at,
    )


def report(
    settings: Settings,
    project: Project,
    runs: list[dict[str, Any]],
    calls: list[dict[str, Any]],
    checkpoints: dict[str, Any],
    once: dict[str, Any],
    late: list[str],
    lander: Lander,
    sampler: Sampler,
    stack_cpu: float,
    *,
    start: float,
    cutoff: float,
    up_seconds: float,
    load_at_start: list[float],
    started_at: str,
) -> dict[str, Any]:
    outcomes = Counter(r["outcome"] or "unknown" for r in runs)
    transitions = sum(r["transitions"] for r in runs)
    by_outcome_transitions = {
        o: round(statistics.mean(r["transitions"] for r in runs if r["outcome"] == o), 2) for o in outcomes
    }
    latency = {"all": percentiles(r["stopped"] - r["started"] for r in runs if r["stopped"])}
    for outcome in outcomes:
        latency[outcome] = percentiles(
            r["stopped"] - r["started"] for r in runs if r["stopped"] and r["outcome"] == outcome
        )
    window_runs = sum(1 for r in runs if r["started"] < start + settings.minutes * 60)
    lags = [cutoff - c.last_ingested_ts for c in checkpoints.values() if c and c.last_ingested_ts]
    children = project.trace / "children.jsonl"
    failed = [r for r in runs if r["status"] != "SUCCEEDED"]
    results: dict[str, Any] = {
        "topics": settings.topics,
        "schedule": f"rate({settings.period_minutes} minute{'s' if settings.period_minutes > 1 else ''})",
        "isolation": settings.isolation or "process (default)",
        "runs": len(runs),
        "runs_in_landing_window": window_runs,
        # Over the whole measured span (the schedules keep firing through the drain).
        "runs_per_minute": round(len(runs) / ((cutoff - start) / 60), 1),
        "runs_expected_per_minute": round(settings.topics / settings.period_minutes, 1),
        "runs_per_topic": _spread(Counter(r["topic"] for r in runs), project.names),
        "outcomes": {o: outcomes.get(o, 0) for o in OUTCOMES}
        | {k: v for k, v in outcomes.items() if k not in OUTCOMES},
        "failed_runs": len(failed),
        "errors": dict(Counter((r["error"] or "")[:160] for r in failed).most_common(5)),
        "transitions": transitions,
        "transitions_per_run": round(transitions / len(runs), 3) if runs else None,
        "transitions_per_run_by_outcome": by_outcome_transitions,
        **dynamodb_summary(calls, len(runs)),
        "latency_seconds": latency,
        "schedule_delay_seconds": percentiles(r["started"] - r["scheduled"] for r in runs if r["scheduled"]),
        "lag_at_end": {
            "seconds": percentiles(lags),
            "topics_behind": len(late),
            "topics_behind_sample": late[:10],
        },
        **holders(calls),
        "exactly_once": once,
        "isolation_children_started": len(children.read_text().splitlines()) if children.exists() else 0,
        "worker_processes": len({c["pid"] for c in calls}),
        "landing": {
            "rounds": len(lander.rounds),
            "objects": sum(len(v) for v in project.landed.values()),
            "records_per_object": settings.records_per_object,
            "fraction": settings.land_fraction,
        },
        "stack_start_seconds": round(up_seconds, 1),
        "measured_seconds": round(cutoff - start, 1),
        "stack_cpu_seconds": round(stack_cpu, 1),
        "stack_cpus_mean": round(stack_cpu / (cutoff - start), 2) if cutoff > start else None,
        "load_samples": sampler.samples,
        "machine": machine_info(load_at_start, moto=_version("moto")),
        "settings": asdict(settings),
        "started_at": started_at,
        "finished_at": now_iso(),
    }
    for key in ("lost_records", "duplicate_records", "missing_committed_objects"):
        results[key] = once[key]
    results["invariants_ok"] = all(results[key] == 0 for key in INVARIANTS)
    return results


def _spread(counts: Counter[str], names: list[str]) -> dict[str, float]:
    """Fewest, most and mean runs per topic (every topic fires on the same period)."""
    values = [counts.get(name, 0) for name in names]
    return {"min": min(values), "max": max(values), "mean": round(statistics.mean(values), 2)}


def _version(package: str) -> str:
    from importlib.metadata import version

    return version(package)


def parse(argv: list[str] | None) -> tuple[Settings, argparse.Namespace]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--topics", type=int, default=1000)
    parser.add_argument("--minutes", type=float, default=10.0, help="landing window (whole minutes)")
    parser.add_argument("--land-fraction", type=float, default=0.2)
    parser.add_argument("--isolation", choices=("process", "none"), help="default: the package's (process)")
    parser.add_argument(
        "--period-minutes", type=int, default=1, help="each topic's schedule: rate(P minutes)"
    )
    parser.add_argument("--records-per-object", type=int, default=20)
    parser.add_argument(
        "--concurrency", type=int, default=DEFAULT_CONCURRENCY, help="environments per function"
    )
    parser.add_argument("--drain-minutes", type=float, help="at most (default: 3 periods + 2 minutes)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--quick", action="store_true", help="50 topics, 2 minutes")
    parser.add_argument("--workdir", type=Path)
    parser.add_argument("--keep", action="store_true", help="keep a temporary workdir")
    parser.add_argument("--output", type=Path)
    args = parser.parse_args(argv)
    if args.quick:
        args.topics, args.minutes = 50, 2.0
    if args.topics < 1 or args.minutes < 1 or not 0 < args.land_fraction <= 1 or args.period_minutes < 1:
        parser.error("--topics and --minutes at least 1, --land-fraction in (0, 1], --period-minutes >= 1")
    args.output = args.output or results_path("fleet", quick=args.quick)
    drain = args.drain_minutes if args.drain_minutes is not None else 3 * args.period_minutes + 2
    settings = Settings(
        topics=args.topics,
        minutes=float(int(args.minutes)),
        land_fraction=args.land_fraction,
        isolation=args.isolation,
        period_minutes=args.period_minutes,
        records_per_object=args.records_per_object,
        concurrency=args.concurrency,
        drain_minutes=drain,
        seed=args.seed,
    )
    return settings, args


@contextlib.contextmanager
def workdir(args: argparse.Namespace) -> Iterator[Path]:
    if args.workdir is not None:
        args.workdir.mkdir(parents=True, exist_ok=True)
        yield args.workdir
        return
    root = Path(tempfile.mkdtemp(prefix="leanops-fleet-"))
    try:
        yield root
    finally:
        if args.keep:
            print(f"{SCRIPT}: kept {root}", file=sys.stderr)
        else:
            shutil.rmtree(root, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    settings, args = parse(argv)
    use_dummy_aws_env()
    environment = dict(os.environ)
    try:
        with workdir(args) as root:
            results = simulate(settings, root)
    except Exception as exc:  # the harness could not run: one line, no numbers
        print(f"{SCRIPT}: {type(exc).__name__}: {' '.join(str(exc).split())}", file=sys.stderr)
        return 1
    finally:
        os.environ.clear()
        os.environ.update(environment)
    write_results(args.output, results)
    print(
        f"{SCRIPT}: {results['topics']} topics, {results['runs']} runs ({results['runs_per_minute']}/min), "
        f"outcomes {results['outcomes']}, failed {results['failed_runs']}, double holders "
        f"{results['double_holders']}, lost {results['lost_records']}, "
        f"duplicate {results['duplicate_records']}",
        file=sys.stderr,
    )
    print(args.output)
    return 0 if results["invariants_ok"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
