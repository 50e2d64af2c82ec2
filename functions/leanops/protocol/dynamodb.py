"""The DynamoDB store: the only module that speaks DynamoDB. Maps values to items, applies conditions,
and translates AWS errors into the leanops hierarchy once, here.

Item layout (one table, ``pk`` + ``sk``; decision record docs/decisions/0001-state-item-layout.md):

================  ==================  ======================================================================
pk                sk                  attributes
================  ==================  ======================================================================
topic#<name>      ``lock``            owner, fence, lease_expires_at (ms), acquired_at, expires_at (TTL, only
                                      while held), cp (copy of the checkpoint), last_owner, released_at
topic#<name>      ``checkpoint``      position, last_ingested_ts, last_snapshot_id, seq, updated_at,
                                      committed_by, fence, batch_start — never a TTL
topic#<name>      ``run#<key>``       owner, claimed_at, expires_at (TTL)
topic#<name>      ``output#<seq>``    the commit's output fields (None stored as NULL), committed_at (ms);
                                      ``<seq>`` is the commit's seq in 12 digits, so keys sort as numbers —
                                      never a TTL (the manifest of committed output)
topic#<name>      ``schema``          the sink's columns, their types and a version (Parquet sinks; written by
                                      the commit whose batch changed it) — never a TTL
leanops#state     ``identity``        id: the state's identity, recorded once (sink markers name it)
================  ==================  ======================================================================
"""

from __future__ import annotations

import functools
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from decimal import Decimal
from typing import Any

import boto3
from boto3.dynamodb.types import TypeDeserializer, TypeSerializer
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from leanops.constants import DEFAULT_STATE_TABLE, ENV_STATE_TABLE
from leanops.errors import StoreThrottled, StoreUnavailable
from leanops.protocol.model import Checkpoint, LockState, OutputRecord, TopicRef
from leanops.protocol.store import CommitRejected, LockConflict, StateStore, page_limit
from leanops.protocol.table import PARTITION_KEY, SORT_KEY, TTL_ATTRIBUTE

LOCK_SK = "lock"
CHECKPOINT_SK = "checkpoint"
RUN_SK_PREFIX = "run#"
OUTPUT_SK_PREFIX = "output#"
SCHEMA_SK = "schema"
#: The state's identity item (one per table): the id that sink markers record.
IDENTITY_PK, IDENTITY_SK = "leanops#state", "identity"

# Conditions, by the names used in leanops.protocol.store.
LOCK_FREE = "attribute_not_exists(#owner)"
LEASE_EXPIRED = "#lease < :expired_before"
OWNED = "#owner = :owner AND #fence = :fence"
OWNED_BY = "#owner = :owner"
CHECKPOINT_ABSENT = "attribute_not_exists(#seq)"
CHECKPOINT_UNCHANGED = "#position = :expected_position AND #seq = :expected_seq"
RUN_UNCLAIMED = "attribute_not_exists(#pk) OR #owner = :owner"

_NAMES = {
    "#owner": "owner",
    "#fence": "fence",
    "#lease": "lease_expires_at",
    "#acquired": "acquired_at",
    "#ttl": TTL_ATTRIBUTE,
    "#cp": "cp",
    "#last_owner": "last_owner",
    "#released": "released_at",
    "#last_outcome": "last_outcome",
    "#last_run_at": "last_run_at",
    "#failures": "failures",
    "#last_error": "last_error",
    "#last_cause": "last_cause",
    "#last_failed": "last_failed",
}
_THROTTLING = {
    "ProvisionedThroughputExceededException",
    "ThrottlingException",
    "RequestLimitExceeded",
    "TransactionConflictException",
    "TransactionInProgressException",
    "InternalServerError",
    "ServiceUnavailable",
}

_serializer = TypeSerializer()
_deserializer = TypeDeserializer()

