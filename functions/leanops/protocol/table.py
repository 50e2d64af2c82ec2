"""The state table's physical shape: key schema and TTL attribute.

One table holds every protocol item; ``template.yaml`` declares the same shape (a test checks they agree).
"""

from __future__ import annotations

import contextlib
from typing import Any

PARTITION_KEY = "pk"
SORT_KEY = "sk"
#: The TTL attribute (epoch seconds). Set on every item that records history (run keys and records, output,
#: audit and config records; a lock while held); never on a checkpoint, a lock at rest or a topic's settings.
TTL_ATTRIBUTE = "expires_at"
#: The stream carries the old image of every TTL deletion to the archive (leanops.archive).
STREAM_SPECIFICATION = {"StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"}


def table_definition(table_name: str) -> dict[str, Any]:
    """Arguments of ``CreateTable`` for a state table named ``table_name`` (on-demand billing)."""
    return {
        "TableName": table_name,
        "KeySchema": [
            {"AttributeName": PARTITION_KEY, "KeyType": "HASH"},
            {"AttributeName": SORT_KEY, "KeyType": "RANGE"},
        ],
        "AttributeDefinitions": [
            {"AttributeName": PARTITION_KEY, "AttributeType": "S"},
            {"AttributeName": SORT_KEY, "AttributeType": "S"},
        ],
        "BillingMode": "PAY_PER_REQUEST",
        "StreamSpecification": STREAM_SPECIFICATION,
    }


def create_table(client: Any, table_name: str) -> None:
    """Create the state table (idempotent), wait until it is active, and enable its stream (a table made
    before the archive has none) and TTL on it."""
    with contextlib.suppress(client.exceptions.ResourceInUseException):
        client.create_table(**table_definition(table_name))
    client.get_waiter("table_exists").wait(TableName=table_name, WaiterConfig={"Delay": 1, "MaxAttempts": 30})
    stream = client.describe_table(TableName=table_name)["Table"].get("StreamSpecification") or {}
    if not stream.get("StreamEnabled"):
        with contextlib.suppress(client.exceptions.ResourceInUseException):  # another process enabled it
            client.update_table(TableName=table_name, StreamSpecification=STREAM_SPECIFICATION)
    ttl = client.describe_time_to_live(TableName=table_name)["TimeToLiveDescription"]
    if ttl.get("TimeToLiveStatus") not in ("ENABLED", "ENABLING"):
        try:
            client.update_time_to_live(
                TableName=table_name,
                TimeToLiveSpecification={"Enabled": True, "AttributeName": TTL_ATTRIBUTE},
            )
        except client.exceptions.ClientError as exc:  # another process enabled it meanwhile
            if "already enabled" not in str(exc):
                raise
