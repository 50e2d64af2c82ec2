"""The DynamoDB store: the only module that speaks DynamoDB. Maps values to items, applies conditions,
and translates AWS errors into the leanops hierarchy once, here.

Item layout (one table, ``pk`` + ``sk``; decision record docs/decisions/0001-state-item-layout.md):

================  ==================  ======================================================================
pk                sk                  attributes
================  ==================  ======================================================================
topic#<name>      ``lock``            owner, fence, lease_expires_at (ms), acquired_at, expires_at (TTL, only
                                      while held), cp (copy of the checkpoint), last_owner, released_at,
                                      last run's outcome, last_success_at; paused, paused_by,
                                      paused_reason, paused_at_ms
                                      while an operator has paused the topic
topic#<name>      ``checkpoint``      position, last_ingested_ts, last_snapshot_id, seq, updated_at,
                                      committed_by, fence, batch_start, resume (the source's hint for
                                      reading after position, stored without the position; NULL after
                                      an override) — never a TTL
topic#<name>      ``run#<key>``       owner, claimed_at, expires_at (TTL)
topic#<name>      ``runlog#<ms>#<hex>``  one execution as it ended: execution, outcome, started_at_ms,
                                      ended_at_ms, batches, records, position, lag_ms, fence, error, cause
                                      (``<ms>``: the execution's start, 13 digits; ``<hex>``: 8 of its ARN's
                                      SHA-256); written with the write that ended the run — TTL: the runs'
                                      retention
topic#<name>      ``output#<seq>``    the commit's output fields (None stored as NULL), committed_at (ms),
                                      position (where the checkpoint moved); an override's: kind
                                      ``override``, its action, actor and reason; superseded_by and
                                      superseded_at_ms once a rewind superseded it. ``<seq>`` is the commit's
                                      seq in 12 digits, so keys sort as numbers — TTL: outputs' retention
                                      (the manifest of committed output; older records live in the archive)
topic#<name>      ``audit#<ms>#<hex>``  action, actor, reason, at_ms, before, after: one operator change,
                                      written once (``<ms>``: 13 digits), never updated — TTL: audit retention
topic#<name>      ``schema``          the sink's columns, their types and a version (Parquet sinks; written by
                                      the commit whose batch changed it) — never a TTL
leanops#state     ``identity``        id: the state's identity, recorded once (sink markers name it)
leanops#topics    ``<topic name>``    name, settings (the topics file's entry, paths resolved), version,
                                      digest, pushed_by, pushed_at_ms: the topic's pushed settings, read by
                                      each run's acquire (``leanops topics push``; decision 0013)
topic#<name>      ``config#<version>``  the same, one item per push (``<version>``: 10 digits), and
                                      removed: true for the push that removed the topic — written once; TTL:
                                      audit retention
================  ==================  ======================================================================

Every item that records history has a TTL (``expires_at``) after its kind's :class:`Retention`; TTL deletions
of run, output, audit and config records reach the archive through the table's stream (leanops.archive;
docs/decisions/0014). Checkpoints, locks at rest, schemas, settings and the identity never expire.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from decimal import Decimal
from typing import Any

import boto3
from boto3.dynamodb.types import TypeDeserializer, TypeSerializer
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from leanops.constants import (
    DEFAULT_STATE_TABLE,
    ENV_RETENTION_AUDIT_DAYS,
    ENV_RETENTION_OUTPUTS_DAYS,
    ENV_RETENTION_RUNS_DAYS,
    ENV_STATE_TABLE,
)
from leanops.errors import InvalidInput, StoreThrottled, StoreUnavailable
from leanops.protocol.model import (
    AUDIT_PREFIX,
    AuditRecord,
    Backfill,
    Checkpoint,
    LockState,
    OutputKind,
    OutputRecord,
    PushedTopic,
    Retention,
    RunRecord,
    TopicRef,
)
from leanops.protocol.store import (
    AuditKeyTaken,
    BackfillDefined,
    CommitRejected,
    LockConflict,
    StateStore,
    TopicPushConflict,
    page_limit,
)
from leanops.protocol.table import PARTITION_KEY, SORT_KEY, TTL_ATTRIBUTE

LOCK_SK = "lock"
CHECKPOINT_SK = "checkpoint"
RUN_SK_PREFIX = "run#"
OUTPUT_SK_PREFIX = "output#"
SCHEMA_SK = "schema"
BACKFILL_SK_PREFIX = "backfill#"
#: The state's identity item (one per table): the id that sink markers record.
IDENTITY_PK, IDENTITY_SK = "leanops#state", "identity"
#: The partition of every topic's pushed settings (one item per topic, sort key its name).
PUSHED_TOPICS_PK = "leanops#topics"
CONFIG_SK_PREFIX = "config#"
PUSHED_VERSION = "#version = :expected_version"

# Conditions, by the names used in leanops.protocol.store.
LOCK_FREE = "attribute_not_exists(#owner)"
LEASE_EXPIRED = "#lease < :expired_before"
OWNED = "#owner = :owner AND #fence = :fence"
OWNED_BY = "#owner = :owner"
CHECKPOINT_ABSENT = "attribute_not_exists(#seq)"
CHECKPOINT_UNCHANGED = "#position = :expected_position AND #seq = :expected_seq"
CHECKPOINT_AT_BEGINNING = "attribute_type(#position, :null) AND #seq = :expected_seq"
RUN_UNCLAIMED = "attribute_not_exists(#pk) OR #owner = :owner"
NOT_PAUSED = "attribute_not_exists(#paused)"
LIVE_OUTPUT = "attribute_exists(#pk) AND attribute_not_exists(#superseded_by)"
NEW_ITEM = "attribute_not_exists(#pk)"

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
    "#last_success": "last_success_at",
    "#paused": "paused",
    "#paused_by": "paused_by",
    "#paused_reason": "paused_reason",
    "#paused_at": "paused_at_ms",
    "#pk": PARTITION_KEY,
    "#superseded_by": "superseded_by",
    "#superseded_at": "superseded_at_ms",
    "#version": "version",
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


def default_retention() -> Retention:
    """The retention the environment sets (the template's parameters), defaults where unset."""
    days = {
        "runs_days": os.environ.get(ENV_RETENTION_RUNS_DAYS),
        "outputs_days": os.environ.get(ENV_RETENTION_OUTPUTS_DAYS),
        "audit_days": os.environ.get(ENV_RETENTION_AUDIT_DAYS),
    }
    try:
        return Retention(**{kind: int(value) for kind, value in days.items() if value})
    except ValueError as exc:
        raise InvalidInput(f"retention days must be whole numbers: {days}") from exc


class DynamoDBStore(StateStore):
    """:class:`StateStore` on one DynamoDB table (see the module docstring for the item layout)."""

    def __init__(
        self, table_name: str | None = None, client: Any | None = None, retention: Retention | None = None
    ) -> None:
        self.table_name = table_name or default_table_name()
        self.client = client if client is not None else default_client()
        self.retention = retention if retention is not None else default_retention()

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
        even_if_paused: bool = False,
    ) -> LockState:
        condition = f"{LOCK_FREE} OR {LEASE_EXPIRED}"
        names = ["#owner", "#fence", "#lease", "#acquired", "#ttl"]
        if not even_if_paused:  # a paused topic fails the same condition; ALL_OLD tells it from a held lock
            condition, names = f"({condition}) AND {NOT_PAUSED}", [*names, "#paused"]
        with _translated(), _lock_conflict():
            response = self.client.update_item(
                TableName=self.table_name,
                Key=_key(topic, LOCK_SK),
                UpdateExpression=(
                    "SET #owner = :owner, #fence = if_not_exists(#fence, :seed) + :one, "
                    "#lease = :lease, #acquired = :now, #ttl = :gc"
                ),
                ConditionExpression=condition,
                ExpressionAttributeNames=_names(*names),
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
        self,
        topic: TopicRef,
        owner: str,
        fence: int | None,
        *,
        now_ms: int,
        outcome: str | None = None,
        run: RunRecord | None = None,
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
        update = self._update(
            topic,
            LOCK_SK,
            expression,
            OWNED if fence is not None else OWNED_BY,
            _names(*names),
            _values(**values),
        )
        self._update_with_run(update, topic, run)

    def _update_with_run(self, update: dict[str, Any], topic: TopicRef, run: RunRecord | None) -> None:
        """``update`` of the lock alone, or with the run's record in one transaction (one request either
        way: the record costs write units, not a round trip). A failed lock condition raises LockConflict."""
        if run is None:
            with _translated(), _lock_conflict():
                self.client.update_item(**update)
            return
        try:
            self._transact([{"Update": update}, self._run_record_put(topic, run)])
        except _Cancelled as cancelled:
            found = cancelled.items[0]
            raise LockConflict(_lock_state(found) if found else None) from cancelled

    def _output_item(
        self, topic: TopicRef, seq: int, fields: Mapping[str, Any], now_ms: int
    ) -> dict[str, Any]:
        return output_item(topic, seq, fields, now_ms, self.retention)

    def _audit_item(self, topic: TopicRef, audit: AuditRecord) -> dict[str, Any]:
        return audit_item(topic, audit, self.retention)

    def _run_record_put(self, topic: TopicRef, run: RunRecord) -> dict[str, Any]:
        """The run record's put. Unconditional: every writer of this key is a task of one execution ending
        it, and the lock condition beside it (or the run's own claim) admits one."""
        item = run_record_item(topic, run, self.retention)
        return {"Put": {"TableName": self.table_name, "Item": _serialize(item)}}

    def put_run_record(self, topic: TopicRef, run: RunRecord) -> None:
        """The record of a run that ended without a write of its own (skipped, paused, the safety net's).
        Written only if absent: a run that ended in the state machine keeps its own record."""
        put = self._run_record_put(topic, run)["Put"]
        with _translated(), contextlib.suppress(self.client.exceptions.ConditionalCheckFailedException):
            self.client.put_item(
                **put, ConditionExpression="attribute_not_exists(#pk)", ExpressionAttributeNames=_names("#pk")
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
        run: RunRecord | None = None,
    ) -> None:
        checkpoint_update = self._checkpoint_update(topic, expected, new)
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
        lock_update = self._update(topic, LOCK_SK, lock_expression, OWNED, lock_names, lock_values)
        items: list[dict[str, Any]] = [{"Update": checkpoint_update}, {"Update": lock_update}]
        if output is not None:
            # No condition of its own: it lands only with the commit that makes ``new.seq`` current.
            fields = {**output, "position": new.position}
            put = {
                "TableName": self.table_name,
                "Item": _serialize(self._output_item(topic, new.seq, fields, now_ms)),
            }
            items.append({"Put": put})
        if schema is not None:  # likewise guarded by the checkpoint and lock conditions
            item = _committed_item(topic, SCHEMA_SK, schema, now_ms)
            items.append({"Put": {"TableName": self.table_name, "Item": _serialize(item)}})
        if run is not None:  # the run ends with this commit (release): its record, in the same request
            items.append(self._run_record_put(topic, run))
        try:
            self._transact(items)
        except _Cancelled as cancelled:  # checkpoint and lock, in that order; the puts have no condition
            raise _commit_rejected(cancelled) from cancelled

    def _checkpoint_update(self, topic: TopicRef, expected: Checkpoint, new: Checkpoint) -> dict[str, Any]:
        """Write ``new`` to the checkpoint item if it is exactly ``expected`` (``checkpoint_unchanged``)."""
        if expected.seq == 0:
            condition, condition_values = CHECKPOINT_ABSENT, {}
        elif expected.position is None:  # rewound to the beginning: NULL compared by type, not by value
            condition = CHECKPOINT_AT_BEGINNING
            condition_values = {"null": "NULL", "expected_seq": expected.seq}
        else:
            condition = CHECKPOINT_UNCHANGED
            condition_values = {"expected_position": expected.position, "expected_seq": expected.seq}
        attributes = _checkpoint_attributes(new)
        return {
            "TableName": self.table_name,
            "Key": _key(topic, CHECKPOINT_SK),
            "UpdateExpression": "SET " + ", ".join(f"#{name} = :{name}" for name in attributes),
            "ConditionExpression": condition,
            "ExpressionAttributeNames": {f"#{name}": name for name in attributes},
            "ExpressionAttributeValues": _values(**attributes, **condition_values),
            "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
        }

    def _update(
        self,
        topic: TopicRef,
        sort_key: str,
        expression: str,
        condition: str,
        names: dict[str, str],
        values: dict[str, Any],
    ) -> dict[str, Any]:
        """A conditional Update of a transaction, returning the item as it was if its condition fails."""
        return {
            "TableName": self.table_name,
            "Key": _key(topic, sort_key),
            "UpdateExpression": expression,
            "ConditionExpression": condition,
            "ExpressionAttributeNames": names,
            "ExpressionAttributeValues": values,
            "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
        }

    def _new_item(self, item: Mapping[str, Any]) -> dict[str, Any]:
        """A Put of a transaction that writes ``item`` once (``new_item``) and never replaces one."""
        return {
            "Put": {
                "TableName": self.table_name,
                "Item": _serialize(item),
                "ConditionExpression": NEW_ITEM,
                "ExpressionAttributeNames": _names("#pk"),
            }
        }

    def _transact(self, items: list[dict[str, Any]]) -> None:
        """One ``TransactWriteItems``. Cancelled by a failed condition: :class:`_Cancelled`, per item."""
        with _translated():
            try:
                self.client.transact_write_items(TransactItems=items)
            except ClientError as exc:
                if _code(exc) != "TransactionCanceledException":
                    raise
                reasons = exc.response.get("CancellationReasons") or []
                failed = [reason.get("Code") == "ConditionalCheckFailed" for reason in reasons]
                if not any(failed):
                    raise  # e.g. TransactionConflict: translated to StoreThrottled
                items_as_they_were = [
                    _deserialize(reason["Item"]) if reason.get("Item") else None for reason in reasons
                ]
                raise _Cancelled(failed, items_as_they_were) from exc

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
        for item in self._query(topic, OUTPUT_SK_PREFIX, newest_first, limit, page_size):
            yield _output_record(item)

    def _query(
        self,
        topic: TopicRef | str,
        prefix: str,
        newest_first: bool,
        limit: int | None,
        page_size: int | None,
    ) -> Iterator[dict[str, Any]]:
        """The topic's items (or a partition key's) whose sort key starts with ``prefix``: one strongly
        consistent ``Query`` per page, at most ``limit`` items in all (every item of the partition for an
        empty ``prefix``: DynamoDB refuses an empty key value)."""
        query: dict[str, Any] = {
            "TableName": self.table_name,
            "KeyConditionExpression": "#pk = :pk AND begins_with(#sk, :prefix)",
            "ExpressionAttributeNames": {"#pk": PARTITION_KEY, "#sk": SORT_KEY},
            "ExpressionAttributeValues": _values(pk=_partition(topic), prefix=prefix),
            "ScanIndexForward": not newest_first,
            "ConsistentRead": True,
        }
        if not prefix:
            query["KeyConditionExpression"] = "#pk = :pk"
            query["ExpressionAttributeNames"] = {"#pk": PARTITION_KEY}
            query["ExpressionAttributeValues"] = _values(pk=_partition(topic))
        remaining = limit
        while remaining is None or remaining > 0:
            size = page_limit(page_size, remaining)
            with _translated():
                response = self.client.query(**query, **({"Limit": size} if size is not None else {}))
            items = [_deserialize(item) for item in response.get("Items", [])]
            yield from items
            if remaining is not None:
                remaining -= len(items)
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
        item = run_key_item(topic, run_key, owner, now_ms, gc_at_s)
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

    # --- operator changes ---------------------------------------------------------------------------

    def force_unlock(
        self, topic: TopicRef, owner: str, fence: int, *, now_ms: int, audit: AuditRecord
    ) -> None:
        unlock = self._update(
            topic,
            LOCK_SK,
            f"SET #fence = :next, #last_outcome = :outcome, #last_run_at = :now, {_RELEASE[len('SET ') :]}",
            OWNED,
            _names("#owner", "#fence", "#last_outcome", "#last_run_at", "#last_owner", "#released", "#ttl"),
            _values(owner=owner, fence=fence, next=fence + 1, outcome="unlocked", now=now_ms),
        )
        self._transact_on_lock(topic, unlock, audit)

    def pause(self, topic: TopicRef, *, actor: str, reason: str, now_ms: int, audit: AuditRecord) -> None:
        pause = self._update(
            topic,
            LOCK_SK,
            # A new lock item's fence starts at the clock, as acquire starts it (fences never repeat).
            "SET #paused = :yes, #paused_by = :actor, #paused_reason = :reason, #paused_at = :now, "
            "#fence = if_not_exists(#fence, :now)",
            NOT_PAUSED,
            _names("#paused", "#paused_by", "#paused_reason", "#paused_at", "#fence"),
            _values(yes=True, actor=actor, reason=reason, now=now_ms),
        )
        self._transact_on_lock(topic, pause, audit)

    def resume(self, topic: TopicRef, *, paused_at_ms: int, audit: AuditRecord) -> None:
        resume = self._update(
            topic,
            LOCK_SK,
            "REMOVE #paused, #paused_by, #paused_reason, #paused_at",
            "#paused_at = :paused_at",
            _names("#paused", "#paused_by", "#paused_reason", "#paused_at"),
            _values(paused_at=paused_at_ms),
        )
        self._transact_on_lock(topic, resume, audit)

    def _transact_on_lock(self, topic: TopicRef, change: dict[str, Any], audit: AuditRecord) -> None:
        """One change to the lock item and its audit record, in one transaction."""
        try:
            self._transact([{"Update": change}, self._new_item(self._audit_item(topic, audit))])
        except _Cancelled as cancelled:
            if cancelled.failed[0]:
                lock = cancelled.items[0]
                raise LockConflict(_lock_state(lock) if lock else None) from cancelled
            raise AuditKeyTaken(audit.key) from cancelled

    def override_checkpoint(
        self,
        topic: TopicRef,
        owner: str,
        fence: int,
        *,
        expected: Checkpoint,
        new: Checkpoint,
        record: Mapping[str, Any],
        supersede: Sequence[int],
        now_ms: int,
        audit: AuditRecord,
    ) -> None:
        lock_update = self._update(
            topic,
            LOCK_SK,
            "SET #cp = :cp",
            OWNED,
            _names("#owner", "#fence", "#cp"),
            _values(owner=owner, fence=fence, cp=_checkpoint_attributes(new.as_copy(), drop_empty=True)),
        )
        fields = {**record, "kind": OutputKind.OVERRIDE.value, "position": new.position}
        items: list[dict[str, Any]] = [
            {"Update": self._checkpoint_update(topic, expected, new)},
            {"Update": lock_update},
            self._new_item(self._output_item(topic, new.seq, fields, now_ms)),
            self._new_item(self._audit_item(topic, audit)),
        ]
        for seq in supersede:
            superseded = self._update(
                topic,
                _output_sk(seq),
                "SET #superseded_by = :by, #superseded_at = :now",
                LIVE_OUTPUT,
                _names("#pk", "#superseded_by", "#superseded_at"),
                _values(by=new.seq, now=now_ms),
            )
            items.append({"Update": superseded})
        try:
            self._transact(items)
        except _Cancelled as cancelled:
            if cancelled.failed == [index == 3 for index in range(len(items))]:  # the audit put alone
                raise AuditKeyTaken(audit.key) from cancelled
            raise _commit_rejected(cancelled) from cancelled

    def define_backfill(
        self,
        backfill: Backfill,
        *,
        start: Checkpoint | None,
        record: Mapping[str, Any],
        now_ms: int,
        audit: AuditRecord,
    ) -> None:
        topic = TopicRef(backfill.topic)
        definition = {PARTITION_KEY: topic.key, SORT_KEY: _backfill_sk(backfill.id), **backfill.to_json()}
        items = [self._new_item(definition), self._new_item(self._audit_item(topic, audit))]
        if start is not None:
            state = backfill.ref
            fields = {**record, "kind": OutputKind.OVERRIDE.value, "position": start.position}
            items += [
                self._new_item(
                    {PARTITION_KEY: state.key, SORT_KEY: CHECKPOINT_SK, **_checkpoint_attributes(start)}
                ),
                self._new_item(self._output_item(state, start.seq, fields, now_ms)),
            ]
        try:
            self._transact(items)
        except _Cancelled as cancelled:
            if cancelled.failed[1] and not cancelled.failed[0]:
                raise AuditKeyTaken(audit.key) from cancelled
            current = self.read_backfill(topic, backfill.id) if cancelled.failed[0] else None
            raise BackfillDefined(current) from cancelled

    def read_backfill(self, topic: TopicRef, backfill_id: str) -> Backfill | None:
        item = self._get(topic, _backfill_sk(backfill_id))
        return _backfill(item) if item is not None else None

    def backfills(self, topic: TopicRef) -> Iterator[Backfill]:
        for item in self._query(topic, BACKFILL_SK_PREFIX, False, None, None):
            yield _backfill(item)

    def audit_records(
        self, topic: TopicRef, *, limit: int | None, page_size: int | None = None
    ) -> Iterator[AuditRecord]:
        for item in self._query(topic, AUDIT_PREFIX, True, limit, page_size):
            yield AuditRecord(
                key=str(item[SORT_KEY]),
                action=item["action"],
                actor=item["actor"],
                reason=item["reason"],
                at_ms=int(item["at_ms"]),
                before=item.get("before") or {},
                after=item.get("after") or {},
            )

    def _get(self, topic: TopicRef | str, sort_key: str) -> dict[str, Any] | None:
        with _translated():
            response = self.client.get_item(
                TableName=self.table_name, Key=_key(topic, sort_key), ConsistentRead=True
            )
        return _deserialize(response["Item"]) if "Item" in response else None

    # --- pushed topic settings ----------------------------------------------------------------------------

    def read_pushed_topic(self, name: str) -> PushedTopic | None:
        item = self._get(PUSHED_TOPICS_PK, name)
        return _pushed_topic(item) if item is not None else None

    def pushed_topics(self) -> Iterator[PushedTopic]:
        for item in self._query(PUSHED_TOPICS_PK, "", False, None, None):
            yield _pushed_topic(item)

    def push_topic(self, topic: PushedTopic, *, expected_version: int | None) -> None:
        current = {PARTITION_KEY: PUSHED_TOPICS_PK, SORT_KEY: topic.name, **_pushed_attributes(topic)}
        if expected_version is None:
            put = self._new_item(current)
            put["Put"]["ReturnValuesOnConditionCheckFailure"] = "ALL_OLD"  # a refusal names what is there
        else:
            put = {
                "Put": {
                    "TableName": self.table_name,
                    "Item": _serialize(current),
                    "ConditionExpression": PUSHED_VERSION,
                    "ExpressionAttributeNames": _names("#version"),
                    "ExpressionAttributeValues": _values(expected_version=expected_version),
                    "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
                }
            }
        self._push_transaction(topic, put)

    def remove_pushed_topic(self, removal: PushedTopic, *, expected_version: int) -> None:
        delete = {
            "Delete": {
                "TableName": self.table_name,
                "Key": _key(PUSHED_TOPICS_PK, removal.name),
                "ConditionExpression": PUSHED_VERSION,
                "ExpressionAttributeNames": _names("#version"),
                "ExpressionAttributeValues": _values(expected_version=expected_version),
                "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
            }
        }
        self._push_transaction(removal, delete)

    def _push_transaction(self, topic: PushedTopic, change: dict[str, Any]) -> None:
        """``change`` to the topic's current settings, and its history record, in one transaction."""
        history = {
            PARTITION_KEY: TopicRef(topic.name).key,
            SORT_KEY: f"{CONFIG_SK_PREFIX}{topic.version:010d}",
            **_pushed_attributes(topic),
            TTL_ATTRIBUTE: self.retention.audit_expire_at_s(topic.pushed_at_ms),
        }
        try:
            self._transact([change, self._new_item(history)])
        except _Cancelled as cancelled:
            found = cancelled.items[0]
            raise TopicPushConflict(
                topic.name, int(found["version"]) if found and "version" in found else None
            ) from cancelled

    def topic_history(self, name: str, *, limit: int | None) -> Iterator[PushedTopic]:
        for item in self._query(TopicRef(name), CONFIG_SK_PREFIX, True, limit, None):
            yield _pushed_topic(item)


_RELEASE = "SET #last_owner = #owner, #released = :now REMOVE #owner, #ttl"
#: A run that ended well records its outcome and ends a failing streak (``leanops status``).
_HEALTHY = "#last_outcome = :outcome, #last_run_at = :now, #last_success = :now, #failures = :zero"
_HEALTH_NAMES = ("#last_outcome", "#last_run_at", "#last_success", "#failures")


# --- errors, translated once -------------------------------------------------------------------------


class _Cancelled(Exception):
    """A transaction cancelled by failed conditions: per item (in the request's order), whether its
    condition failed, and the item as it was then (``ALL_OLD``; None if absent or not returned)."""

    def __init__(self, failed: list[bool], items: list[dict[str, Any] | None]) -> None:
        super().__init__(f"transaction cancelled: conditions failed {failed}")
        self.failed = failed
        self.items = items


def _commit_rejected(cancelled: _Cancelled) -> CommitRejected:
    """A cancelled commit or override: its first two items are the checkpoint and the lock updates; any
    other failed condition is an output record's (an override's)."""
    failed, items = cancelled.failed, cancelled.items
    checkpoint, lock = items[0], items[1]
    return CommitRejected(
        checkpoint_failed=failed[0],
        lock_failed=failed[1],
        checkpoint=_checkpoint(checkpoint) if checkpoint else None,
        lock=_lock_state(lock) if lock else None,
        outputs_failed=any(failed[2:]),
    )


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


def _key(topic: TopicRef | str, sort_key: str) -> dict[str, Any]:
    return {PARTITION_KEY: {"S": _partition(topic)}, SORT_KEY: {"S": sort_key}}


def _partition(topic: TopicRef | str) -> str:
    """A topic's partition key, or a partition key given as it is (``leanops#topics``)."""
    return topic if isinstance(topic, str) else topic.key


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


def _pushed_attributes(topic: PushedTopic) -> dict[str, Any]:
    """A pushed topic's attributes; its settings as JSON text, since a DynamoDB map does not keep the order
    of its keys (a Parquet schema's columns are in the order declared)."""
    return {**topic.to_json(), "settings": json.dumps(topic.settings)}


def _pushed_topic(item: Mapping[str, Any]) -> PushedTopic:
    return PushedTopic.from_json({**item, "settings": json.loads(item["settings"])})


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
        # The hint's position is the checkpoint's: stored once (long keys would cost write units twice).
        "resume": _without_position(checkpoint.resume),
    }
    return {k: v for k, v in attributes.items() if v is not None} if drop_empty else attributes


