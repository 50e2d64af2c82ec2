"""``leanops archive replay``: archive the batches the archive function's event source mapping gave up on,
from the table's stream (:mod:`leanopsctl.archive_replay`, docs/decisions/0014)."""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Callable, Iterator
from typing import Any

import click

from leanops.config import load_topics
from leanops.data.storage import LocalStore, ObjectStore, S3Store, open_store
from leanops.errors import ConfigError
from leanopsctl.archive_replay import (
    OUTPUT_ARCHIVE_ROOT,
    OUTPUT_DEAD_LETTER_QUEUE,
    DeadLetterFile,
    DeadLetterQueue,
    DeadLetters,
    RangeReader,
    ReplayReport,
    local_mapping,
    local_reader,
    replay,
    stack_reader,
)
from leanopsctl.cli import EXIT_FAILED, run_command
from leanopsctl.cli.common import json_option, target_options
from leanopsctl.local.session import use_project_home
from leanopsctl.local.streams import archive_root
from leanopsctl.target import Target

Resolve = Callable[..., Target]


@click.group()
def archive() -> None:
    """The history archive: the state table's expired run, output, audit and config records, as Parquet."""


@archive.command("replay")
@target_options
@json_option
@run_command
def replay_command(target: Resolve, config: str | None, as_json: bool) -> None:
    """Archive the batches the archive function gave up on, from the table's stream.

    Reads the on-failure records (the stack's ArchiveDeadLetterQueue; locally
    <home>/archive-dead-letters.jsonl), archives each one's shard range, and deletes the record once its
    range is archived in full. A range whose records have left the stream (after 24 hours) cannot be
    replayed: it is reported and kept (exit 1). Replaying again adds nothing."""
    if click.get_current_context().params.get("stack") is None:
        home = use_project_home(load_topics(config).path)
        if not DeadLetterFile(home).lines():  # nothing to replay: no need to start the local stack
            _report(ReplayReport(str(DeadLetterFile(home).path), str(archive_root(home))), as_json)
            return
    letters, read, store = _sources(target())
    with _logs_on_stderr():
        report = replay(
            letters,
            read,
            store,
            progress=lambda line: click.echo(line, err=True),
            failed=lambda line: click.echo(f"leanops: not replayed: {line}", err=True),
        )
    _report(report, as_json)
    if report.left:
        raise SystemExit(EXIT_FAILED)


def _sources(resolved: Target) -> tuple[DeadLetters, RangeReader, ObjectStore]:
    """Where the on-failure records are, how their ranges are read, and the archive."""
    if resolved.local is not None:
        home = use_project_home(resolved.topics.path)
        return (
            DeadLetterFile(home),
            local_reader(local_mapping(resolved.local, home)),
            LocalStore(archive_root(home)),
        )
    outputs = resolved.outputs or {}
    missing = [name for name in (OUTPUT_DEAD_LETTER_QUEUE, OUTPUT_ARCHIVE_ROOT) if not outputs.get(name)]
    if missing:
        raise ConfigError(
            f"{resolved.description} has no {' or '.join(missing)} output: deploy this version of the "
            "template first (`sam build && sam deploy`)"
        )
    root = outputs[OUTPUT_ARCHIVE_ROOT]
    store = S3Store(root, client=resolved.client("s3")) if root.startswith("s3://") else open_store(root)
    return (
        DeadLetterQueue(resolved.client("sqs"), outputs[OUTPUT_DEAD_LETTER_QUEUE]),
        stack_reader(resolved.client("dynamodbstreams")),
        store,
    )


@contextlib.contextmanager
def _logs_on_stderr() -> Iterator[None]:
    """The archive's own log lines (Powertools, on stdout in a function) on stderr here: stdout is the
    summary's."""
    from leanops.observability import logger

    handler: Any = logger.registered_handler
    previous = handler.setStream(sys.stderr) if hasattr(handler, "setStream") else None
    try:
        yield
    finally:
        if previous is not None:
            handler.setStream(previous)


def _report(report: ReplayReport, as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(report.to_json()))
        return
    click.echo(
        f"replayed {report.ranges_replayed} range(s) from {report.source}: {report.records_archived} "
        f"record(s) archived in {report.objects_written} object(s) under {report.archive}; "
        f"{report.ranges_left} range(s) left"
    )
