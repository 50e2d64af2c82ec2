"""``leanops report lag|runs|failures|prove``: SQL answers from the run history, with charts.

Locally, DuckDB runs each query (:mod:`leanopsctl.analytics`) over the local archive (``<home>/archive``)
and the items still in the state table; with ``--stack``, Athena runs the stack's named query of the same
text over the stack's archive.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from pathlib import Path
from types import ModuleType
from typing import Any, TypeVar

import click
from rich.console import Console
from rich.table import Table

from leanops import validation
from leanops.errors import ConfigError, InvalidInput, LeanopsError
from leanops.protocol.model import RUN_OUTCOMES, PushedTopic
from leanopsctl.analytics import jsonable, parse_since, query, window
from leanopsctl.analytics.athena import AthenaQueries
from leanopsctl.cli import run_command
from leanopsctl.cli.common import json_option, target_options
from leanopsctl.cli.pipeline import human_duration
from leanopsctl.local.session import use_project_home
from leanopsctl.target import Target

Resolve = Callable[..., Target]
F = TypeVar("F", bound=Callable[..., Any])

ATHENA_NOTE = (
    "With --stack, Athena runs the stack's named query over its archive only: items still in the state "
    "table (the runs and commits of the last days, until their retention ends) are not in it."
)


def plain_position(position: str) -> str:
    """A DynamoDB number position as a plain decimal (``N:1e3`` -> ``N:1000``, as DynamoDB writes its
    numbers, and the ``prove`` query compares them); any other position as it is."""
    if not position.startswith("N:") or "e" not in position.lower():
        return position
    try:
        number = Decimal(position[2:])
    except InvalidOperation:
        return position
    return position if not number.is_finite() else f"N:{number:f}"


def _report_options(command: F) -> F:
    """``--since``, ``--topic``, ``--json`` and the target options every report takes."""
    for option in reversed(
        (
            target_options,
            click.option(
                "--since",
                "since_text",
                default="7d",
                show_default=True,
                help="From when: a duration back from now (7d, 24h, 90m, 2w), or an ISO date or time (UTC).",
            ),
            click.option("--topic", "topic", help="Only this topic (default: every topic)."),
            json_option,
        )
    ):
        command = option(command)
    return command


@click.group(epilog=ATHENA_NOTE)
def report() -> None:
    """SQL answers from the run history: lag, runs, failures, and which run committed what.

    Locally: DuckDB over the archive (<home>/archive, what the state table's TTL removed) and the items still
    in the state table."""


def _gather(
    target: Resolve, since_text: str, topic: str | None, names: Sequence[str], extra: Mapping[str, Any]
) -> tuple[dict[str, list[dict[str, Any]]], datetime, str]:
    """Run the queries ``names``: their rows by name, the start of the window, and where they ran."""
    since = parse_since(since_text, datetime.now(UTC))  # bad input is refused before anything starts
    if topic is not None:
        validation.topic_name(topic)
    resolved = target()
    _check_topic(resolved, topic)
    values = {**window(since, topic), **extra}
    if resolved.local is None:
        athena = AthenaQueries.from_outputs(
            resolved.client("athena"), resolved.outputs or {}, resolved.description
        )
        return {name: athena.run(name, values) for name in names}, since, f"Athena, {resolved.description}"
    engine = _engine()
    kinds = {kind for name in names for kind in query(name).tables}
    pushed = _pushed(resolved)
    topics = [topic] if topic else sorted(set(resolved.topics.topics) | set(pushed))
    partitions = {
        name: resolved.topics.topics[name].partitions
        if name in resolved.topics.topics
        else pushed[name].settings.get("partitions") or ()
        for name in topics
        if name in resolved.topics.topics or name in pushed
    }
    items = engine.live_items(
        resolved.client("dynamodb"), resolved.table, topics, kinds, partitions=partitions
    )
    root = engine.local_archive_root(use_project_home(resolved.topics.path))
    with engine.History(root, items, kinds) as history:
        results = {name: history.run(query(name), values) for name in names}
    return results, since, f"{root} and the state table"


def _engine() -> ModuleType:
    """DuckDB and pyarrow, loaded for a local report only (every other command starts without them)."""
    try:
        from leanopsctl.analytics import engine
    except ModuleNotFoundError as exc:
        raise LeanopsError(f"leanops report needs {exc.name}: pip install duckdb pyarrow matplotlib") from exc
    return engine


def _charts() -> ModuleType:
    """matplotlib, loaded for --png only."""
    try:
        from leanopsctl.analytics import charts
    except ModuleNotFoundError as exc:
        raise LeanopsError(f"leanops report --png needs {exc.name}: pip install matplotlib") from exc
    return charts


def _pushed(resolved: Target) -> dict[str, PushedTopic]:
    return {pushed.name: pushed for pushed in resolved.protocol().store.pushed_topics()}


def _check_topic(resolved: Target, topic: str | None) -> None:
    """A topic of the topics file, or one pushed to the state table; else a usage error."""
    if topic is None or topic in resolved.topics.topics:
        return
    if resolved.protocol().store.read_pushed_topic(topic) is None:
        known = ", ".join(sorted(resolved.topics.topics)) or "none"
        raise ConfigError(
            f"unknown topic {topic!r}: not in {resolved.topics.path} (topics: {known}), nor pushed to "
            f"{resolved.description}"
        )


def _emit_json(
    report_name: str, since: datetime, topic: str | None, where: str, results: Mapping[str, Any]
) -> None:
    document = {
        "report": report_name,
        "since": jsonable(since.replace(tzinfo=None)),
        "topic": topic,
        "where": where,
        **{
            name: [{k: jsonable(v) for k, v in row.items()} for row in rows] for name, rows in results.items()
        },
    }
    click.echo(json.dumps(document))


def _nothing(what: str, since: datetime, topic: str | None, where: str) -> None:
    scope = f"topic {topic}" if topic else "any topic"
    Console(stderr=True).print(
        f"no {what} of {scope} since {_time(since)} UTC (in {where})", highlight=False, soft_wrap=True
    )


def _time(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S")
    return str(value)


def _duration(seconds: Any) -> str:
    return "-" if seconds is None else human_duration(float(seconds))


def _subtitle(topic: str | None, since: datetime) -> str:
    return f"{'topic ' + topic if topic else 'every topic'}, since {since.strftime('%Y-%m-%d %H:%M')} UTC"


def _png(figure: Any, path: str) -> None:
    _charts().save_png(figure, Path(path))
    click.echo(f"wrote {path}", err=True)  # one line whatever the terminal's width: scripts read it


png_option = click.option(
    "--png",
    "png",
    type=click.Path(dir_okay=False, writable=True),
    help="Also draw the chart into this PNG file.",
)


@report.command(epilog=ATHENA_NOTE)
@_report_options
@png_option
@run_command
def lag(
    target: Resolve, config: str | None, since_text: str, topic: str | None, as_json: bool, png: str | None
) -> None:
    """Average and 95th percentile lag per topic per hour: the age of the newest committed record when each
    run ended (a backfill's runs left out). --png draws the hourly average, one line per topic."""
    results, since, where = _gather(target, since_text, topic, ["lag"], {})
    rows = results["lag"]
    if as_json:
        _emit_json("lag", since, topic, where, results)
    elif rows:
        table = Table(title=f"Lag per topic per hour ({_subtitle(topic, since)})")
        for column in ("hour (UTC)", "topic", "runs", "average lag", "p95 lag", "max lag"):
            table.add_column(column, justify="right" if column != "topic" else "left")
        for row in rows:
            table.add_row(
                _time(row["hour"])[:16],
                row["topic"],
                str(row["runs"]),
                _duration(row["avg_lag_seconds"]),
                _duration(row["p95_lag_seconds"]),
                _duration(row["max_lag_seconds"]),
            )
        Console().print(table)
    if not rows:
        _nothing("runs with a lag", since, topic, where)
        return
    if png:
        # to the end of this hour: the current hour's point is drawn whole
        end = datetime.now(UTC).replace(tzinfo=None, minute=0, second=0, microsecond=0) + timedelta(hours=1)
        window = (since.astimezone(UTC).replace(tzinfo=None), end)
        _png(_charts().lag_figure(rows, subtitle=_subtitle(topic, since), window=window), png)


@report.command(epilog=ATHENA_NOTE)
@_report_options
@png_option
@run_command
def runs(
    target: Resolve, config: str | None, since_text: str, topic: str | None, as_json: bool, png: str | None
) -> None:
    """Runs per topic per day (UTC, the day a run started) by outcome. --png draws runs per day, stacked by
    outcome."""
    results, since, where = _gather(target, since_text, topic, ["runs"], {})
    rows = results["runs"]
    if as_json:
        _emit_json("runs", since, topic, where, results)
    elif rows:
        per_day: dict[tuple[str, str], dict[str, int]] = defaultdict(dict)
        for row in rows:
            per_day[(str(row["day"]), str(row["topic"]))][str(row["outcome"])] = int(row["runs"])
        seen = {outcome for counts in per_day.values() for outcome in counts}
        outcomes = [o for o in RUN_OUTCOMES if o in seen] + sorted(seen - set(RUN_OUTCOMES))
        table = Table(title=f"Runs per day by outcome ({_subtitle(topic, since)})")
        for column in ("day (UTC)", "topic", "runs", *outcomes):
            table.add_column(column, justify="left" if column in ("day (UTC)", "topic") else "right")
        for (day, name), counts in sorted(per_day.items()):
            table.add_row(
                day, name, str(sum(counts.values())), *(str(counts.get(outcome, 0)) for outcome in outcomes)
            )
        Console().print(table)
    if not rows:
        _nothing("runs", since, topic, where)
        return
    if png:
        _png(_charts().runs_figure(rows, subtitle=_subtitle(topic, since)), png)


@report.command(epilog=ATHENA_NOTE)
@_report_options
@run_command
def failures(target: Resolve, config: str | None, since_text: str, topic: str | None, as_json: bool) -> None:
    """Failed runs by error type, and the time each took to recover: until the topic's next run that ended
    processed or up_to_date."""
    results, since, where = _gather(target, since_text, topic, ["failures", "recovery"], {})
    if as_json:
        _emit_json("failures", since, topic, where, results)
        return
    if not results["failures"]:
        _nothing("failed runs", since, topic, where)
        return
    by_error = Table(title=f"Failed runs by error ({_subtitle(topic, since)})")
    for column in ("topic", "error", "failures", "first (UTC)", "last (UTC)", "last cause"):
        by_error.add_column(column, justify="right" if column == "failures" else "left")
    for row in results["failures"]:
        by_error.add_row(
            row["topic"],
            row["error_type"],
            str(row["failures"]),
            _time(row["first_at"]),
            _time(row["last_at"]),
            (row["last_cause"] or "")[:120],
        )
    recovery = Table(title="Time to recover after each failed run")
    for column in ("topic", "failed at (UTC)", "error", "recovered at (UTC)", "time to recover"):
        recovery.add_column(column, justify="right" if column == "time to recover" else "left")
    for row in results["recovery"]:
        name = row["topic"] + (f"/{row['partition']}" if row.get("partition") else "")
        recovered = row["recovered_at"] is not None
        recovery.add_row(
            name,
            _time(row["failed_at"]),
            row["error_type"],
            _time(row["recovered_at"]) if recovered else "[red]not yet[/]",
            _duration(row["recover_seconds"]) if recovered else "-",
        )
    console = Console()
    console.print(by_error)
    console.print(recovery)


@report.command(epilog=ATHENA_NOTE)
@_report_options
@click.option(
    "--position",
    "position",
    help="A source position: part-0001.jsonl#700 (files), N:17 or S:EVT#15 (a DynamoDB source's sort key).",
)
@click.option(
    "--object", "object_name", help="An object: a batch's output or quarantine, or a source key it read."
)
@run_command
def prove(
    target: Resolve,
    config: str | None,
    since_text: str,
    topic: str | None,
    as_json: bool,
    position: str | None,
    object_name: str | None,
) -> None:
    """Which run committed a source position (the batch whose range holds it: after < POSITION <= its end,
    in the source's order: a files position by object key then line offset, N: by number, S: as a whole
    string) or an object, when, with which fence, by which execution, its output, and whether it is still
    output (a rewind supersedes it). Give --since far enough back (e.g. 2025-01-01): a batch committed before
    it is not looked at."""
    if position is None and object_name is None:
        raise InvalidInput("give --position or --object: what to find the commit of")
    if position is not None:
        position = plain_position(position)
    results, since, where = _gather(
        target, since_text, topic, ["prove"], {"position": position, "object": object_name}
    )
    rows = results["prove"]
    if as_json:
        _emit_json("prove", since, topic, where, results)
        return
    if not rows:
        what = " and ".join(
            f"{name} {value}" for name, value in (("position", position), ("object", object_name)) if value
        )
        _nothing(f"commit of {what}", since, topic, where)
        return
    table = Table(title=f"Commits of {position or object_name} ({_subtitle(topic, since)})")
    for column in ("topic", "seq", "committed (UTC)", "execution", "fence", "range", "output", "run"):
        table.add_column(column)
    for row in rows:
        name = row["topic"] + (f"/{row['partition']}" if row.get("partition") else "")
        superseded = (
            f" [yellow](superseded by seq {row['superseded_by']}: no longer output)[/]"
            if row["superseded_by"] is not None
            else " [green](still output)[/]"
        )
        run_text = (
            f"{row['run_outcome']} {_time(row['run_started_at'])} - {_time(row['run_ended_at'])}"
            if row["run_outcome"]
            else "[dim]no run record[/]"
        )
        table.add_row(
            name,
            str(row["seq"]) + superseded,
            _time(row["committed_at"]),
            str(row["execution"] or "-"),
            str(row["fence"] if row["fence"] is not None else "-"),
            f"{row['after'] or '(beginning)'} .. {row['position']}",
            f"{row['object'] or '-'} ({row['written'] or 0} written, {row['quarantined'] or 0} quarantined)",
            run_text,
        )
    Console().print(table)