def _without_position(resume: Mapping[str, Any] | None) -> dict[str, Any] | None:
    return {k: v for k, v in resume.items() if k != "position"} if resume is not None else None


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
        resume={**item["resume"], "position": item.get("position")}
        if isinstance(item.get("resume"), dict)
        else None,
    )


# --- the items that record history, each with its TTL (also what bench/retention.py writes) -----------------


def run_key_item(topic: TopicRef, run_key: str, owner: str, now_ms: int, gc_at_s: int) -> dict[str, Any]:
    """A run key's item: who claimed it, expiring at ``gc_at_s``."""
    return {
        PARTITION_KEY: topic.key,
        SORT_KEY: RUN_SK_PREFIX + run_key,
        "owner": owner,
        "claimed_at": now_ms,
        TTL_ATTRIBUTE: gc_at_s,
    }


def run_record_item(topic: TopicRef, run: RunRecord, retention: Retention) -> dict[str, Any]:
    """A run record's item, expiring after the runs' retention."""
    return {
        PARTITION_KEY: topic.key,
        SORT_KEY: run.key,
        **run.to_json(),
        TTL_ATTRIBUTE: retention.runs_expire_at_s(run.ended_at_ms),
    }


def output_item(
    topic: TopicRef, seq: int, fields: Mapping[str, Any], now_ms: int, retention: Retention
) -> dict[str, Any]:
    """Output record ``seq`` (a batch's or an override's), expiring after the outputs' retention."""
    item = _committed_item(topic, _output_sk(seq), fields, now_ms)
    return {**item, TTL_ATTRIBUTE: retention.outputs_expire_at_s(now_ms)}


