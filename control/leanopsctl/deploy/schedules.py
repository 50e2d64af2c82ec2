"""Each scheduled topic's EventBridge Scheduler schedule, made through the Scheduler API by
``leanops topics push`` (decision 0013): the stack owns one schedule group and the role schedules use; the
schedules themselves are not stack resources, so a topic's schedule changes without a deploy and the
stack's size does not grow with topics.

A topic's schedule (:func:`desired`) is named after the topic (:func:`schedule_name`). Its universal target
calls ``states:StartExecution`` with the Scheduler's execution id as the execution name (Scheduler cannot
strip the colons of a time, and names may not contain them; on Standard a retried delivery with the same
name starts nothing new) and ``{"topic", "scheduled_time"}`` as input, so that the run key
``scheduled:<time>`` dedupes on Express too (design §4). A flexible window of a fifth of the period (1 to 15
minutes), retries for at most one period (a later start is the next tick's job), and a dead-letter queue.

:func:`sync` makes the group hold exactly the pushed topics' schedules: creates, updates what differs,
deletes the rest. It runs on every push, so an interrupted push converges on the next.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from leanops.config import TopicConfig
from leanops.errors import ConfigError

#: Period assumed for cron and one-time schedules, whose interval the expression does not give simply.
DEFAULT_PERIOD_SECONDS = 3600
#: Scheduler retries of one start: a delivery older than the period is superseded by the next tick.
SCHEDULE_RETRY_ATTEMPTS = 3
#: Scheduler's schedule names: 1 to 64 of these characters.
SCHEDULE_NAME = re.compile(r"[0-9A-Za-z_.-]{1,64}")
#: The universal target that starts a Step Functions execution.
START_EXECUTION = "arn:{partition}:scheduler:::aws-sdk:sfn:startExecution"

#: Schedules read or written at once by :func:`sync`.
SYNC_WORKERS = 16

_RATE = re.compile(r"rate\(\s*(\d+)\s+(minute|minutes|hour|hours|day|days)\s*\)")
_UNIT_SECONDS = {"minute": 60, "hour": 3600, "day": 86400}


def period_seconds(expression: str | None) -> int | None:
    """The interval of a ``rate(...)`` expression in seconds; ``None`` for cron, at, or no schedule."""
    match = _RATE.fullmatch(expression.strip()) if expression else None
    if not match:
        return None
    return int(match.group(1)) * _UNIT_SECONDS[match.group(2).rstrip("s")]


def schedule_name(topic: str) -> str:
    """The topic's schedule name: the topic's own when Scheduler allows it (up to 64 characters), else its
    first 51 characters, ``-`` and 12 hex digits of a hash of the whole name."""
    if SCHEDULE_NAME.fullmatch(topic):
        return topic
    return f"{topic[:51]}-{hashlib.sha256(topic.encode()).hexdigest()[:12]}"


@dataclass(frozen=True)
class ScheduleTarget:
    """Where a stack's schedules live and what they start (the stack's outputs, or the local stack's)."""

    group: str
    state_machine_arn: str
    role_arn: str
    dead_letter_arn: str | None = None
    partition: str = "aws"
    #: Every schedule's state: the stack's SchedulesState (DISABLED pauses them all).
    state: str = "ENABLED"


