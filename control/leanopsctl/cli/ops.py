"""Operator overrides: ``leanops unlock``, ``checkpoint set|rewind``, ``pause``, ``resume`` and ``audit``, on
the local stack or a deployed one (``--stack``). Each change is one conditional write with an immutable
audit record in the same transaction (who, when, why, before, after; decision 0007)."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from leanops.data import open_source
from leanops.errors import ConfigError, LeanopsError
from leanops.protocol import Acquired, Lease, Protocol, TopicRef
from leanopsctl.cli import run_command
from leanopsctl.cli.common import json_option, one_state, states, target_options
from leanopsctl.push import local_actor
from leanopsctl.target import Target

Resolve = Callable[..., Target]
#: The lease an operator's checkpoint change holds the lock for (one transaction; generous for a slow link).
OPERATOR_LEASE_SECONDS = 60
reason_option = click.option(
    "--reason", required=True, help="Why: kept in the topic's audit record (`leanops audit`)."
)


def actor(target: Target) -> str:
    """Who acts: the AWS identity for a deployed stack, else ``user@host``."""
    if target.local is not None:
        return local_actor()
    arn: str = target.client("sts").get_caller_identity()["Arn"]
    return arn


def _when(ms: int | None) -> str:
    return "-" if ms is None else time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(ms / 1000))


def _print(as_json: bool, report: dict[str, Any], line: str) -> None:
    if as_json:
        click.echo(json.dumps(report))
    else:
        Console(stderr=True).print(line, highlight=False)


@click.command()
@click.argument("topic")
@target_options
@click.option("--force", is_flag=True, help="Required: a run may hold the lock; it will be fenced out.")
@reason_option
@json_option
@run_command
def unlock(topic: str, target: Resolve, config: str | None, force: bool, reason: str, as_json: bool) -> None:
    """Free TOPIC's lock whoever holds it, bumping the fence so the holder can neither commit nor release."""
    if not force:
        raise ConfigError(
            f"unlock frees the lock of {topic} that a run may still hold (its commits will then be refused): "
            "pass --force to do it"
        )
    resolved = target(topic)
    state, _ = one_state(resolved.topics, topic)
    result = resolved.protocol().force_unlock(state, actor=actor(resolved), reason=reason)
    report = {
        "topic": topic,
        "unlocked": result.unlocked,
        "holder": result.before_owner,
        "fence_before": result.before_fence,
        "fence_after": result.after_fence,
    }
    if result.unlocked:
        fences = f"fence {result.before_fence} -> {result.after_fence}"
        line = f"{topic}: unlocked (was held by {result.before_owner}, {fences})"
    else:
        line = f"{topic}: the lock was free; nothing changed"
    _print(as_json, report, line)


@contextmanager
def operator_lease(protocol: Protocol, topic: TopicRef, who: str) -> Iterator[Lease]:
    """Hold TOPIC's lock as the operator for one change, as a run would (a run holding it refuses us)."""
    owner = f"operator:{who}:{uuid.uuid4().hex[:12]}"
    acquired = protocol.acquire(topic, owner, OPERATOR_LEASE_SECONDS, operator=True)
    if not isinstance(acquired, Acquired):
        holder = getattr(acquired, "holder", None)
        until = _when(getattr(acquired, "lease_expires_at_ms", None))
        raise LeanopsError(
            f"{topic} is locked by {holder} until {until} UTC: wait for it, or "
            f"`leanops unlock {topic} --force`"
        )
    try:
        yield acquired.lease
    finally:
        # No outcome: the topic's last run (and its failure streak) stays what the runs made it.
        protocol.release(acquired.lease)


def _override_report(topic: str, result: Any) -> dict[str, Any]:
    return {
        "topic": topic,
        "before": result.before.to_json(),
        "after": result.after.to_json(),
        "superseded": list(result.superseded),
    }


@click.group()
def checkpoint() -> None:
    """Move a topic's checkpoint by hand, under its lock, with an audit record."""


@checkpoint.command(name="set")
@click.argument("topic")
@target_options
@click.option("--position", required=True, help="The position to set (the source's own form, see README).")
@reason_option
@json_option
@run_command
def set_(topic: str, target: Resolve, config: str | None, position: str, reason: str, as_json: bool) -> None:
    """Set TOPIC's checkpoint to POSITION: forward skips records; backward only over no committed batch."""
    resolved = target(topic)
    state, settings = one_state(resolved.topics, topic)
    protocol = resolved.protocol()
    who = actor(resolved)
    with operator_lease(protocol, state, who) as lease:
        result = protocol.set_checkpoint(
            lease, position=position, actor=who, reason=reason, order=open_source(settings.source).order
        )
    report = _override_report(topic, result)
    _print(as_json, report, f"{topic}: checkpoint {result.before.position} -> {result.after.position}")