def audit_item(topic: TopicRef, audit: AuditRecord, retention: Retention) -> dict[str, Any]:
    """An audit record's item, written once, expiring after the audit retention (then archived)."""
    fields = audit.to_json()
    del fields["key"]
    return {
        PARTITION_KEY: topic.key,
        SORT_KEY: audit.key,
        **fields,
        TTL_ATTRIBUTE: retention.audit_expire_at_s(audit.at_ms),
    }


def _committed_item(topic: TopicRef, sort_key: str, fields: Mapping[str, Any], now_ms: int) -> dict[str, Any]:
    """An item a commit puts (an output record, a schema): the caller's fields and the commit's time."""
    return {PARTITION_KEY: topic.key, SORT_KEY: sort_key, **fields, "committed_at": now_ms}


_NOT_PAYLOAD = (PARTITION_KEY, SORT_KEY, "committed_at", TTL_ATTRIBUTE)


def _payload(item: Mapping[str, Any]) -> dict[str, Any]:
    """The caller's fields of an item :func:`_committed_item` built."""
    return {
        k: v for k, v in item.items() if k not in (PARTITION_KEY, SORT_KEY, "committed_at", TTL_ATTRIBUTE)
    }


def _output_sk(seq: int) -> str:
    return f"{OUTPUT_SK_PREFIX}{seq:012d}"