def desired(topic: TopicConfig, target: ScheduleTarget, partition: str | None = None) -> dict[str, Any]:
    """The ``CreateSchedule`` / ``UpdateSchedule`` request of a scheduled topic, or of one partition of a
    partitioned topic: each partition is started on its own, as ``<topic>.<partition>`` (decision 0015)."""
    assert topic.schedule is not None
    period = period_seconds(topic.schedule)
    window_minutes = min(15, max(1, period // 300)) if period else 1
    max_age = min(86_400, max(60, period or DEFAULT_PERIOD_SECONDS))
    run_input = {"topic": topic.name, "scheduled_time": "<aws.scheduler.scheduled-time>"}
    what = f"topic {topic.name}"
    if partition is not None:
        run_input = {
            "topic": topic.name,
            "partition": partition,
            "scheduled_time": run_input["scheduled_time"],
        }
        what = f"partition {partition} of topic {topic.name}"
    request = {
        "StateMachineArn": target.state_machine_arn,
        "Name": "<aws.scheduler.execution-id>",
        "Input": json.dumps(run_input),
    }
    schedule: dict[str, Any] = {
        "Name": schedule_name(topic.name if partition is None else f"{topic.name}.{partition}"),
        "GroupName": target.group,
        "Description": f"Starts a run of {what} ({topic.schedule})."[:512],
        "ScheduleExpression": topic.schedule,
        "ScheduleExpressionTimezone": "UTC",  # cron(...) in UTC, as the topics file documents
        "State": target.state,
        "FlexibleTimeWindow": {"Mode": "FLEXIBLE", "MaximumWindowInMinutes": window_minutes},
        "Target": {
            "Arn": START_EXECUTION.format(partition=target.partition),
            "RoleArn": target.role_arn,
            "Input": json.dumps(request),
            "RetryPolicy": {
                "MaximumEventAgeInSeconds": max_age,
                "MaximumRetryAttempts": SCHEDULE_RETRY_ATTEMPTS,
            },
        },
    }
    if target.dead_letter_arn:
        schedule["Target"]["DeadLetterConfig"] = {"Arn": target.dead_letter_arn}
    return schedule


def run_input(schedule: Mapping[str, Any]) -> dict[str, Any] | None:
    """The execution input a schedule starts (from its target's request), None if it is not one of ours."""
    try:
        request = json.loads(schedule["Target"]["Input"])
        started = json.loads(request["Input"])
    except (KeyError, TypeError, ValueError):
        return None
    return started if isinstance(started, dict) and isinstance(started.get("topic"), str) else None


@dataclass
class ScheduleChanges:
    """What :func:`sync` did, by schedule name."""

    created: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)


#: The fields of GetSchedule's answer that a push sets (the rest: ARN, dates, Scheduler's own defaults).
_COMPARED = ("Description", "ScheduleExpression", "ScheduleExpressionTimezone", "State", "FlexibleTimeWindow")
_COMPARED_TARGET = ("Arn", "RoleArn", "Input", "RetryPolicy", "DeadLetterConfig")


#: Settings a push never makes, so one made by hand (a console edit) differs: the update removes it.
_NEVER_SET = {"StartDate": None, "EndDate": None, "KmsKeyArn": None, "ActionAfterCompletion": "NONE"}


def _differs(current: Mapping[str, Any], wanted: Mapping[str, Any]) -> bool:
    if any(current.get(key) != wanted.get(key) for key in _COMPARED):
        return True
    if any(current.get(key, default) not in (None, default) for key, default in _NEVER_SET.items()):
        return True
    target, wanted_target = current.get("Target") or {}, wanted["Target"]
    return any(target.get(key) != wanted_target.get(key) for key in _COMPARED_TARGET)


def sync(
    scheduler: Any, target: ScheduleTarget, topics: Mapping[str, TopicConfig], *, workers: int = SYNC_WORKERS
) -> ScheduleChanges:
    """Make ``target.group`` hold exactly the schedules of ``topics`` that have one (see the module): each
    schedule read and, if it differs, written, ``workers`` at a time (boto3 clients are thread-safe)."""
    wanted: dict[str, dict[str, Any]] = {}
    owners: dict[str, str] = {}
    for name, topic in sorted(topics.items()):
        if not topic.schedule:
            continue
        for partition in topic.partitions or (None,):
            request = desired(topic, target, partition)
            schedule, owner = request["Name"], name if partition is None else f"{name}/{partition}"
            if schedule in owners:
                raise ConfigError(
                    f"topics {owners[schedule]!r} and {owner!r} would share the schedule name {schedule!r} "
                    "(Scheduler names are at most 64 characters): rename one of them"
                )
            owners[schedule] = owner
            wanted[schedule] = request
    existing: set[str] = set()
    for page in scheduler.get_paginator("list_schedules").paginate(GroupName=target.group):
        existing.update(schedule["Name"] for schedule in page.get("Schedules", []))

    def deleted(name: str) -> str:
        scheduler.delete_schedule(Name=name, GroupName=target.group)
        return "deleted"

    def synced(name: str) -> str:
        request = wanted[name]
        if name not in existing:
            scheduler.create_schedule(**request)
            return "created"
        if _differs(scheduler.get_schedule(Name=name, GroupName=target.group), request):
            scheduler.update_schedule(**request)
            return "updated"
        return "unchanged"

    changes = ScheduleChanges()
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for done in (
            pool.map(lambda name: (name, deleted(name)), sorted(existing - set(wanted))),
            pool.map(lambda name: (name, synced(name)), sorted(wanted)),
        ):
            for name, change in done:
                getattr(changes, change).append(name)
    return changes
