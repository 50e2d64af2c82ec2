"""``leanops run`` and ``leanops status``: run a topic's state machine locally and see every topic."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from leanops.cli import EXIT_FAILED, run_command
from leanops.config import TopicsFile, load_topics
from leanops.constants import ENV_CONFIG
from leanops.errors import ConfigError
from leanops.local.dynamodb_local import resolve_home
from leanops.local.session import open_local_session
from leanops.protocol import LockStatus, TopicRef, TopicStatus

STATE_MACHINE = "TopicRunStateMachine"
config_option = click.option(
    "--config",
    "config",
    type=click.Path(dir_okay=False),
    help="Topics file (default: $LEANOPS_CONFIG or ./topics.yaml).",
)
json_option = click.option("--json", "as_json", is_flag=True, help="Print one JSON object on stdout.")


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

    topics = load_topics(config)
    topics.topic(topic)  # an unknown topic is a usage error, before anything starts
    execution_name = validate_execution_name(name) if name else unique_execution_name(topic)
    template = _template_for(topics)
    console = Console(stderr=True)
    session = open_local_session()
    logs = resolve_home() / "logs" / "functions.log"
    with LocalRuntime(template, log_to=logs, environment={ENV_CONFIG: str(topics.path)}) as runtime:
        execution = runtime.start(STATE_MACHINE, {"topic": topic}, execution_name)  # refuses a used name
        console.print(f"[bold]{topic}[/]: execution {execution_name} (handler logs: {logs})", highlight=False)
        result = runtime.wait(execution, Progress(console))
    output = result.output or {}
    checkpoint = session.protocol().read_checkpoint(TopicRef(topic)).to_json()
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


def _status_json(status: TopicStatus, now_ms: int) -> dict[str, Any]:
    lock, checkpoint = status.lock, status.checkpoint
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
    topics = load_topics(config)
    names = [topics.topic(topic).name] if topic else sorted(topics.topics)
    protocol = open_local_session().protocol()
    now = protocol.clock()
    rows = [_status_json(protocol.status(TopicRef(name)), now) for name in names]
    if as_json:
        click.echo(json.dumps(rows if topic is None else rows[0]))
        return
    table = Table(title=f"leanops topics ({topics.path.name})")
    for column in ("topic", "checkpoint", "seq", "lag", "lock", "holder", "lease until (UTC)", "last run"):
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
            row["last_run"]["execution"] or "-",
        )
    Console().print(table)