#: SDK retries: standard mode retries throttling and transient errors with backoff before we see them.
CLIENT_CONFIG = Config(
    retries={"mode": "standard", "max_attempts": 4},
    connect_timeout=3,
    read_timeout=10,
)


@functools.cache
def _cached_client(endpoint_url: str | None) -> Any:
    return boto3.client("dynamodb", endpoint_url=endpoint_url, config=CLIENT_CONFIG)


def default_client() -> Any:
    """A DynamoDB client, cached per endpoint (``AWS_ENDPOINT_URL_DYNAMODB`` selects DynamoDB Local)."""
    return _cached_client(os.environ.get("AWS_ENDPOINT_URL_DYNAMODB"))


def default_table_name() -> str:
    return os.environ.get(ENV_STATE_TABLE, DEFAULT_STATE_TABLE)


class DynamoDBStore(StateStore):
    """:class:`StateStore` on one DynamoDB table (see the module docstring for the item layout)."""

    def __init__(self, table_name: str | None = None, client: Any | None = None) -> None:
        self.table_name = table_name or default_table_name()
        self.client = client if client is not None else default_client()

    @property
    def location(self) -> str:
        return f"{self.client.meta.endpoint_url}#{self.table_name}"

    # --- lock -----------------------------------------------------------------------------------------

    def acquire_lock(
        self,
        topic: TopicRef,
        owner: str,
        *,
        now_ms: int,
        lease_expires_at_ms: int,
        expired_before_ms: int,
        gc_at_s: int,
    ) -> LockState:
        with _translated(), _lock_conflict():
            response = self.client.update_item(
                TableName=self.table_name,
                Key=_key(topic, LOCK_SK),
                UpdateExpression=(
                    "SET #owner = :owner, #fence = if_not_exists(#fence, :seed) + :one, "
                    "#lease = :lease, #acquired = :now, #ttl = :gc"
                ),
                ConditionExpression=f"{LOCK_FREE} OR {LEASE_EXPIRED}",
                ExpressionAttributeNames=_names("#owner", "#fence", "#lease", "#acquired", "#ttl"),
                ExpressionAttributeValues=_values(
                    owner=owner,
                    seed=now_ms,
                    one=1,
                    lease=lease_expires_at_ms,
                    now=now_ms,
                    gc=gc_at_s,
                    expired_before=expired_before_ms,
                ),
                ReturnValues="ALL_NEW",
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
            )
        return _lock_state(_deserialize(response["Attributes"]))

    def renew_lock(
        self, topic: TopicRef, owner: str, fence: int, *, lease_expires_at_ms: int, gc_at_s: int
    ) -> LockState:
        with _translated(), _lock_conflict():
            response = self.client.update_item(
                TableName=self.table_name,
                Key=_key(topic, LOCK_SK),
                UpdateExpression="SET #lease = :lease, #ttl = :gc",
                ConditionExpression=OWNED,
                ExpressionAttributeNames=_names("#owner", "#fence", "#lease", "#ttl"),
                ExpressionAttributeValues=_values(
                    owner=owner, fence=fence, lease=lease_expires_at_ms, gc=gc_at_s
                ),
                ReturnValues="ALL_NEW",
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
            )
        return _lock_state(_deserialize(response["Attributes"]))

    def release_lock(
        self, topic: TopicRef, owner: str, fence: int | None, *, now_ms: int, outcome: str | None = None
    ) -> None:
        names: tuple[str, ...] = ("#owner", "#last_owner", "#released", "#ttl")
        expression, values = _RELEASE, {"owner": owner, "now": now_ms}
        if outcome is not None:
            expression = f"SET {_HEALTHY}, {_RELEASE[len('SET ') :]}"
            names += _HEALTH_NAMES
            values.update(outcome=outcome, zero=0)
        if fence is not None:
            names += ("#fence",)
            values["fence"] = fence
        with _translated(), _lock_conflict():
            self.client.update_item(
                TableName=self.table_name,
                Key=_key(topic, LOCK_SK),
                UpdateExpression=expression,
                ConditionExpression=OWNED if fence is not None else OWNED_BY,
                ExpressionAttributeNames=_names(*names),
                ExpressionAttributeValues=_values(**values),
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
            )

    def record_failure(self, topic: TopicRef, *, execution: str, error: str, cause: str, now_ms: int) -> None:
        with _translated():
            self.client.update_item(
                TableName=self.table_name,
                Key=_key(topic, LOCK_SK),
                UpdateExpression=(
                    "SET #last_outcome = :failed, #last_error = :error, #last_cause = :cause, "
                    "#last_run_at = :now, #last_failed = :execution ADD #failures :one"
                ),
                ExpressionAttributeNames=_names(
                    "#last_outcome", "#last_error", "#last_cause", "#last_run_at", "#last_failed", "#failures"
                ),
                ExpressionAttributeValues=_values(
                    failed="failed", error=error, cause=cause, now=now_ms, execution=execution, one=1
                ),
            )

    # --- checkpoint -----------------------------------------------------------------------------------

    def commit(
        self,
        topic: TopicRef,
        owner: str,
        fence: int,
        *,
        expected: Checkpoint,
        new: Checkpoint,
        release: bool,
        now_ms: int,
        lease_expires_at_ms: int,
        gc_at_s: int,
        output: Mapping[str, Any] | None,
        schema: Mapping[str, Any] | None = None,
    ) -> None:
        if expected.seq == 0:
            checkpoint_condition = CHECKPOINT_ABSENT
            condition_values: dict[str, Any] = {}
        else:
            checkpoint_condition = CHECKPOINT_UNCHANGED
            condition_values = {"expected_position": expected.position, "expected_seq": expected.seq}
        attributes = _checkpoint_attributes(new)
        checkpoint_update = {
            "TableName": self.table_name,
            "Key": _key(topic, CHECKPOINT_SK),
            "UpdateExpression": "SET " + ", ".join(f"#{name} = :{name}" for name in attributes),
            "ConditionExpression": checkpoint_condition,
            "ExpressionAttributeNames": {f"#{name}": name for name in attributes},
            "ExpressionAttributeValues": _values(**attributes, **condition_values),
            "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
        }
        if release:
            lock_expression = f"SET #cp = :cp, {_HEALTHY}, {_RELEASE[len('SET ') :]}"
            lock_names = _names("#owner", "#fence", "#cp", "#last_owner", "#released", "#ttl", *_HEALTH_NAMES)
            lock_values = _values(
                owner=owner,
                fence=fence,
                cp=_checkpoint_attributes(new.as_copy(), drop_empty=True),
                now=now_ms,
                outcome="processed",
                zero=0,
            )
        else:
            lock_expression = "SET #cp = :cp, #lease = :lease, #ttl = :gc"
            lock_names = _names("#owner", "#fence", "#cp", "#lease", "#ttl")
            lock_values = _values(
                owner=owner,
                fence=fence,
                cp=_checkpoint_attributes(new.as_copy(), drop_empty=True),
                lease=lease_expires_at_ms,
                gc=gc_at_s,
            )
        lock_update = {
            "TableName": self.table_name,
            "Key": _key(topic, LOCK_SK),
            "UpdateExpression": lock_expression,
            "ConditionExpression": OWNED,
            "ExpressionAttributeNames": lock_names,
            "ExpressionAttributeValues": lock_values,
            "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
        }
        items: list[dict[str, Any]] = [{"Update": checkpoint_update}, {"Update": lock_update}]
        if output is not None:
            # No condition of its own: it lands only with the commit that makes ``new.seq`` current.
            put = {
                "TableName": self.table_name,
                "Item": _serialize(_committed_item(topic, _output_sk(new.seq), output, now_ms)),
            }
            items.append({"Put": put})
        if schema is not None:  # likewise guarded by the checkpoint and lock conditions
            item = _committed_item(topic, SCHEMA_SK, schema, now_ms)
            items.append({"Put": {"TableName": self.table_name, "Item": _serialize(item)}})
        with _translated():
            try:
                self.client.transact_write_items(TransactItems=items)
            except ClientError as exc:
                if _code(exc) != "TransactionCanceledException":
                    raise
                # One reason per item, in order: checkpoint, lock (then the output put, which has no
                # condition to fail).
                reasons = exc.response.get("CancellationReasons") or [{}, {}]
                codes = [reason.get("Code") for reason in reasons]
                if "ConditionalCheckFailed" not in codes:
                    raise  # e.g. TransactionConflict: translated to StoreThrottled below
                raise CommitRejected(
                    checkpoint_failed=codes[0] == "ConditionalCheckFailed",
                    lock_failed=codes[1] == "ConditionalCheckFailed",
                    checkpoint=_checkpoint(_deserialize(reasons[0]["Item"]))
                    if reasons[0].get("Item")
                    else None,
                    lock=_lock_state(_deserialize(reasons[1]["Item"])) if reasons[1].get("Item") else None,
                ) from exc

    def read_checkpoint(self, topic: TopicRef) -> Checkpoint | None:
        item = self._get(topic, CHECKPOINT_SK)
        return _checkpoint(item) if item else None

    def read_lock(self, topic: TopicRef) -> LockState | None:
        item = self._get(topic, LOCK_SK)
        return _lock_state(item) if item else None

    def outputs(
        self, topic: TopicRef, *, newest_first: bool, limit: int | None, page_size: int | None = None
    ) -> Iterator[OutputRecord]:
        """One ``Query`` per page on ``begins_with(sk, "output#")``.

        Strongly consistent: a reader that compares the manifest with the (strongly read) checkpoint, or
        decides which sink objects are committed, must see every commit that returned before it started.
        At about ten records per 4 KB that costs 1 read unit instead of 0.5: not worth reasoning about lag.
        """
        query: dict[str, Any] = {
            "TableName": self.table_name,
            "KeyConditionExpression": "#pk = :pk AND begins_with(#sk, :prefix)",
            "ExpressionAttributeNames": {"#pk": PARTITION_KEY, "#sk": SORT_KEY},
            "ExpressionAttributeValues": _values(pk=topic.key, prefix=OUTPUT_SK_PREFIX),
            "ScanIndexForward": not newest_first,
            "ConsistentRead": True,
        }
        remaining = limit
        while remaining is None or remaining > 0:
            size = page_limit(page_size, remaining)
            with _translated():
                response = self.client.query(**query, **({"Limit": size} if size is not None else {}))
            records = [_output_record(_deserialize(item)) for item in response.get("Items", [])]
            yield from records
            if remaining is not None:
                remaining -= len(records)
            if "LastEvaluatedKey" not in response:
                return
            query["ExclusiveStartKey"] = response["LastEvaluatedKey"]

    def read_schema(self, topic: TopicRef) -> dict[str, Any] | None:
        item = self._get(topic, SCHEMA_SK)
        return _payload(item) if item is not None else None

    def identity(self, proposed: str) -> str:
        key = {PARTITION_KEY: {"S": IDENTITY_PK}, SORT_KEY: {"S": IDENTITY_SK}}
        with _translated():
            item = self.client.get_item(TableName=self.table_name, Key=key, ConsistentRead=True).get("Item")
            if item is None:
                try:
                    self.client.put_item(
                        TableName=self.table_name,
                        Item={**key, "id": {"S": proposed}},
                        ConditionExpression="attribute_not_exists(#pk)",
                        ExpressionAttributeNames={"#pk": PARTITION_KEY},
                        ReturnValuesOnConditionCheckFailure="ALL_OLD",
                    )
                    return proposed
                except ClientError as exc:
                    if _code(exc) != "ConditionalCheckFailedException":
                        raise
                    item = exc.response.get("Item") or {}
        return str(_deserialize(item).get("id", ""))

    def read_output(self, topic: TopicRef, seq: int) -> OutputRecord | None:
        item = self._get(topic, _output_sk(seq))
        return _output_record(item) if item else None

    # --- runs -----------------------------------------------------------------------------------------

    def claim_run(self, topic: TopicRef, run_key: str, owner: str, *, now_ms: int, gc_at_s: int) -> str:
        item = {
            PARTITION_KEY: topic.key,
            SORT_KEY: RUN_SK_PREFIX + run_key,
            "owner": owner,
            "claimed_at": now_ms,
            TTL_ATTRIBUTE: gc_at_s,
        }
        with _translated():
            try:
                self.client.put_item(
                    TableName=self.table_name,
                    Item=_serialize(item),
                    ConditionExpression=RUN_UNCLAIMED,
                    ExpressionAttributeNames={"#pk": PARTITION_KEY, "#owner": "owner"},
                    ExpressionAttributeValues=_values(owner=owner),
                    ReturnValuesOnConditionCheckFailure="ALL_OLD",
                )
            except ClientError as exc:
                if _code(exc) != "ConditionalCheckFailedException":
                    raise
                return str(_deserialize(exc.response.get("Item", {})).get("owner", ""))
        return owner

    def _get(self, topic: TopicRef, sort_key: str) -> dict[str, Any] | None:
        with _translated():
            response = self.client.get_item(
                TableName=self.table_name, Key=_key(topic, sort_key), ConsistentRead=True
            )
        return _deserialize(response["Item"]) if "Item" in response else None


