"""``leanops init DIR``: a new project that runs at once (``leanops run events``): a topics file with one
topic, its processor, sample input, a README, ``.gitignore`` and ``samconfig.toml``; ``--with-template``
adds the SAM template and state machines that ship with leanops, to customise (a project's own template
wins over the shipped one, locally too). Never overwrites: any file in the way refuses the whole init."""

from __future__ import annotations

import os
import shlex
from pathlib import Path

import click

from leanopsctl.cli import run_command
from leanopsctl.project import FIRST_TOPIC, init_project


@click.command()
@click.argument("directory", type=click.Path(path_type=Path))
@click.option(
    "--with-template",
    is_flag=True,
    help="Also copy the shipped template.yaml and statemachines/ into the project, to customise them.",
)
@run_command
def init(directory: Path, with_template: bool) -> None:
    """Create a leanops project in DIRECTORY (created if missing; no file in it is ever overwritten)."""
    result = init_project(directory, with_template=with_template)
    shown = _shown(result.folder)
    click.echo(f"created {len(result.files)} files in {shown}:")
    for relative in result.files:
        click.echo(f"  {relative}")
    click.echo(f"stacks for `sam deploy` (samconfig.toml): {result.stack_name}-dev, {result.stack_name}-prod")
    here = result.folder.resolve() == Path.cwd().resolve()
    step = "" if here else f"cd {shlex.quote(shown)} && "
    click.echo(f"next: {step}leanops run {FIRST_TOPIC}   (then README.md)")


def _shown(folder: Path) -> str:
    """``folder`` as the user would type it: relative to the working directory when inside it."""
    absolute = folder.resolve()
    try:
        return os.path.relpath(absolute) if absolute.is_relative_to(Path.cwd().resolve()) else str(absolute)
    except ValueError:  # another drive (Windows)
        return str(absolute)
