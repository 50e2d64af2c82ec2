"""``leanops backfill``: replay a bounded range of a topic's source into another sink, under a state of its
own, never moving the topic's checkpoint (decision 0009). Running the same command again resumes it."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from leanops.config import Endpoint, TopicConfig, files_sink, overlap
from leanops.data import open_source
from leanops.data.dynamodb_source import DynamoDBSource
from leanops.errors import ConfigError, LeanopsError
from leanops.protocol import Backfill, Protocol, TopicRef
from leanops.protocol.model import range_text
from leanops.sink_gc import check_sink, claim_sink
from leanopsctl.cli import EXIT_FAILED, run_command
from leanopsctl.cli.common import json_option, target_options
from leanopsctl.cli.ops import actor
from leanopsctl.cli.pipeline import follow_run, start_run
from leanopsctl.executions import unique_execution_name
from leanopsctl.target import Target

Resolve = Callable[..., Target]


@click.command()
@click.argument("topic")
@target_options
@click.option("--from", "start", help="Replay the records after this position (default: the beginning).")
@click.option("--to", "end", help="...up to this position, as a checkpoint there (default: TOPIC's now).")
@click.option("--sink", "sink", help="A folder or s3://bucket/prefix of the backfill's own (required).")
@click.option("--reason", help="Why: kept in TOPIC's audit record (default: what is replayed where).")
@click.option("--list", "list_only", is_flag=True, help="List TOPIC's backfills and how far each got.")
@click.option("--no-wait", is_flag=True, help="Start one execution and return; do not follow it.")
@json_option
@run_command
def backfill(
    topic: str,
    target: Resolve,
    config: str | None,
    start: str | None,
    end: str | None,
    sink: str | None,
    reason: str | None,
    list_only: bool,
    no_wait: bool,
    as_json: bool,
) -> None:
    """Replay TOPIC's records after --from up to --to into --sink, with TOPIC's processor, under a state
    of its own: TOPIC's checkpoint, lock and sink are never touched. Runs executions until the range is
    done (each stops at the topic's batch cap); the same command again resumes an unfinished backfill."""
    resolved = target(topic)
    settings = resolved.topics.topic(topic)
    protocol = resolved.protocol()
    if list_only:
        if any(value is not None for value in (start, end, sink, reason)) or no_wait:
            raise ConfigError(
                "--list lists backfills: it takes no --from, --to, --sink, --reason or --no-wait"
            )
        _list(protocol, settings, as_json)
        return
    if sink is None:
        raise ConfigError("--sink is required: the folder or s3://bucket/prefix the backfill writes to")
    if settings.partitions:
        raise ConfigError(
            f"topic {topic} is partitioned: backfills of partitioned topics are not supported yet (rewind a "
            f"partition instead: `leanops checkpoint rewind {topic}/<partition> --to-seq N`)"
        )
    defined = _define(resolved, protocol, settings, start, end, sink, reason)
    state, replay = defined.ref, settings.for_backfill(defined)
    if resolved.local is not None:  # a sink of another topic or backfill: refused before anything starts
        claim_sink(protocol, replay, topic=state)
    console = Console(stderr=True)
    console.print(
        f"[bold]{state}[/]: replaying {topic} {defined.range_text} into {defined.sink}",
        highlight=False,
    )
    reports: list[dict[str, Any]] = []
    while True:
        name = unique_execution_name(f"{topic}-{defined.id}")
        arn = start_run(resolved, name, {"topic": topic, "backfill": defined.id})
        if no_wait:
            click.echo(
                json.dumps({"execution": arn, "backfill": defined.id, "status": "RUNNING"})
                if as_json
                else arn
            )
            return
        report = follow_run(resolved, arn, state, console)
        reports.append(report)
        # A run that processed may have stopped at its batch cap: go on until one finds nothing left.
        if report["status"] != "SUCCEEDED" or report["outcome"] != "processed":
            break
    last = reports[-1]
    complete = last["status"] == "SUCCEEDED" and last["outcome"] == "up_to_date"
    summary = {
        "backfill": defined.to_json(),
        "complete": complete,
        "executions": reports,
        "batches": sum(int(r["batches"] or 0) for r in reports),
        "records": sum(int(r["records"] or 0) for r in reports),
        "checkpoint": protocol.read_checkpoint(state).position,
    }
    if as_json:
        click.echo(json.dumps(summary))
    if complete:
        console.print(
            f"[green]backfill {defined.id} of {topic} complete[/]: {summary['records']} records in "
            f"{summary['batches']} batches this time; output in {defined.sink}",
            highlight=False,
        )
    elif last["status"] == "SUCCEEDED":  # skipped_locked: another run of this backfill holds its lock
        console.print(
            f"[yellow]backfill {defined.id} not finished[/]: {last['outcome']}; run the same command again "
            "to resume it",
            highlight=False,
        )
    else:
        raise SystemExit(EXIT_FAILED)


def _define(
    resolved: Target,
    protocol: Protocol,
    settings: TopicConfig,
    start: str | None,
    end: str | None,
    sink: str,
    reason: str | None,
) -> Backfill:
    """The backfill into ``sink``: defined now, or the one defined before with the same bounds (resumed).
    Every refusal happens before anything is written."""
    endpoint = files_sink(sink, like=settings.sink, folder=Path.cwd(), where="--sink")
    if resolved.local is None and not endpoint.is_s3:
        raise ConfigError(
            f"--sink {sink}: a deployed stack's functions write to S3 only: give s3://bucket/prefix"
        )
    topic = TopicRef(settings.name)
    backfill_id = Backfill.id_for(settings.name, endpoint.uri)
    _refuse_shared_sink(resolved, protocol, endpoint, backfill_id)
    source = open_source(settings.source)
    existing = protocol.read_backfill(topic, backfill_id)
    if existing is not None:
        if not _same_bounds(source.order, (start, end), existing):
            raise ConfigError(
                f"sink {endpoint.uri} holds backfill {existing.id} of {settings.name}, "
                f"{existing.range_text}: give the same bounds (or none) to resume it, or another --sink"
            )
        return existing
    # A sink that runs would refuse (another state's, or holding output it never wrote) is refused now,
    # before a definition ties the sink to these bounds.
    check_sink(protocol, replace(settings, sink=endpoint), topic=TopicRef(settings.name, backfill_id))
    if end is not None and settings.source.min_age_seconds is not None:
        _refuse_a_young_end(protocol, settings, end)
    if end is None:
        end = protocol.read_checkpoint(topic).position
        if end is None:
            raise ConfigError(
                f"{settings.name} has committed nothing yet, so --to has no default: give --to POSITION"
            )
    defined, _ = protocol.define_backfill(
        topic,
        start=start,
        end=end,
        sink=endpoint.uri,
        format=endpoint.format,
        compression=endpoint.compression,
        actor=actor(resolved),
        reason=reason or f"replay {range_text(start, end)} into {endpoint.uri}",
        order=source.order,
    )
    if not _same_bounds(source.order, (start, end), defined):  # another command defined it meanwhile
        raise ConfigError(
            f"sink {endpoint.uri} holds backfill {defined.id} of {settings.name}, {defined.range_text}, "
            "defined meanwhile: give its bounds to resume it, or another --sink"
        )
    return defined


def _refuse_a_young_end(protocol: Protocol, settings: TopicConfig, end: str) -> None:
    """A backfill of a ``min_age_seconds`` source ends where its items are that old: items up to a younger
    end (one past the source's bound now, in the source's own order) may still land, and the backfill would
    be complete without them."""
    source = open_source(settings.source, protocol.clock)
    bound = source.bound() if isinstance(source, DynamoDBSource) else None
    if bound is not None and source.order(end) > source.order(bound):
        raise ConfigError(
            f"--to {end} is past what the source's min_age_seconds ({settings.source.min_age_seconds}) lets "
            f"a run read now: items up to it may still land; give an end at or before {bound}"
        )


def _same_bounds(
    order: Callable[[str], Any], asked: tuple[str | None, str | None], defined: Backfill
) -> bool:
    """Whether the bounds asked for (None: as defined) are the definition's, in the source's own order
    (``#02`` is ``#2``; ``N:1.50`` is ``N:1.5``)."""
    start, end = asked
    same_start = start is None or (defined.start is not None and order(start) == order(defined.start))
    return same_start and (end is None or order(end) == order(defined.end))


def _refuse_shared_sink(resolved: Target, protocol: Protocol, sink: Endpoint, backfill_id: str) -> None:
    """A backfill's sink is its own: it may not overlap any topic's source or sink, nor another backfill's
    sink (one inside another would list, and clean up, the other's objects)."""
    for name, other in sorted(resolved.topics.topics.items()):
        for role, endpoint in (("sink", other.sink), ("source", other.source)):
            if overlap(sink, endpoint):
                raise ConfigError(
                    f"--sink {sink.uri} overlaps the {role} of topic {name} ({endpoint.uri}): a backfill "
                    "writes a sink of its own, outside every topic's folders"
                )
        for found in protocol.backfills(TopicRef(name)):
            if found.id != backfill_id and overlap(sink, replace(sink, uri=found.sink)):
                raise ConfigError(
                    f"--sink {sink.uri} overlaps the sink of backfill {found.id} of {name} ({found.sink}): "
                    "give this backfill a sink of its own, outside every other"
                )


def _list(protocol: Protocol, settings: TopicConfig, as_json: bool) -> None:
    rows = []
    for found in protocol.backfills(TopicRef(settings.name)):
        checkpoint = protocol.read_checkpoint(found.ref)
        try:
            left = open_source(settings.for_backfill(found).source).has_records_after(checkpoint.position)
        except LeanopsError:
            left = None  # the source could not be read: shown as unknown
        rows.append(
            {
                **found.to_json(),
                "checkpoint": checkpoint.position,
                "complete": None if left is None else not left,
            }
        )
    if as_json:
        click.echo(json.dumps({"topic": settings.name, "backfills": rows}))
        return
    table = Table(title=f"{settings.name}: backfills")
    for column in ("id", "after", "up to", "sink", "checkpoint", "complete", "by"):
        table.add_column(column)
    for row in rows:
        done = {True: "[green]yes[/]", False: "[yellow]no[/]", None: "[red]?[/]"}[row["complete"]]
        table.add_row(
            row["id"],
            row["start"] or "(beginning)",
            row["end"],
            row["sink"],
            row["checkpoint"] or "-",
            done,
            row["actor"],
        )
    Console().print(table)
    if not rows:
        Console(stderr=True).print(f"{settings.name} has no backfills", highlight=False)
