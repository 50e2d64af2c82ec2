"""``leanops local up|down|status|logs``: the project's local stack (design §5): DynamoDB Local, and Step
Functions, Lambda, S3 and Scheduler on one local endpoint. Its state lives in ``.leanops`` beside the
topics file, or ``$LEANOPS_HOME``."""

from __future__ import annotations

import os
import time
from pathlib import Path

import click

from leanops.config import load_topics
from leanopsctl.cli import run_command
from leanopsctl.cli.common import config_option
from leanopsctl.local import dynamodb_local
from leanopsctl.local.pool import DEFAULT_CONCURRENCY
from leanopsctl.local.session import use_project_home
from leanopsctl.local.stack import (
    FUNCTIONS_LOG,
    LOG_DIR,
    StackRecord,
    running_stack,
    stack_down,
    stack_file,
    stack_up,
)
from leanopsctl.target import template_for


def _home(config: str | None) -> tuple[Path, Path]:
    """The project's topics file and its local state folder."""
    topics = load_topics(config)
    return topics.path, use_project_home(topics.path)


def _shown(path: Path | str) -> str:
    """``path`` relative to the working directory when inside it (``.leanops/dynamodb``), else absolute."""
    path = Path(path)
    try:
        return os.path.relpath(path) if path.is_relative_to(Path.cwd()) else str(path)
    except ValueError:  # another drive (Windows)
        return str(path)


@click.group()
def local() -> None:
    """Start, stop and inspect the project's local stack (state in .leanops beside the topics file, or
    $LEANOPS_HOME)."""


@local.command()
@config_option
@click.option(
    "--schedules", is_flag=True, help="Fire each topic's rate(...) schedule, as EventBridge Scheduler."
)
@click.option(
    "--concurrency",
    default=DEFAULT_CONCURRENCY,
    show_default=True,
    type=click.IntRange(1, 256),
    help="Warm environments per function (Lambda's concurrency limit).",
)
@run_command
def up(config: str | None, schedules: bool, concurrency: int) -> None:
    """Start the local stack in the background, or reuse the running one, and print its endpoints."""
    topics_path, home = _home(config)
    record, started = stack_up(
        home,
        topics_path,
        template_for(load_topics(topics_path)),
        schedules=schedules,
        concurrency=concurrency,
    )
    verb = "started" if started else "already running"
    click.echo(f"local stack {verb}: {_describe(record)}")


def _describe(record: StackRecord) -> str:
    schedules = ", schedules firing" if record.schedules else ""
    return (
        f"AWS APIs at {record.endpoint}, DynamoDB Local at {record.dynamodb_endpoint} "
        f"(table {record.table}), pid {record.pid}, since {record.started_at}{schedules}; "
        f"function logs in {_shown(record.functions_log)}"
    )


@local.command()
@config_option
@run_command
def down(config: str | None) -> None:
    """Stop the local stack and DynamoDB Local. The state table stays; executions and local S3 do not."""
    _topics, home = _home(config)
    if stack_down(home):
        click.echo(f"local stack stopped (state kept in {_shown(dynamodb_local.state_dir(home))})")
    else:
        click.echo("the local stack was not running")


@local.command()
@config_option
@run_command
def status(config: str | None) -> None:
    """Say whether the local stack runs, where, and since when (exit 1 when it does not)."""
    _topics, home = _home(config)
    record = running_stack(home)
    if record is None:
        stale = stack_file(home).exists()
        click.echo(
            f"the local stack is not running{' (it does not answer)' if stale else ''}: `leanops local up`"
        )
        raise SystemExit(1)
    click.echo(f"local stack running: {_describe(record)}")


@local.command()
@config_option
@click.option("-f", "--follow", is_flag=True, help="Keep printing lines as they are written.")
@click.option(
    "-n", "--lines", default=50, show_default=True, type=click.IntRange(0), help="Lines to show first."
)
@run_command
def logs(config: str | None, follow: bool, lines: int) -> None:
    """The functions' log: Powertools logs, EMF metrics, START/END/REPORT lines of every invocation."""
    _topics, home = _home(config)
    path = home / LOG_DIR / FUNCTIONS_LOG
    if not path.exists() and not follow:
        click.echo(f"no function log yet at {_shown(path)}", err=True)
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch()
    with path.open(encoding="utf-8", errors="replace") as log:
        tail = log.readlines()[-lines:] if lines else []
        click.echo("".join(tail), nl=False)
        while follow:
            line = log.readline()
            if line:
                click.echo(line, nl=False)
            else:
                time.sleep(0.2)
