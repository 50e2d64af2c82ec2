"""``leanops run``, ``status``, ``topics`` and ``output``: run a topic's state machine locally, see every
topic, its settings and its committed output."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from leanops.cli import EXIT_FAILED, run_command
from leanops.config import TopicConfig, TopicsFile, load_topics
from leanops.constants import ENV_CONFIG
from leanops.data import open_source
from leanops.data.late import late_objects
from leanops.errors import ConfigError, LeanopsError
from leanops.local.dynamodb_local import resolve_home
from leanops.local.session import open_local_session, use_project_home
from leanops.protocol import LockStatus, Protocol, TopicRef, TopicStatus
from leanops.sink_gc import claim_sink, collect_topic

STATE_MACHINE = "TopicRunStateMachine"
#: This many failed runs in a row (none ended well in between) mark a topic as failing in ``status``.
FAILING_STREAK = 2
config_option = click.option(
    "--config",
    "config",
    type=click.Path(dir_okay=False),
    help="Topics file (default: $LEANOPS_CONFIG or ./topics.yaml).",
)
json_option = click.option("--json", "as_json", is_flag=True, help="Print one JSON object on stdout.")


def load_project(config: str | None) -> TopicsFile:
    """The topics file, and the local state that goes with it (beside it, or ``$LEANOPS_HOME``)."""
    topics = load_topics(config)
    use_project_home(topics.path)
    return topics


def _template_for(topics: TopicsFile) -> Path:
    """The SAM template beside the topics file, else in the working directory: one source of truth."""
    for candidate in (topics.folder / "template.yaml", Path.cwd() / "template.yaml"):
        if candidate.is_file():
            return candidate
    raise ConfigError(
        f"no template.yaml beside {topics.path} or in {Path.cwd()}: run from the project folder"
    )


class Progress:
    """Prints states as they are entered and left, on stderr (stdout stays for --json)."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.entered: dict[str, Any] = {}

    def __call__(self, event: dict[str, Any]) -> None:
        kind = str(event["type"])
        if kind.endswith("StateEntered"):
            name = event["stateEnteredEventDetails"]["name"]
            self.entered[name] = event["timestamp"]
            self.console.print(f"  [cyan]→[/] {name}", highlight=False)
        elif kind.endswith("StateExited"):
            name = event["stateExitedEventDetails"]["name"]
            took = (event["timestamp"] - self.entered.pop(name, event["timestamp"])).total_seconds()
            self.console.print(f"  [green]✓[/] {name} [dim]{took:.2f}s[/]", highlight=False)
        elif kind in {"TaskFailed", "LambdaFunctionFailed", "TaskTimedOut", "ExecutionFailed"}:
            details: dict[str, Any] = next((v for k, v in event.items() if k.endswith("EventDetails")), {})
            self.console.print(f"  [red]✗[/] {kind}: {details.get('error')} {details.get('cause', '')[:200]}")


@click.command()
@click.argument("topic")
@config_option
@click.option("--name", "name", help="Execution name (default: <topic>-<UTC time>-<random>); must be unused.")
@json_option
@run_command
def run(topic: str, config: str | None, name: str | None, as_json: bool) -> None:
    """Run one execution of TOPIC's state machine locally: the real ASL and handlers, DynamoDB Local."""
    from leanops.local.runtime import LocalRuntime, unique_execution_name, validate_execution_name

    topics = load_project(config)
    settings = topics.topic(topic)  # an unknown topic is a usage error, before anything starts
    execution_name = validate_execution_name(name) if name else unique_execution_name(topic)
    template = _template_for(topics)
    console = Console(stderr=True)
    session = open_local_session()
    protocol = session.protocol()
    # A sink of another state or topic is a usage error: refused here, before an execution starts. (The CLI
    # never imports leanops.tasks: its Powertools logger would write to this process's stdout.)
    claim_sink(protocol, settings)
    logs = resolve_home() / "logs" / "functions.log"
    with LocalRuntime(template, log_to=logs, environment={ENV_CONFIG: str(topics.path)}) as runtime:
        execution = runtime.start(STATE_MACHINE, {"topic": topic}, execution_name)  # refuses a used name
        console.print(f"[bold]{topic}[/]: execution {execution_name} (handler logs: {logs})", highlight=False)
        result = runtime.wait(execution, Progress(console))
    output = result.output or {}
    checkpoint = protocol.read_checkpoint(TopicRef(topic)).to_json()
    checkpoint.pop("seq", None)
    report: dict[str, Any] = {
        "execution": result.execution_arn,
        "topic": topic,
        "status": result.status.value,
        "outcome": output.get("outcome"),
        "batches": output.get("batches", 0),
        "records": output.get("records", 0),
        "checkpoint": checkpoint,
        "states_entered": result.states_entered,
    }
    if not result.succeeded:
        report.update(error=result.error, cause=result.cause)
    if as_json:
        click.echo(json.dumps(report))
    if result.succeeded:
        console.print(
            f"[green]{report['outcome']}[/]: {report['batches']} batches, {report['records']} records; "
            f"checkpoint {checkpoint['position']}",
            highlight=False,
        )
        return
    console.print(f"[red]{result.status.value}[/]: {result.error}: {result.cause}", highlight=False)
    raise SystemExit(EXIT_FAILED)