_RELEASE = "SET #last_owner = #owner, #released = :now REMOVE #owner, #ttl"
#: A run that ended well records its outcome and ends a failing streak (``leanops status``).
_HEALTHY = "#last_outcome = :outcome, #last_run_at = :now, #failures = :zero"
_HEALTH_NAMES = ("#last_outcome", "#last_run_at", "#failures")


# --- errors, translated once -------------------------------------------------------------------------


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


@contextmanager
def _lock_conflict() -> Iterator[None]:
    """A failed lock condition becomes :class:`LockConflict` with the item as it was (``ALL_OLD``)."""
    try:
        yield
    except ClientError as exc:
        if _code(exc) != "ConditionalCheckFailedException":
            raise
        item = exc.response.get("Item")
        raise LockConflict(_lock_state(_deserialize(item)) if item else None) from exc


@contextmanager
def _translated() -> Iterator[None]:
    """Throttling and transient errors become :class:`StoreThrottled`, the rest :class:`StoreUnavailable`."""
    try:
        yield
    except ClientError as exc:
        code = _code(exc)
        if code in _THROTTLING or (
            code == "TransactionCanceledException" and "TransactionConflict" in str(exc)
        ):
            raise StoreThrottled(f"DynamoDB is busy ({code}); retry with backoff") from exc
        if code == "ResourceNotFoundException":
            raise StoreUnavailable(
                "the state table does not exist: deploy the stack, or run `leanops local up` locally"
            ) from exc
        raise StoreUnavailable(f"DynamoDB request failed: {code}: {exc}") from exc
    except BotoCoreError as exc:
        raise StoreUnavailable(f"DynamoDB could not be reached: {exc}") from exc


