"""Toy Lambda handlers for the local runtime's tests (named by ``fixtures/template.yaml``)."""

from __future__ import annotations

import os
import sys
import time
from typing import Any

import boto3
from aws_lambda_powertools import Logger

#: Attempts per execution seen by :func:`flaky`.
_attempts: dict[str, int] = {}


class ToyError(Exception):
    """A custom error that the toy state machine catches by name."""


class TransientError(Exception):
    """A custom error that the toy state machine retries by name."""


def write_item(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """Write ``event["key"]`` to the state table through a plain boto3 client; report what it saw."""
    table = os.environ["LEANOPS_STATE_TABLE"]
    client = boto3.client("dynamodb")  # the endpoint comes from AWS_ENDPOINT_URL_DYNAMODB, as in the cloud
    client.put_item(
        TableName=table,
        Item={
            "pk": {"S": f"toy#{event['key']}"},
            "sk": {"S": "item"},
            "execution": {"S": event["execution"]},
        },
    )
    print(f"toy stdout from write_item {event['key']}")
    Logger(service="toy").info("toy logger line", key=event["key"])
    return {
        "table": table,
        "tables": client.list_tables()["TableNames"],
        "greeting": os.environ["TOY_GREETING"],
        "region": os.environ["TOY_REGION"],
        "function_name": context.function_name,
        "memory": context.memory_limit_in_mb,
        "arn": context.invoked_function_arn,
        "request_id": context.aws_request_id,
    }


def fail(event: dict[str, Any], context: Any) -> None:
    """Always raise :class:`ToyError`."""
    print("toy stdout before failing")
    raise ToyError(f"toy failure for {event.get('key', 'no key')}")


def flaky(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """Raise :class:`TransientError` on the first ``event["failures"]`` attempts of an execution."""
    key = event["key"]
    _attempts[key] = _attempts.get(key, 0) + 1
    if _attempts[key] <= event["failures"]:
        raise TransientError(f"attempt {_attempts[key]} of {key} failed")
    return {"attempts": _attempts[key]}


def echo(event: Any, context: Any) -> Any:
    """Return the event, with the remaining time before and after an optional pause."""
    before = context.get_remaining_time_in_millis()
    pause = event.get("sleep", 0) if isinstance(event, dict) else 0
    if pause:
        time.sleep(pause)
    after = context.get_remaining_time_in_millis()
    print("toy stdout from echo", file=sys.stdout)
    return {"event": event, "remaining_before": before, "remaining_after": after}
