"""The ``dynamodb`` source: the items of one partition of a DynamoDB table, in sort-key order.

A topic reads one partition (``partition_key = partition_value``) of a table whose key schema is
``HASH = partition_key, RANGE = sort_key``, with a string (``S``) or number (``N``) sort key.

Checkpoint semantics
    The checkpoint is the last sort key processed, written ``N:<number>`` or ``S:<string>`` (e.g.
    ``N:1732521600123`` or ``S:2026-11-25T10:00:00.123Z#a1b2``). The next batch reads the items whose sort
    key is strictly greater, in DynamoDB's sort-key order (numbers numerically, strings by UTF-8 bytes).
    An item written later with a sort key at or below the checkpoint is never read: writers must use
    increasing sort keys, e.g. an event timestamp plus a unique suffix, or an ingestion-time sort key.
    Two items cannot have equal sort keys within one partition (they are the same item), so a batch never
    ends between two items of the same key. An item updated in place after it was read is not read again.

Reads are strongly consistent (``ConsistentRead``): an eventually consistent read could miss an item
whose sort key is below one it does see; the checkpoint would then move past that item, which would stay
behind it forever. Items come back as plain JSON values: numbers as ``int`` when integral else ``float``,
sets as sorted lists, binary values as base64 text.

``index``
    Query a secondary index (``partition_key`` / ``sort_key`` are the index's keys) instead of the table;
    it needs ``min_age_seconds``. A global secondary index is read eventually consistently (DynamoDB offers
    nothing else), and two items may share an index sort key: give the index's sort key a unique suffix
    (``<time>#<id>``), and set ``min_age_seconds`` well above the index's propagation delay (milliseconds to
    seconds), so an item is read only once the index surely holds it. An index source is at least once: an
    item whose index key moves forward (a requeue) is read again, and an index entry a moment stale may be
    read after its item changed: processors must read the item again (strongly) and be idempotent. A local
    secondary index is read strongly.

``min_age_seconds``
    The sort key is a time: epoch milliseconds, as a number or as the first 13 characters of a string, all
    digits and followed by a non-digit (``1732521600123#pay-7``). Only items at least this old by the clock
    are read; the rest wait for a later batch. A string key of another form would be compared as text with
    the time and never be read, or read at once: each run's check reads the partition's newest key and
    refuses the source (one line naming the key) if it is not of this form, as does a batch that reads one.

    This is what makes a time-keyed feed safe to follow: a writer whose item lands late (a slow
    transaction, a retried write, a clock a little behind) still lands after the checkpoint, as long as it
    lands within ``min_age_seconds`` of its key's time. It also reads a queue of
    due items (a key of "due at" time and ``min_age_seconds: 0``, or "since" and the wait).
"""

from __future__ import annotations

import base64
import re
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from decimal import Decimal
from typing import Any
from urllib.parse import quote

from boto3.dynamodb.types import Binary, TypeDeserializer
from botocore.exceptions import BotoCoreError, ClientError

from leanops.data.source import Source, SourceBatch
from leanops.errors import ConfigError, InvalidInput, SourceError, StoreThrottled
from leanops.protocol.dynamodb import default_client

#: Error codes that mean "busy, retry later" once the SDK's own retries are spent.
_THROTTLING = {
    "ProvisionedThroughputExceededException",
    "ThrottlingException",
    "RequestLimitExceeded",
    "InternalServerError",
    "ServiceUnavailable",
}
#: A string sort key ``min_age_seconds`` can read: 13 digits of epoch ms, then a non-digit or the end.
_TIME_KEY = re.compile(r"[0-9]{13}(?![0-9])")
#: A DynamoDB number as text (no whitespace, no underscores, no NaN or Infinity).
_NUMBER = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?")
_SORT_KEY_TYPES = ("N", "S")

_deserializer = TypeDeserializer()

#: What :meth:`DynamoDBSource.check` learnt of each (table, index, keys): the sort key's type and whether
#: reads may be strongly consistent. A warm process asks DescribeTable once, not on every batch; every
#: check() asks again (a run's Acquire), so a table recreated with other keys is seen by the next run.
_described: dict[tuple[str, str | None, str, str], tuple[str, bool]] = {}


