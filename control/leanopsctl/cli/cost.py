"""``leanops cost``: what runs cost on AWS, by component, from the benchmarks' counts (design §7).

The usage comes from ``bench/results/workflow.json``, ``bench/results/protocol.json`` and ``template.yaml``
(:mod:`leanopsctl.cost`), the prices from :mod:`leanopsctl.prices`. Missing results, or a number the command
cannot use, exit 2 with one line on stderr.
"""

from __future__ import annotations

import json
import math
from dataclasses import replace
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
    EXPRESS,
    STANDARD,
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


def render(reports: dict[str, dict[str, Any]]) -> Table:
    """Reports of one scenario, one per workflow type, side by side: a row per component (its usage per
    run, and per type its price per million runs and per month), the totals and the dominant component."""
    first = next(iter(reports.values()))
    topics = first["topics"]
    batches = first["batches_per_run"]
    table = Table(
        title=(
            f"leanops cost: {first['runs_per_day']:g} runs/day x {topics} topic{'s' if topics != 1 else ''}, "
            f"{batches} batch{'es' if batches != 1 else ''} per run"
            f"{'' if first['s3'] else ', no S3'}"
        ),
        caption=_caption(reports),
    )
    table.add_column("component")
    table.add_column("usage per run")
    for kind in reports:
        table.add_column(f"{kind}\n$ per million runs", justify="right")
        table.add_column(f"{kind}\n$ per month", justify="right")
    for key in COMPONENTS:
        rows = [report["components"][key] for report in reports.values()]
        details = dict.fromkeys(row["detail"] for row in rows)
        usage = (
            next(iter(details))
            if len(details) == 1
            else "\n".join(f"{kind}: {row['detail']}" for kind, row in zip(reports, rows, strict=True))
        )
        label = rows[0]["label"] + (" (monthly)" if rows[0]["billed"] == "per month" else "")
        cells = [
            cell for row in rows for cell in (usd(row["usd_per_million_runs"]), usd(row["usd_per_month"]))
        ]
        table.add_row(label, usage, *cells)
    table.add_section()
    totals = [
        f"[bold]{usd(amount)}[/]"
        for report in reports.values()
        for amount in (report["total"]["usd_per_million_runs"], report["total"]["usd_per_month"])
    ]
    table.add_row("[bold]total[/]", "", *totals)
    dominant = [
        cell
        for report in reports.values()
        for cell in ("", f"{report['dominant']['label']} ({report['dominant']['share']:.0%})")
    ]
    table.add_row("dominant", "", *dominant)
    return table


def _caption(reports: dict[str, dict[str, Any]]) -> str:
    first = next(iter(reports.values()))
    lines = []
    if set(reports) == {STANDARD, EXPRESS} and reports[EXPRESS]["total"]["usd_per_month"]:
        ratio = reports[STANDARD]["total"]["usd_per_month"] / reports[EXPRESS]["total"]["usd_per_month"]
        lines.append(f"Standard costs {ratio:.1f}x Express a month.")
    lines.append(
        f"{first['runs_per_month']:,.0f} runs a month; {first['prices']['region']} prices of "
        f"{first['prices']['as_of']}; durations are local proxies (assumptions: --json)"
    )
    return "\n".join(lines)


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
    help="Step Functions workflow type --json reports (the table shows both, side by side).",
)
@click.option(
    "--s3/--no-s3",
    "s3",
    default=True,
    show_default=True,
    help="The topics read and write s3:// objects (--no-s3: a DynamoDB source, or no S3 at all).",
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
    s3: bool,
    results_dir: str,
    template: str,
    as_json: bool,
) -> None:
    """Dollars per run, per million runs and per month, by component, from the benchmarks' counts: Standard
    and Express side by side, and which component dominates each."""
    chosen = parse_type(workflow_type)
    scenario = Scenario(
        workflow_type=chosen,
        runs_per_day=parse_positive("--runs-per-day", runs_per_day, integer=False),
        topics=int(parse_positive("--topics", topics, integer=True)),
        batches_per_run=int(parse_positive("--batches-per-run", batches_per_run, integer=True)),
        s3=s3,
    )
    usage = load_usage(results_dir, template)
    reports = {kind: estimate(usage, replace(scenario, workflow_type=kind)) for kind in WORKFLOW_TYPES}
    report = reports[chosen]
    errors = Console(stderr=True)
    shown = reports.values() if not as_json else [report]
    for warning in dict.fromkeys(w for each in shown for w in each["warnings"]):
        errors.print(f"[yellow]warning:[/] {warning}", highlight=False)
    if as_json:
        report["by_workflow_type"] = {
            kind: {
                "usd_per_month": each["total"]["usd_per_month"],
                "usd_per_million_runs": each["total"]["usd_per_million_runs"],
                "dominant": each["dominant"],
            }
            for kind, each in reports.items()
        }
        express_monthly = reports[EXPRESS]["total"]["usd_per_month"]
        report["standard_over_express"] = (
            round(reports[STANDARD]["total"]["usd_per_month"] / express_monthly, 2)
            if express_monthly
            else None
        )
        click.echo(json.dumps(report))
        return
    console = Console()
    if not console.is_terminal:  # rich's default of 80 columns would wrap the table in a pipe or a file
        console = Console(width=160)
    console.print(render(reports))