def _late_json(protocol: Protocol, status: TopicStatus, config: TopicConfig) -> dict[str, Any]:
    """Late objects within the topic's look-back, or why they could not be looked for."""
    try:
        late = late_objects(protocol, status.topic, config, status.checkpoint.position)
    except LeanopsError as exc:
        return {"count": None, "keys": [], "error": str(exc)}
    return {"count": len(late), "keys": late[:20]}


def _status_json(status: TopicStatus, now_ms: int) -> dict[str, Any]:
    lock, checkpoint = status.lock, status.checkpoint
    failed = lock if lock is not None and lock.last_outcome == "failed" else None
    lag = None
    if checkpoint.last_ingested_ts is not None:
        lag = round(now_ms / 1000 - float(checkpoint.last_ingested_ts), 3)
    return {
        "topic": str(status.topic),
        "checkpoint": {**checkpoint.to_json(), "updated_at_ms": checkpoint.updated_at_ms},
        "lag_seconds": lag,
        "lock": {
            "state": status.lock_status.value,
            "holder": lock.owner if lock else None,
            "fence": lock.fence if lock else None,
            "lease_expires_at_ms": lock.lease_expires_at_ms if lock and lock.owner else None,
        },
        "last_run": {
            "execution": lock.last_owner if lock else None,
            "released_at_ms": lock.released_at_ms if lock else None,
            "outcome": lock.last_outcome if lock else None,
            "at_ms": lock.last_run_at_ms if lock else None,
            "error": failed.last_error if failed else None,
            "cause": failed.last_cause if failed else None,
            "failed_execution": failed.last_failed if failed else None,
            # Failed runs since the last one that ended well; from FAILING_STREAK on, the topic is failing.
            "consecutive_failures": lock.failures if lock else 0,
            "failing": bool(lock and lock.failures >= FAILING_STREAK),
        },
    }


def _when(ms: int | None) -> str:
    return "-" if ms is None else time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(ms / 1000))


@click.command()
@click.argument("topic", required=False)
@config_option
@json_option
@run_command
def status(topic: str | None, config: str | None, as_json: bool) -> None:
    """Checkpoint, lag, lock holder and lease expiry, and last run of every topic (or TOPIC)."""
    topics = load_project(config)
    names = [topics.topic(topic).name] if topic else sorted(topics.topics)
    protocol = open_local_session().protocol()
    now = protocol.clock()
    rows = []
    for name in names:
        state = protocol.status(TopicRef(name))
        rows.append(
            {**_status_json(state, now), "late_objects": _late_json(protocol, state, topics.topic(name))}
        )
    if as_json:
        click.echo(json.dumps(rows if topic is None else rows[0]))
        return
    table = Table(title=f"leanops topics ({topics.path.name})")
    columns = ("topic", "checkpoint", "seq", "lag", "lock", "holder", "lease until (UTC)", "last run", "late")
    for column in columns:
        table.add_column(column)
    colours = {
        LockStatus.FREE.value: "green",
        LockStatus.HELD.value: "yellow",
        LockStatus.EXPIRED.value: "red",
    }
    for row in rows:
        lock = row["lock"]
        table.add_row(
            row["topic"],
            str(row["checkpoint"]["position"] or "(beginning)"),
            str(row["checkpoint"]["seq"]),
            "-" if row["lag_seconds"] is None else f"{row['lag_seconds']:.0f}s",
            f"[{colours[lock['state']]}]{lock['state']}[/]",
            lock["holder"] or "-",
            _when(lock["lease_expires_at_ms"]),
            _last_run_cell(row["last_run"]),
            _late_cell(row["late_objects"]),
        )
    Console().print(table)


def _last_run_cell(last: dict[str, Any]) -> str:
    if last["outcome"] is None:
        return last["execution"] or "-"
    when = _when(last["at_ms"])
    if last["outcome"] != "failed":
        return f"[green]{last['outcome']}[/] {when}"
    streak = f" [bold red]failing x{last['consecutive_failures']}[/]" if last["failing"] else ""
    return f"[red]failed[/] {when}: {last['error']}{streak}"