def parse_position(position: str, table: str) -> tuple[str, str]:
    """``(type, text)`` of a position: ``("N", "17")`` for ``N:17``, ``("S", "abc")`` for ``S:abc``.

    Raises :class:`InvalidInput` for anything else (an empty string is no sort key either).
    """
    kind, sep, text = position.partition(":") if isinstance(position, str) else ("", "", "")
    valid = sep == ":" and (
        (kind == "N" and _NUMBER.fullmatch(text) is not None) or (kind == "S" and text != "")
    )
    if not valid:
        raise InvalidInput(
            f"invalid position {position!r} for dynamodb source {table}: expected N:<number> or S:<string>"
        )
    return kind, text


def position_ms(position: str) -> int | None:
    """The time of a time-keyed position (epoch ms: ``N:<ms>``, or ``S:`` and 13 digits then a non-digit),
    else None."""
    kind, _, text = position.partition(":")
    if kind == "N" and _NUMBER.fullmatch(text):
        return int(Decimal(text))
    match = _TIME_KEY.match(text) if kind == "S" else None
    return int(match.group()) if match else None


def plain(value: Any) -> Any:
    """A deserialized DynamoDB value as plain JSON: Decimal to int (integral) or float, sets to sorted
    lists, Binary to base64 text; maps and lists recursively."""
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, Binary | bytes | bytearray):
        return base64.b64encode(bytes(value.value if isinstance(value, Binary) else value)).decode("ascii")
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain(v) for v in value]
    if isinstance(value, set | frozenset):
        return sorted(plain(v) for v in value)
    return value


def _item(raw: Mapping[str, Any]) -> dict[str, Any]:
    return {name: plain(_deserializer.deserialize(value)) for name, value in raw.items()}


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _one_line(text: object) -> str:
    return " ".join(str(text).split())


