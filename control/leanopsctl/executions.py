"""Executions of the topic-run state machine through the Step Functions API: start one, follow it, list a
topic's recent ones. The same calls against the local stack and AWS."""

from __future__ import annotations

import json
import os
import re
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from leanops.errors import ConfigError, LocalRuntimeError
from leanops.protocol.table import PARTITION_KEY, SORT_KEY, TTL_ATTRIBUTE

#: Step Functions' rule for execution names: 1-80 characters, none of whitespace, ``<>{}[]?*"#%\\^|~`$&,;:/``
#: or control characters.
_EXECUTION_NAME = re.compile(r"[^\s<>{}\[\]?*\"#%\\^|~`$&,;:/\x00-\x1f\x7f-\x9f]{1,80}")
#: Execution-name records in the state table: ``pk = execution#<StateMachineLogicalId>``, ``sk = <name>``.
EXECUTION_NAME_PREFIX = "execution#"
#: How long a claimed execution name is kept (AWS keeps a Standard execution's name for 90 days).
EXECUTION_NAME_TTL_SECONDS = 90 * 24 * 3600
#: Events per history page: the follower reads the newest page first and stops at events it has seen.
HISTORY_PAGE = 100
#: The follower polls the execution's status at this interval first, then backs off slowly to the maximum
#: (a poll is two light reads; four a second stay far under Step Functions' API rates).
POLL_FIRST_SECONDS = 0.02
POLL_BACKOFF = 1.25
POLL_MAX_SECONDS = 0.25


def validate_execution_name(name: str) -> str:
    """Return ``name`` if Step Functions accepts it as an execution name, else raise :class:`ConfigError`."""
    if not isinstance(name, str) or not _EXECUTION_NAME.fullmatch(name):
        raise ConfigError(
            f"invalid execution name {name!r}: use 1 to 80 characters, without spaces or any of "
            '<>{}[]?*"#%\\^|~`$&,;:/'
        )
    return name


def unique_execution_name(prefix: str = "run") -> str:
    """``<prefix>-<UTC time>-<random>``, e.g. ``run-20261122T101500Z-1a2b3c4d``, cut to 80 characters."""
    suffix = f"-{datetime.now(UTC):%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:8]}"
    return prefix[: 80 - len(suffix)] + suffix


def claim_execution_name(
    client: Any,
    table_name: str,
    state_machine: str,
    name: str,
    *,
    execution_arn: str | None = None,
    now: float | None = None,
) -> None:
    """Record that execution ``name`` of ``state_machine`` is taken, or fail if it already is.

    One conditional ``PutItem`` (``attribute_not_exists``) on ``pk = execution#<state_machine>``,
    ``sk = <name>``, with a TTL 90 days ahead: whichever process writes first owns the name, as AWS refuses a
    second execution with a used name.

    Raises
    ------
    ConfigError
        The name is already used by another execution of ``state_machine``.
    LocalRuntimeError
        The state table could not be written (DynamoDB Local down, table missing).
    """
    now = time.time() if now is None else now
    item = {
        PARTITION_KEY: {"S": f"{EXECUTION_NAME_PREFIX}{state_machine}"},
        SORT_KEY: {"S": name},
        "claimed_at": {"S": datetime.fromtimestamp(now, UTC).isoformat(timespec="milliseconds")},
        "pid": {"N": str(os.getpid())},
        TTL_ATTRIBUTE: {"N": str(int(now) + EXECUTION_NAME_TTL_SECONDS)},
    }
    if execution_arn is not None:
        item["execution_arn"] = {"S": execution_arn}
    try:
        client.put_item(
            TableName=table_name,
            Item=item,
            ConditionExpression="attribute_not_exists(#pk)",
            ExpressionAttributeNames={"#pk": PARTITION_KEY},
        )
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") == "ConditionalCheckFailedException":
            raise ConfigError(
                f"execution name {name!r} is already used by another execution of {state_machine}; "
                "choose another --name"
            ) from exc
        raise LocalRuntimeError(
            f"could not record execution name {name!r} in table {table_name}: {exc}"
        ) from exc
    except BotoCoreError as exc:
        raise LocalRuntimeError(
            f"could not record execution name {name!r} in table {table_name}: {exc}"
        ) from exc


