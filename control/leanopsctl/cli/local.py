"""``leanops local up|down|status``: the persistent local DynamoDB (design §4, §5)."""

from __future__ import annotations

import os
from pathlib import Path

import click

from leanops.cli import run_command
from leanops.config import config_path
from leanops.constants import ENV_HOME
from leanops.errors import ConfigError
from leanops.local import dynamodb_local
from leanops.local.session import use_project_home

config_option = click.option(
    "--config",
    "config",
    type=click.Path(dir_okay=False),
    help="Topics file of the project (default: $LEANOPS_CONFIG or ./topics.yaml); its state lives beside it.",
)


def _project(config: str | None) -> None:
    """Use the state of the project whose topics file is given (or found), unless $LEANOPS_HOME says where."""
    if os.environ.get(ENV_HOME):
        return
    path = config_path(config)
    if not path.is_file():
        raise ConfigError(
            f"no topics file at {path}: run from the project folder, pass --config PATH (local state lives "
            "beside the topics file), or set LEANOPS_HOME"
        )
    use_project_home(path)


def _shown(path: Path) -> str:
    """``path`` relative to the working directory when inside it (``.leanops/dynamodb``), else absolute."""
    try:
        return os.path.relpath(path) if path.is_relative_to(Path.cwd()) else str(path)
    except ValueError:  # another drive (Windows)
        return str(path)


@click.group()
def local() -> None:
    """Start, stop and inspect the local DynamoDB (state in .leanops beside the topics file, or
    $LEANOPS_HOME)."""


@local.command()
@config_option
@run_command
def up(config: str | None) -> None:
    """Start DynamoDB Local in the background, or reuse the running one, and print its endpoint."""
    _project(config)
    endpoint = dynamodb_local.local_up()
    click.echo(f"DynamoDB Local running at {endpoint} (state in {_shown(dynamodb_local.state_dir())})")


@local.command()
@config_option
@run_command
def down(config: str | None) -> None:
    """Stop DynamoDB Local; its data stays for the next `leanops local up`."""
    _project(config)
    if dynamodb_local.local_down():
        click.echo(f"DynamoDB Local stopped (state kept in {_shown(dynamodb_local.state_dir())})")
    else:
        click.echo("DynamoDB Local was not running")


@local.command()
@config_option
@run_command
def status(config: str | None) -> None:
    """Say whether DynamoDB Local runs, where, and since when."""
    _project(config)
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
