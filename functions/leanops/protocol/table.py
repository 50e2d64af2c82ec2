"""The state table's physical shape: key schema and TTL attribute.

One table holds every protocol item; ``template.yaml`` declares the same shape (a test checks they agree).
"""

from __future__ import annotations

import contextlib
from typing import Any

PARTITION_KEY = "pk"
SORT_KEY = "sk"
#: The TTL attribute (epoch seconds). Set on locks, run records and idempotency keys; never on checkpoints
#: or output records (the manifest of committed output).
TTL_ATTRIBUTE = "expires_at"


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
    }


def create_table(client: Any, table_name: str) -> None:
    """Create the state table (idempotent), wait until it is active and enable TTL on it."""
    with contextlib.suppress(client.exceptions.ResourceInUseException):
        client.create_table(**table_definition(table_name))
    client.get_waiter("table_exists").wait(TableName=table_name, WaiterConfig={"Delay": 1, "MaxAttempts": 30})
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
