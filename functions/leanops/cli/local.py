"""``leanops local up|down|status``: the persistent local DynamoDB (DESIGN §4, §5)."""

from __future__ import annotations

import os
from pathlib import Path

import click

from leanops.cli import run_command
from leanops.local import dynamodb_local


def _shown(path: Path) -> str:
    """``path`` relative to the working directory when inside it (``.leanops/dynamodb``), else absolute."""
    try:
        return os.path.relpath(path) if path.is_relative_to(Path.cwd()) else str(path)
    except ValueError:  # another drive (Windows)
        return str(path)


@click.group()
def local() -> None:
    """Start, stop and inspect the local DynamoDB (state under $LEANOPS_HOME, default ./.leanops)."""


@local.command()
@run_command
def up() -> None:
    """Start DynamoDB Local in the background, or reuse the running one, and print its endpoint."""
    endpoint = dynamodb_local.local_up()
    click.echo(f"DynamoDB Local running at {endpoint} (state in {_shown(dynamodb_local.state_dir())})")


@local.command()
@run_command
def down() -> None:
    """Stop DynamoDB Local; its data stays for the next `leanops local up`."""
    if dynamodb_local.local_down():
        click.echo(f"DynamoDB Local stopped (state kept in {_shown(dynamodb_local.state_dir())})")
    else:
        click.echo("DynamoDB Local was not running")


@local.command()
@run_command
def status() -> None:
    """Say whether DynamoDB Local runs, where, and since when."""
    state = dynamodb_local.local_status()
    where = _shown(state.state_dir)
    if not state.running:
        click.echo(f"DynamoDB Local is not running (state in {where})")
    elif state.answering:
        click.echo(
            f"DynamoDB Local running at {state.endpoint_url} (pid {state.pid}, since {state.started_at}, "
            f"state in {where})"
        )
    else:
        click.echo(f"DynamoDB Local (pid {state.pid}) is running but does not answer at {state.endpoint_url}")