def _output_record(item: Mapping[str, Any]) -> OutputRecord:
    seq = int(str(item[SORT_KEY])[len(OUTPUT_SK_PREFIX) :])
    data = _payload(item)
    superseded_by = data.pop("superseded_by", None)
    superseded_at_ms = data.pop("superseded_at_ms", None)
    return OutputRecord(
        seq=seq,
        committed_at_ms=int(item["committed_at"]),
        data=data,
        position=data.pop("position", None),
        kind=OutputKind(data.pop("kind", OutputKind.BATCH.value)),
        superseded_by=int(superseded_by) if superseded_by is not None else None,
        superseded_at_ms=int(superseded_at_ms) if superseded_at_ms is not None else None,
    )


def _backfill_sk(backfill_id: str) -> str:
    return f"{BACKFILL_SK_PREFIX}{backfill_id}"


def _backfill(item: Mapping[str, Any]) -> Backfill:
    return Backfill.from_json({k: v for k, v in item.items() if k not in (PARTITION_KEY, SORT_KEY)})


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
        last_success_at_ms=item.get("last_success_at"),
        paused=bool(item.get("paused", False)),
        paused_by=item.get("paused_by"),
        paused_reason=item.get("paused_reason"),
        paused_at_ms=item.get("paused_at_ms"),
    )
