"""``leanops run``, ``history``, ``status``, ``topics``, ``output`` and ``gc``: run a topic's state machine
and follow it, see its executions, every topic's state, its settings and committed output, on the local
stack or a deployed one."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from leanops.config import TopicConfig
from leanops.data import open_source
from leanops.data.late import late_objects
from leanops.errors import ConfigError, LeanopsError
from leanops.protocol import LockStatus, Protocol, TopicRef, TopicStatus
from leanops.sink_gc import claim_sink, collect_topic
from leanopsctl import executions
from leanopsctl.cli import EXIT_FAILED, run_command
from leanopsctl.cli.common import backfill_option, backfill_view, json_option, states, target_options
from leanopsctl.executions import claim_execution_name, unique_execution_name, validate_execution_name
from leanopsctl.target import STATE_MACHINE, Target

Resolve = Callable[..., Target]

#: This many failed runs in a row (none ended well in between) mark a topic as failing in ``status``.
FAILING_STREAK = 2


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
@target_options
@click.option("--name", "name", help="Execution name (default: <topic>-<UTC time>-<random>); must be unused.")
@click.option("--no-wait", is_flag=True, help="Print the execution and return; do not follow it.")
@json_option
@run_command
def run(
    topic: str, target: Resolve, config: str | None, name: str | None, no_wait: bool, as_json: bool
) -> None:
    """Start an execution of TOPIC's state machine and follow it to its end (exit 0 when it succeeds).
    TOPIC/PARTITION runs one partition of a partitioned topic; TOPIC alone runs each of its partitions, an
    execution each."""
    resolved = target(topic)
    runs = states(resolved.topics, topic)  # an unknown topic is a usage error, before anything starts
    if name and len(runs) > 1:
        raise ConfigError(f"--name names one execution; {topic} starts {len(runs)} (one per partition)")
    started = []
    for state, settings in runs:
        execution_name = (
            validate_execution_name(name) if name else unique_execution_name(str(state).replace("/", "-"))
        )
        if resolved.local is not None:
            # A sink of another state or topic is a usage error: refused here, before an execution starts.
            # (The CLI never imports leanops.tasks: its Powertools logger would write to this process's
            # stdout.)
            claim_sink(resolved.protocol(), settings, topic=state)
        run_input = {"topic": state.topic}
        if state.partition is not None:
            run_input["partition"] = state.partition
        started.append((state, start_run(resolved, execution_name, run_input)))
    if no_wait:
        for state, arn in started:
            if as_json:
                click.echo(json.dumps({"execution": arn, "topic": str(state), "status": "RUNNING"}))
            else:
                click.echo(arn)
        return
    reports = [follow_run(resolved, arn, state, Console(stderr=True)) for state, arn in started]
    if as_json:
        click.echo(json.dumps(reports[0] if len(reports) == 1 else reports))
    if any(report["status"] != "SUCCEEDED" for report in reports):
        raise SystemExit(EXIT_FAILED)


def start_run(resolved: Target, execution_name: str, run_input: dict[str, Any]) -> str:
    """Start an execution of the topic-run state machine named ``execution_name``; its ARN."""
    if resolved.local is not None:
        # AWS refuses a name used in the last 90 days; the local stack forgets executions when it stops, so
        # the name is also claimed in the state table, which outlives it.
        arn = resolved.state_machine_arn.replace(":stateMachine:", ":execution:", 1) + f":{execution_name}"
        claim_execution_name(
            resolved.client("dynamodb"), resolved.table, STATE_MACHINE, execution_name, execution_arn=arn
        )
    return executions.start(
        resolved.client("stepfunctions"), resolved.state_machine_arn, execution_name, run_input
    )


def follow_run(resolved: Target, arn: str, state: TopicRef, console: Console) -> dict[str, Any]:
    """Follow the execution ``arn`` to its end, printing progress and its result on ``console``; its
    report (``status``, ``outcome``, ``batches``, ``records``, ``checkpoint``, ``error``, ...)."""
    where = f" (handler logs: {resolved.local.functions_log})" if resolved.local else ""
    name = arn.rsplit(":", 1)[-1]
    console.print(f"[bold]{state}[/]: execution {name} on {resolved.description}{where}", highlight=False)
    result = executions.follow(resolved.client("stepfunctions"), arn, Progress(console))
    output = result.output or {}
    checkpoint = output.get("checkpoint")
    if checkpoint is None:
        checkpoint = resolved.protocol().read_checkpoint(state).to_json()
    checkpoint = {k: v for k, v in checkpoint.items() if k != "seq"}
    report: dict[str, Any] = {
        "execution": arn,
        "topic": str(state),
        "status": result.status,
        "outcome": output.get("outcome"),
        "batches": output.get("batches", 0),
        "records": output.get("records", 0),
        "checkpoint": checkpoint,
        "states_entered": result.states_entered,
        "seconds": result.seconds,
    }
    if not result.succeeded:
        report.update(error=result.error, cause=result.cause)
        console.print(f"[red]{result.status}[/]: {result.error}: {result.cause}", highlight=False)
        return report
    console.print(
        f"[green]{report['outcome']}[/]: {report['batches']} batches, {report['records']} records; "
        f"checkpoint {checkpoint.get('position')}",
        highlight=False,
    )
    return report


@click.command()
@click.argument("topic")
@target_options
@click.option(
    "--limit", default=20, show_default=True, type=click.IntRange(1, 1000), help="Executions to show."
)
@click.option(
    "--examine",
    default=1000,
    show_default=True,
    type=click.IntRange(1, 100_000),
    help="Look at no more than this many recent executions (every topic shares the state machine).",
)
@json_option
@run_command
def history(topic: str, target: Resolve, config: str | None, limit: int, examine: int, as_json: bool) -> None:
    """TOPIC's recent executions, newest first: outcome, batches, records, checkpoint, error, duration
    (TOPIC/PARTITION: one partition's; TOPIC: every partition's)."""
    resolved = target(topic)
    states(resolved.topics, topic)  # an unknown topic or partition is a usage error
    name, _, partition = topic.partition("/")
    sfn = resolved.client("stepfunctions")
    found = executions.recent(
        sfn, resolved.state_machine_arn, name, limit=limit, examine=examine, partition=partition or None
    )
    rows = [_history_row(e) for e in found]
    if as_json:
        click.echo(json.dumps({"topic": topic, "executions": rows}))
        return
    table = Table(title=f"{topic}: recent executions on {resolved.description}")
    for column in (
        "started (UTC)",
        "execution",
        "partition",
        "status",
        "outcome",
        "batches",
        "records",
        "checkpoint",
        "took",
        "error",
    ):
        table.add_column(column)
    for row in rows:
        colour = (
            "green" if row["status"] == "SUCCEEDED" else "yellow" if row["status"] == "RUNNING" else "red"
        )
        table.add_row(
            row["started"] or "-",
            row["name"],
            row["partition"] or "-",
            f"[{colour}]{row['status']}[/]",
            row["outcome"] or "-",
            str(row["batches"] if row["batches"] is not None else "-"),
            str(row["records"] if row["records"] is not None else "-"),
            str(row["position"] or "-"),
            "-" if row["seconds"] is None else f"{row['seconds']:.1f}s",
            f"{row['error']}: {(row['cause'] or '')[:120]}" if row["error"] else "",
        )
    Console().print(table)
    if not rows:
        Console(stderr=True).print(
            f"no executions of {topic} among the {examine} most recent", highlight=False
        )


def _history_row(execution: executions.Execution) -> dict[str, Any]:
    output = execution.output or {}
    return {
        "execution": execution.arn,
        "name": execution.arn.rsplit(":", 1)[-1],
        "partition": execution.input.get("partition"),
        "status": execution.status,
        "started": execution.started.strftime("%Y-%m-%d %H:%M:%S") if execution.started else None,
        "seconds": execution.seconds,
        "outcome": output.get("outcome"),
        "batches": output.get("batches"),
        "records": output.get("records"),
        "position": (output.get("checkpoint") or {}).get("position"),
        "error": execution.error,
        "cause": execution.cause,
    }


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


def human_duration(seconds: float) -> str:
    """``45s``, ``12m 3s``, ``3h 12m``, ``2d 4h``: the two largest units."""
    whole = max(0, round(seconds))
    units = (("d", 86_400), ("h", 3_600), ("m", 60), ("s", 1))
    parts: list[str] = []
    for name, size in units:
        if whole >= size or (name == "s" and not parts):
            parts.append(f"{whole // size}{name}")
            whole %= size
        if len(parts) == 2 or (parts and whole == 0):
            break
    return " ".join(parts)


def _when(ms: int | None) -> str:
    return "-" if ms is None else time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(ms / 1000))


@click.command()
@click.argument("topic", required=False)
@target_options
@json_option
@run_command
def status(topic: str | None, target: Resolve, config: str | None, as_json: bool) -> None:
    """Checkpoint, lag, lock holder and lease expiry, and last run of every topic (or TOPIC)."""
    resolved = target(topic)
    topics = resolved.topics
    names = [topic] if topic else sorted(topics.topics)
    protocol = resolved.protocol()
    now = protocol.clock()
    rows = []
    for ref, settings in (found for name in names for found in states(topics, name)):
        state = protocol.status(ref)
        rows.append(
            {
                **_status_json(state, now),
                "backlog": _backlog(settings, state),
                "late_objects": _late_json(protocol, state, settings),
            }
        )
    if as_json:
        # One object for one state (TOPIC of an unpartitioned topic, or TOPIC/PARTITION); else a list.
        one = topic is not None and ("/" in topic or not topics.topic(topic).partitions)
        click.echo(json.dumps(rows[0] if one else rows))
        return
    table = Table(title=f"leanops topics ({topics.path.name})")
    columns = (
        "topic",
        "checkpoint",
        "seq",
        "lag",
        "backlog",
        "lock",
        "holder",
        "lease until (UTC)",
        "last run",
        "late",
    )
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
            "-" if row["lag_seconds"] is None else human_duration(row["lag_seconds"]),
            _backlog_cell(row),
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


def _object_cell(record: dict[str, Any]) -> str:
    if record.get("object"):
        return str(record["object"])
    if "kind" in record:  # an operator's checkpoint change
        return f"- ({record['kind']} to {record.get('position') or 'the beginning'})"
    return "-"


def _backlog(config: TopicConfig, status: TopicStatus) -> bool | None:
    """Whether the source holds records after the checkpoint (``None``: it could not be read)."""
    try:
        checkpoint = status.checkpoint
        resume = dict(checkpoint.resume) if checkpoint.resume is not None else None
        return open_source(config.source).has_records_after(checkpoint.position, resume)
    except LeanopsError:
        return None


def _backlog_cell(row: dict[str, Any]) -> str:
    """``yes`` / ``no``; when the last run ended well and records are still waiting (it stopped at its batch
    cap, or they landed after it), the next run has work: ``yes, after the last run``."""
    if row["backlog"] is None:
        return "[red]?[/]"
    if not row["backlog"]:
        return "[green]no[/]"
    if row["lock"]["state"] == "free" and row["last_run"]["outcome"] == "processed":
        return "[yellow]yes, after the last run[/]"
    return "[yellow]yes[/]"


def _late_cell(late: dict[str, Any]) -> str:
    if late["count"] is None:
        return f"[red]? {late['error']}[/]"
    if not late["count"]:
        return "[green]0[/]"
    return f"[red]{late['count']}[/]: " + ", ".join(late["keys"][:3]) + (" ..." if late["count"] > 3 else "")


def _endpoint_text(endpoint: dict[str, Any]) -> str:
    if endpoint["type"] == "dynamodb":
        return f"dynamodb {endpoint['table']} {endpoint['partition_key']}={endpoint['partition_value']}"
    extra = "" if "format" not in endpoint else f" ({endpoint['format']}, {endpoint['compression']})"
    return f"{endpoint['uri']}{extra}"


@click.command()
@click.argument("topic")
@target_options
@click.option("--all", "show_all", is_flag=True, help="Also the commits a rewind superseded.")
@click.option(
    "--archive",
    "with_archive",
    is_flag=True,
    help="Also the commits older than the state table keeps (the stack's OutputRecordDays), from the "
    "archive: locally <home>/archive; with --stack, the stack's Athena named query.",
)
@backfill_option
@json_option
@run_command
def output(
    topic: str,
    target: Resolve,
    config: str | None,
    show_all: bool,
    with_archive: bool,
    backfill_id: str | None,
    as_json: bool,
) -> None:
    """TOPIC's committed output: the sink objects that commits name, oldest first, and the operator's
    checkpoint changes among them. Objects that no commit names (a crashed or fenced-out attempt's) are not
    output, nor those of commits a rewind superseded (`--all` lists those too); `leanops gc` removes both.
    The table keeps the records of the last OutputRecordDays; `--archive` adds the older ones."""
    resolved = target(topic)
    protocol = resolved.protocol()
    state, settings = backfill_view(protocol, resolved.topics, topic, backfill_id)
    records = [r.to_json() for r in protocol.outputs(state)]
    if with_archive:
        records = _with_archived(resolved, state, records)
    records = [r for r in records if show_all or "superseded_by" not in r]
    if as_json:
        click.echo(json.dumps({"topic": str(state), "sink": settings.sink.uri, "batches": records}))
        return
    table = Table(title=f"{state}: committed output in {settings.sink.uri}")
    for column in ("seq", "object", "records", "written", "quarantined", "committed (UTC)"):
        table.add_column(column)
    for record in records:
        superseded = (
            f" [dim](superseded by seq {record['superseded_by']})[/]" if "superseded_by" in record else ""
        )
        table.add_row(
            str(record["seq"]),
            _object_cell(record) + superseded,
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


def _with_archived(resolved: Target, state: TopicRef, live: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``live`` records and the archived ones of ``state`` before them, by seq (a record seen in both
    during its deletion counts once, as the table has it)."""
    from leanopsctl.analytics import engine  # DuckDB and pyarrow: loaded for --archive only

    if resolved.local is None:
        from leanopsctl.analytics.athena import AthenaQueries

        athena = AthenaQueries.from_outputs(
            resolved.client("athena"), resolved.outputs or {}, resolved.description
        )
        rows = athena.run("outputs", engine.outputs_values(state.topic, state.partition))
    else:
        from leanopsctl.local.session import use_project_home

        rows = engine.archived_outputs(
            engine.local_archive_root(use_project_home(resolved.topics.path)), state.topic, state.partition
        )
    seen = {record["seq"] for record in live}
    archived = [_archived_record(row) for row in rows if int(row["seq"]) not in seen]
    # A rewind the table still holds supersedes the archived batches in its range, which it could not mark
    # (their records had expired); the archive's own rewinds were applied by the query.
    for rewind in (r for r in live if r.get("superseded_from") is not None):
        for record in archived:
            inside = rewind["superseded_from"] <= record["seq"] <= rewind["superseded_to"]
            if inside and record.get("kind") != "override" and "superseded_by" not in record:
                record.update(superseded_by=rewind["seq"], superseded_at_ms=rewind["committed_at_ms"])
    return sorted([*archived, *live], key=lambda record: int(record["seq"]))


def _archived_record(row: dict[str, Any]) -> dict[str, Any]:
    """An archived output row as ``leanops output`` shows a record (OutputRecord.to_json), marked archived."""
    record = {
        "seq": int(row["seq"]),
        "committed_at_ms": _epoch_ms(row["committed_at"]),
        "archived": True,
        **{name: row.get(name) for name in _ARCHIVED_FIELDS if row.get(name) is not None},
    }
    if row.get("record_kind") == "override":
        record["kind"] = "override"
    if row.get("superseded_by") is not None:
        record.update(
            superseded_by=int(row["superseded_by"]), superseded_at_ms=_epoch_ms(row.get("superseded_at"))
        )
    return record


#: The archived output columns ``leanops output`` shows as they are.
_ARCHIVED_FIELDS = (
    "position",
    "object",
    "quarantine",
    "stem",
    "attempt",
    "after",
    "records",
    "written",
    "quarantined",
    "source_keys",
    "fence",
    "owner",
    "action",
    "actor",
    "reason",
)


def _epoch_ms(value: Any) -> int | None:
    """Milliseconds since the epoch of an archive timestamp (naive UTC from DuckDB, aware from Athena)."""
    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return int(value.timestamp() * 1000)


@click.command()
@click.argument("topic")
@target_options
@click.option("--dry-run", is_flag=True, help="Say what would be deleted; delete nothing.")
@backfill_option
@json_option
@run_command
def gc(
    topic: str, target: Resolve, config: str | None, dry_run: bool, backfill_id: str | None, as_json: bool
) -> None:
    """Delete TOPIC's sink objects that no commit names, where the state shows it is safe: attempts of
    settled batches, and of the current batch once the lock is free. Keeps the rest, saying why."""
    resolved = target(topic)
    protocol = resolved.protocol()
    state, settings = backfill_view(protocol, resolved.topics, topic, backfill_id)
    sink = claim_sink(protocol, settings, topic=state)  # never another state's sink
    collected = collect_topic(protocol, state, sink, open_source(settings.source).stem, dry_run=dry_run)
    if as_json:
        click.echo(
            json.dumps(
                {"topic": str(state), "sink": settings.sink.uri, "dry_run": dry_run, **collected.to_json()}
            )
        )
        return
    console = Console(stderr=True)
    verb = "would delete" if dry_run else "deleted"
    for name in collected.deleted:
        console.print(f"  {verb} {name}", highlight=False)
    for kept in collected.kept:
        console.print(f"  kept {kept['object']}: {kept['reason']}", highlight=False)
    console.print(
        f"{state}: {verb} {len(collected.deleted)} orphans, kept {len(collected.kept)}", highlight=False
    )