class DynamoDBSource(Source):
    """Items of one partition after a sort key (see the module docstring)."""

    def __init__(
        self,
        table: str,
        partition_key: str,
        partition_value: str | int,
        sort_key: str,
        *,
        client: Any | None = None,
        until: str | None = None,
        index: str | None = None,
        min_age_seconds: int | None = None,
        clock: Callable[[], int] | None = None,
    ) -> None:
        for name, value in (("table", table), ("partition_key", partition_key), ("sort_key", sort_key)):
            if not isinstance(value, str) or not value:
                raise ConfigError(f"dynamodb source: {name} must be a non-empty string, got {value!r}")
        if isinstance(partition_value, bool) or not isinstance(partition_value, str | int):
            raise ConfigError(
                f"dynamodb source {table}: partition_value must be a string or an integer, "
                f"got {partition_value!r}"
            )
        if partition_value == "":
            raise ConfigError(f"dynamodb source {table}: partition_value must not be empty")
        self.table = table
        self.partition_key = partition_key
        self.partition_value = partition_value
        self.sort_key = sort_key
        # The store's client: same retries, AWS_ENDPOINT_URL_DYNAMODB selects DynamoDB Local.
        self.client = client if client is not None else default_client()
        self._sort_key_type: str | None = None  # "N" or "S", learnt by check() or on first need
        #: Read no item whose sort key is past this position (a backfill's end); None: unbounded.
        self.until = until
        if until is not None:
            parse_position(until, table)
        self.index = index
        self._consistent = True  # False once check() finds the index global
        self.min_age_ms = min_age_seconds * 1000 if min_age_seconds is not None else None
        #: Epoch milliseconds now (the protocol's clock in tasks): what min_age_seconds counts from.
        self.clock = clock or (lambda: int(time.time() * 1000))

    # --- Source -------------------------------------------------------------------------------------------

    def check(self) -> None:
        """One DescribeTable: the table exists, its key schema is ``HASH = partition_key, RANGE = sort_key``
        and the sort key is a string or a number; with ``min_age_seconds`` and string keys, one Query of the
        partition's newest key too, which must be a time key (a run's Acquire checks; the other tasks only
        learn the description, :meth:`_learn`)."""
        self._describe()
        if self.min_age_ms is not None and self._sort_key_type == "S":
            self._check_time_keys()

    def _describe(self) -> None:
        """DescribeTable, checked (see :meth:`check`), and what it says kept for this process."""
        with self._translated("describe"):
            try:
                table = self.client.describe_table(TableName=self.table)["Table"]
            except ClientError as exc:
                if _code(exc) == "ResourceNotFoundException":
                    raise self._missing() from exc
                raise
        keys = table.get("KeySchema", [])
        where = f"table {self.table}"
        if self.index is not None:
            found = self._index_of(table)
            keys, where = found["KeySchema"], f"index {self.index} of table {self.table}"
        schema = {k["KeyType"]: k["AttributeName"] for k in keys}
        if schema.get("HASH") != self.partition_key or schema.get("RANGE") != self.sort_key:
            actual = ", ".join(f"{kind}={name}" for kind, name in sorted(schema.items())) or "none"
            raise ConfigError(
                f"dynamodb source {where} has key schema {actual}; the topic's source expects "
                f"HASH={self.partition_key}, RANGE={self.sort_key}"
            )
        types = {a["AttributeName"]: a["AttributeType"] for a in table.get("AttributeDefinitions", [])}
        sort_type = types.get(self.sort_key)
        if sort_type not in _SORT_KEY_TYPES:
            raise ConfigError(
                f"dynamodb source table {self.table}: sort key {self.sort_key} has type {sort_type}; "
                "only string (S) and number (N) sort keys are supported"
            )
        partition_type = types.get(self.partition_key)
        expected = "N" if isinstance(self.partition_value, int) else "S"
        if partition_type != expected:
            raise ConfigError(
                f"dynamodb source table {self.table}: partition key {self.partition_key} has type "
                f"{partition_type}, but the topic's source.partition_value {self.partition_value!r} is "
                f"{'a number' if expected == 'N' else 'a string'}"
            )
        self._sort_key_type = sort_type
        _described[self._described_key] = (sort_type, self._consistent)

    def _check_time_keys(self) -> None:
        """The partition's newest sort key is a time key (see the module docstring): one Query, one item."""
        request = {
            "TableName": self.table,
            "KeyConditionExpression": "#pk = :pk",
            "ExpressionAttributeNames": {"#pk": self.partition_key},
            "ExpressionAttributeValues": {":pk": self._partition_attribute()},
            "ConsistentRead": self._consistent,
            "ScanIndexForward": False,
            "Limit": 1,
            **({"IndexName": self.index} if self.index is not None else {}),
        }
        with self._translated("query of the newest sort key"):
            items = self.client.query(**request).get("Items", [])
        if items:
            self._require_time_key(items[0])

    def _require_time_key(self, raw: Mapping[str, Any]) -> None:
        """A :class:`ConfigError` naming the item's sort key unless it is a time key (a string one: 13
        digits, then a non-digit or the end; numbers are times as they are)."""
        key = (raw.get(self.sort_key) or {}).get("S")
        if key is not None and not _TIME_KEY.match(key):
            raise ConfigError(
                f"dynamodb source table {self.table}: sort key {self.sort_key} {key[:60]!r} does not start "
                "with 13 digits of epoch milliseconds and a non-digit: min_age_seconds reads time-keyed "
                "items only (e.g. 1732521600123#id); fix the writers' keys or remove min_age_seconds"
            )

    @property
    def _described_key(self) -> tuple[str, str | None, str, str]:
        return (self.table, self.index, self.partition_key, self.sort_key)

    def _learn(self) -> None:
        """The sort key's type and the read consistency: from this process's last description of the same
        source, else from one now (one DescribeTable)."""
        if self._sort_key_type is not None:
            return
        known = _described.get(self._described_key)
        if known is None:
            self._describe()
        else:
            self._sort_key_type, self._consistent = known

    def _index_of(self, table: Mapping[str, Any]) -> Mapping[str, Any]:
        """The source's index in a DescribeTable answer (a global one is read eventually consistently)."""
        for kind in ("GlobalSecondaryIndexes", "LocalSecondaryIndexes"):
            for index in table.get(kind) or []:
                if index.get("IndexName") == self.index:
                    self._consistent = kind == "LocalSecondaryIndexes"
                    return dict(index)
        names = [
            i["IndexName"]
            for k in ("GlobalSecondaryIndexes", "LocalSecondaryIndexes")
            for i in table.get(k) or []
        ]
        raise ConfigError(
            f"dynamodb source table {self.table} has no index {self.index} (indexes: "
            f"{', '.join(sorted(names)) or 'none'}): create it or fix the topic's source.index"
        )

    def read(
        self,
        after: str | None,
        limit: int,
        should_stop: Callable[[], bool] = lambda: False,
        resume: dict[str, Any] | None = None,
        cut: Callable[[dict[str, Any]], Any] | None = None,
    ) -> SourceBatch:
        """Up to ``limit`` items with a sort key strictly after ``after``, in sort-key order (strongly
        consistent Query pages, but for a global index); stops early, with at least one item read, once
        ``should_stop()``, or before the first item whose ``cut`` differs from the first's. A Query starts
        at its key directly: no ``resume`` hint is needed or made."""
        if limit < 1:
            raise InvalidInput(f"dynamodb source {self.table}: limit must be at least 1, got {limit}")
        records: list[dict[str, Any]] = []
        sort_values: list[Any] = []
        end: str | None = None
        start_key: dict[str, Any] | None = None
        bound = self.bound()
        while True:
            if records and should_stop():
                return self._batch(records, sort_values, end, more=True)
            page = self._query(after, limit - len(records), start_key, bound)
            for raw in page.get("Items", []):
                if self._is_at(raw, after, bound):
                    continue  # the bounded query includes ``after`` itself (BETWEEN is inclusive)
                if records and should_stop():
                    return self._batch(records, sort_values, end, more=True)
                if self.min_age_ms is not None:
                    self._require_time_key(raw)  # one that sorts below the times is read at once
                item = _item(raw)
                if records and cut is not None and cut(item) != cut(records[0]):
                    return self._batch(records, sort_values, end, more=True)
                records.append(item)
                end = self._position_of(raw)
                sort_values.append(records[-1].get(self.sort_key))
            start_key = page.get("LastEvaluatedKey")
            if start_key is None:
                return self._batch(records, sort_values, end, more=False)
            if len(records) >= limit:
                return self._batch(records, sort_values, end, more=True)

    def has_records_after(self, after: str | None, resume: dict[str, Any] | None = None) -> bool:
        """Whether an item follows ``after``: one strongly consistent Query with ``Limit=1`` (2 when
        bounded, where the item at ``after`` itself may come first)."""
        bound = self.bound()
        items = self._query(after, 1 if bound is None else 2, None, bound).get("Items", [])
        return any(not self._is_at(raw, after, bound) for raw in items)

    def order(self, position: str) -> Any:
        """DynamoDB's own order of sort keys: a Decimal for ``N:``, the string for ``S:`` (Python compares
        strings by code point, which is the UTF-8 byte order DynamoDB uses)."""
        kind, text = parse_position(position, self.table)
        self._require_type(position, kind)
        return Decimal(text) if kind == "N" else text

    def stem(self, after: str | None) -> str:
        """``origin`` from the beginning, else the position quoted into one file name (``N%3A17``)."""
        if after is None:
            return "origin"
        parse_position(after, self.table)
        return quote(after, safe="-_.=")

    # --- helpers ------------------------------------------------------------------------------------------

    def _batch(
        self, records: list[dict[str, Any]], sort_values: list[Any], end: str | None, *, more: bool
    ) -> SourceBatch:
        table = self.table
        return SourceBatch(
            records=records,
            end=end,
            more=more,
            origin=lambda i: {"table": table, "sort_key": sort_values[i]},
        )

    def bound(self) -> str | None:
        """The last position a read may reach now: ``until``, or the ``min_age_seconds`` cut if earlier."""
        if self.min_age_ms is None:
            return self.until
        self._learn()
        cut_ms = self.clock() - self.min_age_ms
        # A string key's time is its first 13 digits: "<cut>" sorts before every "<cut>#..." key.
        cut = f"N:{cut_ms}" if self._sort_key_type == "N" else f"S:{max(cut_ms, 0):013d}"
        if self.until is not None and self.order(self.until) <= self.order(cut):
            return self.until
        return cut

    def _query(
        self, after: str | None, limit: int, start_key: dict[str, Any] | None, bound: str | None
    ) -> dict[str, Any]:
        if self.index is not None:
            self._learn()  # whether the index is global (read eventually consistently)
        names = {"#pk": self.partition_key}
        values: dict[str, Any] = {":pk": self._partition_attribute()}
        condition = "#pk = :pk"
        if after is not None or bound is not None:
            names["#sk"] = self.sort_key
        if after is not None:
            kind, text = parse_position(after, self.table)
            values[":after"] = {kind: text}
        if bound is not None:
            if after is not None and self.order(after) >= self.order(bound):
                return {"Items": []}  # at or past the bound: nothing to read (and BETWEEN would refuse)
            kind, text = parse_position(bound, self.table)
            values[":until"] = {kind: text}
            # A key condition has one range test: BETWEEN includes ``after``, which read() then drops.
            condition += " AND #sk BETWEEN :after AND :until" if after is not None else " AND #sk <= :until"
        elif after is not None:
            condition += " AND #sk > :after"
        request: dict[str, Any] = {
            "TableName": self.table,
            "KeyConditionExpression": condition,
            "ExpressionAttributeNames": names,
            "ExpressionAttributeValues": values,
            "ConsistentRead": self._consistent,
            "Limit": limit,
        }
        if self.index is not None:
            request["IndexName"] = self.index
        if start_key is not None:
            request["ExclusiveStartKey"] = start_key
        with self._translated(f"query of partition {self.partition_key}={self.partition_value!r}"):
            try:
                return dict(self.client.query(**request))
            except ClientError as exc:
                if _code(exc) == "ResourceNotFoundException":
                    raise self._missing() from exc
                if _code(exc) == "ValidationException":
                    # This process's description may be stale (the table recreated with other keys): forget
                    # it, describe again, and say so if the position is of the other type.
                    _described.pop(self._described_key, None)
                    self._sort_key_type = None
                    self._describe()
                    if after is not None:
                        self._require_type(after, parse_position(after, self.table)[0])
                raise

    def _is_at(self, raw: Mapping[str, Any], after: str | None, bound: str | None) -> bool:
        """Whether a bounded query's item is the one at ``after`` (compared in the key's own order)."""
        return (
            bound is not None
            and after is not None
            and self.order(self._position_of(raw)) == self.order(after)
        )

    def _position_of(self, raw: Mapping[str, Any]) -> str:
        value = raw.get(self.sort_key) or {}
        for kind in _SORT_KEY_TYPES:
            if kind in value:
                return f"{kind}:{value[kind]}"
        raise SourceError(
            f"dynamodb source table {self.table}: item without a string or number sort key "
            f"{self.sort_key} ({_one_line(value) or 'missing'})"
        )

    def _partition_attribute(self) -> dict[str, str]:
        if isinstance(self.partition_value, int):
            return {"N": str(self.partition_value)}
        return {"S": self.partition_value}

    def _require_type(self, position: str, kind: str) -> None:
        self._learn()
        if kind != self._sort_key_type:
            wanted = "N:<number>" if self._sort_key_type == "N" else "S:<string>"
            raise InvalidInput(
                f"invalid position {position!r} for dynamodb source {self.table}: its sort key "
                f"{self.sort_key} is {'a number' if self._sort_key_type == 'N' else 'a string'}, "
                f"expected {wanted}"
            )

    def _missing(self) -> ConfigError:
        return ConfigError(
            f"dynamodb source table {self.table} does not exist: create it or fix the topic's source.table"
        )

    @contextmanager
    def _translated(self, what: str) -> Iterator[None]:
        """Throttling after the SDK's retries becomes :class:`StoreThrottled`, any other AWS error a
        one-line :class:`SourceError` naming the table and the request."""
        try:
            yield
        except ClientError as exc:
            code = _code(exc)
            message = _one_line(exc.response.get("Error", {}).get("Message", "")) or _one_line(exc)
            if code in _THROTTLING:
                raise StoreThrottled(
                    f"dynamodb source table {self.table} is busy ({code}); retry with backoff"
                ) from exc
            raise SourceError(
                f"dynamodb source table {self.table}: {what} failed: {code}: {message}"
            ) from exc
        except BotoCoreError as exc:
            raise SourceError(f"dynamodb source table {self.table}: {what} failed: {_one_line(exc)}") from exc
