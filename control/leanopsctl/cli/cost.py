"""``leanops cost``: what runs cost on AWS, by component, from the benchmarks' counts (design §7).

The usage comes from ``bench/results/workflow.json``, ``bench/results/protocol.json`` and ``template.yaml``
(:mod:`leanopsctl.cost`), the prices from :mod:`leanopsctl.prices`. Missing results, or a number the command
cannot use, exit 2 with one line on stderr.
"""

from __future__ import annotations

import json
import math
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from leanops.errors import InvalidInput
from leanopsctl.cli import run_command
from leanopsctl.cli.pipeline import json_option
from leanopsctl.cost import (
    COMPONENTS,
    DEFAULT_RESULTS_DIR,
    DEFAULT_TEMPLATE,
    WORKFLOW_TYPES,
    Scenario,
    estimate,
    load_usage,
)

#: Defaults: one topic, every 5 minutes (the sample topic's schedule), one batch per run.
DEFAULT_RUNS_PER_DAY = "288"


def parse_positive(option: str, text: str, *, integer: bool) -> float | int:
    """``text`` as a positive number (a whole one if ``integer``); :class:`InvalidInput` names the option."""
    kind = "a whole number of at least 1" if integer else "a positive number"
    try:
        value: float | int = int(text) if integer else float(text)
    except ValueError:
        raise InvalidInput(f"{option} must be {kind}, not {text!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise InvalidInput(f"{option} must be {kind}, not {text!r}")
    return int(value) if value == int(value) else value


def parse_type(text: str) -> str:
    """``standard`` or ``express`` (any case)."""
    value = text.strip().lower()
    if value not in WORKFLOW_TYPES:
        raise InvalidInput(f"--type must be standard or express, not {text!r}")
    return value


def usd(amount: float) -> str:
    """Dollars with cents from $1, three significant digits in fixed notation below."""
    if amount == 0:
        return "$0"
    if amount >= 1:
        return f"${amount:,.2f}"
    decimals = min(12, 2 - math.floor(math.log10(amount)))
    return f"${amount:.{decimals}f}"


def render(report: dict[str, Any]) -> Table:
    """The report as a table: one row per component and a total."""
    topics = report["topics"]
    batches = report["batches_per_run"]
    table = Table(
        title=(
            f"leanops cost: {report['workflow_type']}, {report['runs_per_day']:g} runs/day x {topics} "
            f"topic{'s' if topics != 1 else ''}, {batches} batch{'es' if batches != 1 else ''} per run"
        ),
        caption=(
            f"{report['runs_per_month']:,.0f} runs a month; {report['prices']['region']} prices of "
            f"{report['prices']['as_of']}; durations are local proxies (assumptions: --json)"
        ),
    )
    table.add_column("component")
    table.add_column("usage per run")
    for column in ("$ per run", "$ per million runs", "$ per month"):
        table.add_column(column, justify="right")
    for key in COMPONENTS:
        row = report["components"][key]
        table.add_row(
            row["label"],
            row["detail"],
            usd(row["usd_per_run"]),
            usd(row["usd_per_million_runs"]),
            usd(row["usd_per_month"]),
        )
    total = report["total"]
    table.add_section()
    table.add_row(
        "[bold]total[/]",
        "",
        f"[bold]{usd(total['usd_per_run'])}[/]",
        f"[bold]{usd(total['usd_per_million_runs'])}[/]",
        f"[bold]{usd(total['usd_per_month'])}[/]",
    )
    return table


@click.command()
@click.option(
    "--runs-per-day",
    "runs_per_day",
    default=DEFAULT_RUNS_PER_DAY,
    show_default=True,
    metavar="N",
    help="Runs of each topic a day (288: every 5 minutes; 1440: every minute).",
)
@click.option("--topics", default="1", show_default=True, metavar="N", help="Number of topics.")
@click.option(
    "--batches-per-run",
    "batches_per_run",
    default="1",
    show_default=True,
    metavar="N",
    help="Batches a run processes.",
)
@click.option(
    "--type",
    "workflow_type",
    default="standard",
    show_default=True,
    metavar="standard|express",
    help="Step Functions workflow type.",
)
@click.option(
    "--results",
    "results_dir",
    default=str(DEFAULT_RESULTS_DIR),
    show_default=True,
    metavar="DIR",
    help="Folder with workflow.json and protocol.json (make bench writes them).",
)
@click.option(
    "--template",
    "template",
    default=str(DEFAULT_TEMPLATE),
    show_default=True,
    metavar="PATH",
    help="The SAM template (memory sizes, architectures, state machine).",
)
@json_option
@run_command
def cost(
    runs_per_day: str,
    topics: str,
    batches_per_run: str,
    workflow_type: str,
    results_dir: str,
    template: str,
    as_json: bool,
) -> None:
    """Dollars per run, per million runs and per month, by component, from the benchmarks' counts."""
    scenario = Scenario(
        workflow_type=parse_type(workflow_type),
        runs_per_day=parse_positive("--runs-per-day", runs_per_day, integer=False),
        topics=int(parse_positive("--topics", topics, integer=True)),
        batches_per_run=int(parse_positive("--batches-per-run", batches_per_run, integer=True)),
    )
    report = estimate(load_usage(results_dir, template), scenario)
    errors = Console(stderr=True)
    for warning in report["warnings"]:
        errors.print(f"[yellow]warning:[/] {warning}", highlight=False)
    if as_json:
        click.echo(json.dumps(report))
        return
    console = Console()
    if not console.is_terminal:  # rich's default of 80 columns would wrap the table in a pipe or a file
        console = Console(width=120)
    console.print(render(report))