# --- values <-> items --------------------------------------------------------------------------------


def _key(topic: TopicRef, sort_key: str) -> dict[str, Any]:
    return {PARTITION_KEY: {"S": topic.key}, SORT_KEY: {"S": sort_key}}


def _names(*placeholders: str) -> dict[str, str]:
    return {name: _NAMES[name] for name in placeholders}


def _values(**values: Any) -> dict[str, Any]:
    return {f":{name}": _serializer.serialize(_to_dynamo(value)) for name, value in values.items()}


def _serialize(item: Mapping[str, Any]) -> dict[str, Any]:
    return {name: _serializer.serialize(_to_dynamo(value)) for name, value in item.items()}


def _deserialize(item: Mapping[str, Any]) -> dict[str, Any]:
    return {name: _from_dynamo(_deserializer.deserialize(value)) for name, value in item.items()}


def _to_dynamo(value: Any) -> Any:
    """DynamoDB numbers must be Decimals; floats go through ``str`` so no binary noise is stored. ``None``
    is stored as ``NULL`` (and read back as None), so a record keeps the names its writer gave it."""
    if isinstance(value, bool):
        return value
    if isinstance(value, float):
        return Decimal(str(value))
    if isinstance(value, dict):
        return {k: _to_dynamo(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_to_dynamo(v) for v in value]
    return value


def _from_dynamo(value: Any) -> Any:
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, dict):
        return {k: _from_dynamo(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_from_dynamo(v) for v in value]
    return value


def _checkpoint_attributes(checkpoint: Checkpoint, *, drop_empty: bool = False) -> dict[str, Any]:
    """The checkpoint item's attributes; the lock item's ``cp`` copy has the same shape, without Nones."""
    attributes = {
        "position": checkpoint.position,
        "last_ingested_ts": checkpoint.last_ingested_ts,
        "last_snapshot_id": checkpoint.last_snapshot_id,
        "seq": checkpoint.seq,
        "updated_at": checkpoint.updated_at_ms,
        "committed_by": checkpoint.committed_by,
        "fence": checkpoint.fence,
        "batch_start": checkpoint.batch_start,
    }
    return {k: v for k, v in attributes.items() if v is not None} if drop_empty else attributes


def _checkpoint(item: Mapping[str, Any]) -> Checkpoint:
    return Checkpoint(
        position=item.get("position"),
        last_ingested_ts=item.get("last_ingested_ts"),
        last_snapshot_id=item.get("last_snapshot_id"),
        seq=int(item.get("seq", 0)),
        updated_at_ms=item.get("updated_at"),
        committed_by=item.get("committed_by"),
        fence=item.get("fence"),
        batch_start=item.get("batch_start"),
    )


def _committed_item(topic: TopicRef, sort_key: str, fields: Mapping[str, Any], now_ms: int) -> dict[str, Any]:
    """An item a commit puts (an output record, a schema): the caller's fields and the commit's time."""
    return {PARTITION_KEY: topic.key, SORT_KEY: sort_key, **fields, "committed_at": now_ms}


def _payload(item: Mapping[str, Any]) -> dict[str, Any]:
    """The caller's fields of an item :func:`_committed_item` built."""
    return {k: v for k, v in item.items() if k not in (PARTITION_KEY, SORT_KEY, "committed_at")}


def _output_sk(seq: int) -> str:
    return f"{OUTPUT_SK_PREFIX}{seq:012d}"


def _output_record(item: Mapping[str, Any]) -> OutputRecord:
    seq = int(str(item[SORT_KEY])[len(OUTPUT_SK_PREFIX) :])
    return OutputRecord(seq=seq, committed_at_ms=int(item["committed_at"]), data=_payload(item))


def _lock_state(item: Mapping[str, Any]) -> LockState:
    copy = item.get("cp")
    return LockState(
        owner=item.get("owner"),
        fence=int(item.get("fence", 0)),
        lease_expires_at_ms=int(item.get("lease_expires_at", 0)),
        acquired_at_ms=item.get("acquired_at"),
        checkpoint=_checkpoint(copy) if copy else None,
        last_owner=item.get("last_owner"),
        released_at_ms=item.get("released_at"),
        last_outcome=item.get("last_outcome"),
        last_run_at_ms=item.get("last_run_at"),
        failures=int(item.get("failures", 0)),
        last_error=item.get("last_error"),
        last_cause=item.get("last_cause"),
        last_failed=item.get("last_failed"),
    )