@checkpoint.command()
@click.argument("topic")
@target_options
@click.option(
    "--to-seq", "to_seq", required=True, type=click.IntRange(0), help="Commit to go back to (0: start)."
)
@reason_option
@json_option
@run_command
def rewind(topic: str, target: Resolve, config: str | None, to_seq: int, reason: str, as_json: bool) -> None:
    """Rewind TOPIC to where commit TO_SEQ left it; later commits are superseded (`leanops gc` removes their
    objects) and the next run reads their records again."""
    resolved = target(topic)
    state, _ = one_state(resolved.topics, topic)
    protocol = resolved.protocol()
    who = actor(resolved)
    with operator_lease(protocol, state, who) as lease:
        result = protocol.rewind_checkpoint(lease, to_seq=to_seq, actor=who, reason=reason)
    report = _override_report(topic, result)
    line = (
        f"{topic}: rewound to seq {to_seq} ({result.after.position or 'the beginning'}); "
        f"superseded {len(result.superseded)} commits: run `leanops gc {topic}` to remove their objects"
    )
    _print(as_json, report, line)


def _pause_command(paused: bool) -> click.Command:
    verb = "pause" if paused else "resume"

    @click.command(name=verb)
    @click.argument("topic")
    @target_options
    @reason_option
    @json_option
    @run_command
    def command(topic: str, target: Resolve, config: str | None, reason: str, as_json: bool) -> None:
        resolved = target(topic)
        protocol = resolved.protocol()
        for state, _ in states(resolved.topics, topic):  # a partitioned topic: each of its partitions
            _pause_one(protocol, state, verb, actor(resolved), reason, as_json)

    command.help = (
        "Pause TOPIC (each of its partitions, or TOPIC/PARTITION): its runs end at once with outcome "
        "`paused` (exit 0) until `leanops resume`."
        if paused
        else "Resume a paused TOPIC (each of its partitions, or TOPIC/PARTITION)."
    )
    return command


def _pause_one(protocol: Protocol, state: TopicRef, verb: str, who: str, reason: str, as_json: bool) -> None:
    paused, topic = verb == "pause", str(state)
    change = getattr(protocol, verb)(state, actor=who, reason=reason)
    report = {
        "topic": topic,
        "paused": change.paused,
        "changed": change.changed,
        "paused_by": change.paused_by,
        "reason": change.paused_reason,
        "paused_at_ms": change.paused_at_ms,
    }
    if not change.changed:
        line = f"{topic}: already {'paused' if paused else 'running'}; nothing changed"
    elif paused:
        line = f"{topic}: paused; its runs end at once with outcome `paused` until `leanops resume {topic}`"
    else:
        line = f"{topic}: resumed; the next run acquires its lock again"
    _print(as_json, report, line)


pause = _pause_command(True)
resume = _pause_command(False)


@click.command()
@click.argument("topic", required=False)
@target_options
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1), help="Records per topic.")
@json_option
@run_command
def audit(topic: str | None, target: Resolve, config: str | None, limit: int, as_json: bool) -> None:
    """Every operator change of TOPIC (or of every topic), newest first: who, when, why, before, after."""
    resolved = target(topic)
    names = [topic] if topic else sorted(resolved.topics.topics)
    protocol = resolved.protocol()
    rows = [
        {"topic": str(state), **record.to_json()}
        for name in names
        for state, _ in states(resolved.topics, name)
        for record in protocol.audit(state, limit=limit)
    ]
    rows.sort(key=lambda row: row["at_ms"], reverse=True)
    if as_json:
        click.echo(json.dumps({"records": rows}))
        return
    table = Table(title=f"operator changes on {resolved.description}")
    for column in ("when (UTC)", "topic", "action", "actor", "reason", "before", "after"):
        table.add_column(column)
    for row in rows:
        table.add_row(
            _when(row["at_ms"]),
            row["topic"],
            row["action"],
            row["actor"],
            row["reason"],
            json.dumps(row["before"]),
            json.dumps(row["after"]),
        )
    Console().print(table)