@dataclass
class Execution:
    """An execution as the follower saw it end (or as it stood)."""

    arn: str
    status: str
    input: dict[str, Any]
    output: dict[str, Any] | None
    error: str | None
    cause: str | None
    started: datetime | None
    stopped: datetime | None
    #: ``*StateEntered`` events seen: the state transitions a Standard workflow is billed for.
    states_entered: int = 0
    events: list[dict[str, Any]] = field(default_factory=list, repr=False)

    @property
    def succeeded(self) -> bool:
        return self.status == "SUCCEEDED"

    @property
    def seconds(self) -> float | None:
        if self.started is None or self.stopped is None:
            return None
        return (self.stopped - self.started).total_seconds()

    @classmethod
    def from_description(cls, described: dict[str, Any]) -> Execution:
        return cls(
            arn=described["executionArn"],
            status=described["status"],
            input=_json(described.get("input")) or {},
            output=_json(described.get("output")),
            error=described.get("error"),
            cause=described.get("cause"),
            started=described.get("startDate"),
            stopped=described.get("stopDate"),
        )


def _json(text: str | None) -> Any:
    if not text:
        return None
    try:
        return json.loads(text)
    except ValueError:
        return None


def start(sfn: Any, state_machine_arn: str, name: str, run_input: dict[str, Any]) -> str:
    """Start an execution named ``name`` with ``run_input`` (``{"topic": ...}``); its ARN.

    Raises
    ------
    ConfigError
        The name is taken by another execution of the state machine.
    """
    try:
        response = sfn.start_execution(
            stateMachineArn=state_machine_arn, name=name, input=json.dumps(run_input)
        )
    except ClientError as exc:
        error = exc.response.get("Error", {})
        if error.get("Code") == "ExecutionAlreadyExists":
            raise ConfigError(f"execution name {name!r} is already used: choose another --name") from exc
        raise LocalRuntimeError(
            f"could not start {name!r}: {error.get('Code')}: {error.get('Message')}"
        ) from exc
    return str(response["executionArn"])


def new_events(sfn: Any, arn: str, after_id: int) -> list[dict[str, Any]]:
    """The history events of ``arn`` with an id above ``after_id``, oldest first: pages read newest first
    (``reverseOrder``) until an event already seen, so a long history is never re-read."""
    found: dict[int, dict[str, Any]] = {}
    arguments: dict[str, Any] = {"executionArn": arn, "reverseOrder": True, "maxResults": HISTORY_PAGE}
    while True:
        page = sfn.get_execution_history(**arguments)
        for event in page["events"]:
            if int(event["id"]) <= after_id:
                return [found[key] for key in sorted(found)]
            found[int(event["id"])] = event
        if not page.get("nextToken"):
            return [found[key] for key in sorted(found)]
        arguments["nextToken"] = page["nextToken"]


def follow(
    sfn: Any,
    arn: str,
    on_event: Callable[[dict[str, Any]], object] | None = None,
    *,
    keep_events: bool = False,
) -> Execution:
    """Wait until the execution ends, passing each new history event to ``on_event`` once, in order."""
    last_id = 0
    entered = 0
    kept: list[dict[str, Any]] = []
    delay = POLL_FIRST_SECONDS
    while True:
        # Status first: once it is terminal, the events read after it are complete.
        described = sfn.describe_execution(executionArn=arn)
        for event in new_events(sfn, arn, last_id):
            last_id = int(event["id"])
            entered += str(event["type"]).endswith("StateEntered")
            if keep_events:
                kept.append(event)
            if on_event is not None:
                on_event(event)
        if described["status"] != "RUNNING":
            execution = Execution.from_description(described)
            execution.states_entered = entered
            execution.events = kept
            return execution
        time.sleep(delay)
        delay = min(POLL_MAX_SECONDS, delay * POLL_BACKOFF)


def recent(
    sfn: Any, state_machine_arn: str, topic: str, *, limit: int, examine: int, partition: str | None = None
) -> Iterator[Execution]:
    """``topic``'s executions (of one ``partition`` if given; else of all its partitions), newest first: at
    most ``limit``, looking at no more than ``examine`` executions of the state machine (every topic shares
    it)."""
    arguments: dict[str, Any] = {"stateMachineArn": state_machine_arn, "maxResults": 100}
    found = examined = 0
    while True:
        page = sfn.list_executions(**arguments)
        for item in page["executions"]:
            if found >= limit or examined >= examine:
                return
            examined += 1
            described = Execution.from_description(sfn.describe_execution(executionArn=item["executionArn"]))
            if described.input.get("topic") == topic and partition in (
                None,
                described.input.get("partition"),
            ):
                found += 1
                yield described
        if not page.get("nextToken"):
            return
        arguments["nextToken"] = page["nextToken"]
