"""``leanops topics``: the topics file's topics; ``topics push``: the file into the stack, where runs read it
(decision 0013); ``topics history``: a topic's pushed versions."""

from __future__ import annotations

import json
import time
from typing import Any

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
from rich.table import Table

from leanops.config import load_topics
from leanopsctl import push
from leanopsctl.cli import run_command
from leanopsctl.cli.common import config_option, json_option, target_options
from leanopsctl.cli.ops import actor
from leanopsctl.cli.pipeline import _endpoint_text
from leanopsctl.deploy import roots
from leanopsctl.target import Target

#: Pushes of at least this many topics show a progress bar (on a terminal).
PROGRESS_FROM = 50


@click.group(invoke_without_command=True)
@config_option
@json_option
@click.pass_context
@run_command
def topics(ctx: click.Context, config: str | None, as_json: bool) -> None:
    """The topics of the topics file, with every setting resolved (defaults filled in, paths absolute).

    `leanops topics push` sends them to the stack, where runs read them."""
    if ctx.invoked_subcommand is not None:
        return
    loaded = load_topics(config)
    rows = [loaded.topics[name].to_json() for name in sorted(loaded.topics)]
    if as_json:
        click.echo(json.dumps({"config": str(loaded.path), "topics": rows}))
        return
    table = Table(title=f"topics in {loaded.path}")
    for column in (
        "topic",
        "source",
        "sink",
        "processor",
        "batch",
        "lease",
        "max batches",
        "schedule",
        "ts field",
    ):
        table.add_column(column)
    for row in rows:
        table.add_row(
            row["name"],
            _endpoint_text(row["source"]),
            _endpoint_text(row["sink"]),
            row["processor"] or "(passthrough)",
            str(row["batch_size"]),
            f"{row['lease_seconds']}s",
            str(row["max_batches_per_run"]),
            row["schedule"] or "-",
            row["timestamp_field"] or "-",
        )
    Console().print(table)


@topics.command("push")
@target_options
@click.option("--prune", is_flag=True, help="Remove pushed topics the file no longer has (state is kept).")
@click.option("--dry-run", is_flag=True, help="Show what would change; write nothing.")
@json_option
@run_command
def push_command(target: Any, config: str | None, prune: bool, dry_run: bool, as_json: bool) -> None:
    """Validate the topics file and push it to the stack: each topic's settings into the state table
    (versioned, with who and when), each schedule through EventBridge Scheduler. No deploy needed."""
    resolved: Target = target()
    store = resolved.store()
    check(resolved)
    who = actor(resolved)
    with push.push_lease(store, who):  # one push at a time, from its plan to its schedules
        plan = push.plan(resolved.topics, store)
        push.check_fleet(plan, resolved.topics, prune=prune)
        report: dict[str, Any] = {"target": resolved.description, "config": str(resolved.topics.path)}
        report.update(plan.to_json())
        where = f"{resolved.topics.path.name} to {resolved.description}"
        if dry_run:
            report["dry_run"] = True
            _say(as_json, report, f"would push {where}: {_counts(plan)}")
            return
        try:
            writes = len(plan.added) + len(plan.changed) + (len(plan.removed) if prune else 0)
            with _progress(writes, as_json) as step:
                push.apply(plan, store, actor=who, prune=prune, progress=step)
        finally:  # what was written is scheduled, even when some topic was not (the sync reads it back)
            changes = push.sync_schedules(resolved.client("scheduler"), resolved.schedule_target(), store)
    report["schedules"] = {k: len(v) for k, v in vars(changes).items()}
    schedules = ", ".join(f"{len(v)} {k}" for k, v in vars(changes).items() if v) or "none"
    _say(as_json, report, f"pushed {where}: {_counts(plan)}; schedules: {schedules}")


def check(resolved: Target) -> None:
    """What a push refuses before writing anything: a topic whose late-object look-back outreaches its
    output records' retention; on a deployed stack, a topic outside the stack's data roots (its functions
    could not reach its data); on an Express state machine, a topic whose worst-case run outlasts 5
    minutes."""
    push.check_retention(resolved.topics.topics.values(), resolved.retention())
    if resolved.parameters is not None:
        stack_roots = roots.parse_parameters(resolved.parameters)
        for config in resolved.topics.topics.values():
            roots.check_topic(config, stack_roots)
    described = resolved.client("stepfunctions").describe_state_machine(
        stateMachineArn=resolved.state_machine_arn
    )
    if described.get("type") == "EXPRESS":
        push.check_express(resolved.topics.topics.values(), json.loads(described["definition"]))


@topics.command("history")
@click.argument("topic")
@target_options
@click.option("--limit", type=click.IntRange(min=1), default=20, show_default=True)
@json_option
@run_command
def history_command(target: Any, config: str | None, topic: str, limit: int, as_json: bool) -> None:
    """A topic's pushed versions, newest first: who pushed what, and when."""
    resolved: Target = target()
    store = resolved.store()
    versions = [pushed.to_json() for pushed in store.topic_history(topic, limit=limit)]
    if as_json:
        click.echo(json.dumps({"topic": topic, "versions": versions}))
        return
    table = Table(title=f"{topic}: pushed versions on {resolved.description}")
    for column in ("version", "pushed at (UTC)", "by", "change", "schedule", "sink"):
        table.add_column(column)
    for row in versions:
        settings = row["settings"]
        table.add_row(
            str(row["version"]),
            time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(row["pushed_at_ms"] / 1000)),
            row["pushed_by"],
            "removed" if row["removed"] else "pushed",
            settings.get("schedule") or "-",
            _endpoint_text(settings["sink"]),
        )
    Console().print(table)


def _counts(plan: push.PushPlan) -> str:
    removed = f"{len(plan.removed)} removed" if plan.removed else "0 removed"
    return f"{len(plan.added)} added, {len(plan.changed)} changed, {removed}, {len(plan.unchanged)} unchanged"


def _say(as_json: bool, report: dict[str, Any], line: str) -> None:
    if as_json:
        click.echo(json.dumps(report))
    else:
        Console(stderr=True).print(line, highlight=False)


class _progress:
    """A progress bar on stderr for large pushes on a terminal; a no-op step otherwise."""

    def __init__(self, total: int, quiet: bool) -> None:
        console = Console(stderr=True)
        self.bar = (
            Progress(TextColumn("pushing topics"), BarColumn(), MofNCompleteColumn(), console=console)
            if total >= PROGRESS_FROM and not quiet and console.is_terminal
            else None
        )
        self.total = total

    def __enter__(self) -> Any:
        if self.bar is None:
            return None
        self.bar.start()
        task = self.bar.add_task("push", total=self.total)
        bar = self.bar
        return lambda _name: bar.advance(task)

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.stop()
