"""A worker that races other processes to acquire locks (used with the ``spawn`` start method)."""

from __future__ import annotations

from typing import Any

import boto3

from leanops.protocol import Acquired, Protocol, TopicRef
from leanops.protocol.dynamodb import CLIENT_CONFIG, DynamoDBStore


def race_acquire(
    endpoint_url: str, table: str, prefix: str, rounds: int, owner: str, barrier: Any
) -> list[bool]:
    """For each round, wait at ``barrier`` then try to acquire topic ``<prefix>-<round>``; report wins."""
    client = boto3.client(
        "dynamodb",
        endpoint_url=endpoint_url,
        region_name="us-east-1",
        aws_access_key_id="test",
        aws_secret_access_key="test",
        config=CLIENT_CONFIG,
    )
    protocol = Protocol(DynamoDBStore(table, client))
    wins = []
    for round_no in range(rounds):
        barrier.wait()
        result = protocol.acquire(TopicRef(f"{prefix}-{round_no}"), owner, 60)
        wins.append(isinstance(result, Acquired))
    return wins