def _late_cell(late: dict[str, Any]) -> str:
    if late["count"] is None:
        return f"[red]? {late['error']}[/]"
    if not late["count"]:
        return "[green]0[/]"
    return f"[red]{late['count']}[/]: " + ", ".join(late["keys"][:3]) + (" ..." if late["count"] > 3 else "")


@click.command()
@config_option
@json_option
@run_command
def topics(config: str | None, as_json: bool) -> None:
    """The topics of the topics file, with every setting resolved (defaults filled in, paths absolute)."""
    loaded = load_topics(config)
    rows = [loaded.topics[name].to_json() for name in sorted(loaded.topics)]
    if as_json:
        click.echo(json.dumps({"config": str(loaded.path), "topics": rows}))
        return
    table = Table(title=f"topics in {loaded.path}")
    for column in (
        "topic",
        "source",
        "sink",
        "processor",
        "batch",
        "lease",
        "max batches",
        "schedule",
        "ts field",
    ):
        table.add_column(column)
    for row in rows:
        table.add_row(
            row["name"],
            _endpoint_text(row["source"]),
            _endpoint_text(row["sink"]),
            row["processor"] or "(passthrough)",
            str(row["batch_size"]),
            f"{row['lease_seconds']}s",
            str(row["max_batches_per_run"]),
            row["schedule"] or "-",
            row["timestamp_field"] or "-",
        )
    Console().print(table)


def _endpoint_text(endpoint: dict[str, Any]) -> str:
    if endpoint["type"] == "dynamodb":
        return f"dynamodb {endpoint['table']} {endpoint['partition_key']}={endpoint['partition_value']}"
    extra = "" if "format" not in endpoint else f" ({endpoint['format']}, {endpoint['compression']})"
    return f"{endpoint['uri']}{extra}"


@click.command()
@click.argument("topic")
@config_option
@json_option
@run_command
def output(topic: str, config: str | None, as_json: bool) -> None:
    """TOPIC's committed output: the sink objects that commits name, oldest first. Objects in the sink
    that no commit names (a crashed or fenced-out attempt's) are not output; the next run removes them."""
    loaded = load_project(config)
    settings = loaded.topic(topic)
    protocol = open_local_session().protocol()
    records = [record.to_json() for record in protocol.outputs(TopicRef(topic))]
    if as_json:
        click.echo(json.dumps({"topic": topic, "sink": settings.sink.uri, "batches": records}))
        return
    table = Table(title=f"{topic}: committed output in {settings.sink.uri}")
    for column in ("seq", "object", "records", "written", "quarantined", "committed (UTC)"):
        table.add_column(column)
    for record in records:
        table.add_row(
            str(record["seq"]),
            record.get("object") or "-",
            str(record.get("records", 0)),
            str(record.get("written", 0)),
            str(record.get("quarantined", 0)),
            _when(record.get("committed_at_ms")),
        )
    Console().print(table)
    written = sum(int(r.get("written", 0)) for r in records)
    quarantined = sum(int(r.get("quarantined", 0)) for r in records)
    Console(stderr=True).print(
        f"{len(records)} batches, {written} records written, {quarantined} quarantined"
    )


@click.command()
@click.argument("topic")
@config_option
@click.option("--dry-run", is_flag=True, help="Say what would be deleted; delete nothing.")
@json_option
@run_command
def gc(topic: str, config: str | None, dry_run: bool, as_json: bool) -> None:
    """Delete TOPIC's sink objects that no commit names, where the state shows it is safe: attempts of
    settled batches, and of the current batch once the lock is free. Keeps the rest, saying why."""
    loaded = load_project(config)
    settings = loaded.topic(topic)
    protocol = open_local_session().protocol()
    sink = claim_sink(protocol, settings)  # never another state's sink
    collected = collect_topic(
        protocol, TopicRef(topic), sink, open_source(settings.source).stem, dry_run=dry_run
    )
    if as_json:
        click.echo(
            json.dumps({"topic": topic, "sink": settings.sink.uri, "dry_run": dry_run, **collected.to_json()})
        )
        return
    console = Console(stderr=True)
    verb = "would delete" if dry_run else "deleted"
    for name in collected.deleted:
        console.print(f"  {verb} {name}", highlight=False)
    for kept in collected.kept:
        console.print(f"  kept {kept['object']}: {kept['reason']}", highlight=False)
    console.print(
        f"{topic}: {verb} {len(collected.deleted)} orphans, kept {len(collected.kept)}", highlight=False
    )
