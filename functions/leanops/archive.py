"""The history archive: the state table's TTL deletions of run, output, audit and config records, kept as
Parquet (zstd) under an archive root, ``s3://bucket/prefix/`` in AWS or a local folder::

    <root>/kind=<kind>/date=<YYYY-MM-DD>/<sequence number>-<event id>.parquet

``kind`` and ``date`` are hive partitions, not columns of the files; ``date`` is the UTC day of the item's
own time (a run's start, an output's commit, an audit record's change, a push), or of its expiry for an
item that has none. :func:`row` is the one rule from item to row, used by the stream consumer here and by
the reports for live items; :data:`SCHEMAS` are the files' columns; :data:`EVENT_FILTER` is the event
source mapping's filter (only TTL deletions of archived kinds reach the consumer).

**A record that cannot be a row is kept raw, never refused.** A stream record without an old image, of a
kind the archive does not know, with an attribute of the wrong type, or whose sequence number or event id
cannot be part of a name is archived whole (its JSON, and why it is no row) as kind :data:`UNPARSED`, dated
by its deletion's UTC day (or, if the record has no usable time, the day it is archived). Such a record
would fail the same way on every retry: reported as failed, it would hold its shard until Lambda gave up
on the batch, and the records after it (their items already deleted) would be lost.

**Idempotence per stream record.** Lambda hands over a shard's records in sequence order, in batches that
start at the shard's checkpoint, which only moves forward: past a batch that succeeded, or to the first
record a partial failure names. A retry, a bisected half or a duplicate delivery starts at the checkpoint
again, and may end sooner or later than the delivery before. A batch is archived in three steps: (1) every
record becomes a row, of its kind or of :data:`UNPARSED` (none is refused, so the failure point m starts at
the batch's end); (2) the rows are grouped by (kind, date), and each group is written whole as one object
named by its first record (one PutObject, or a rename locally: a reader sees the old object or the new
one); (3) if a write fails, m moves to that group's first record, and objects already written that hold
records at or after m are rewritten with their records before m only (should a rewrite fail, m moves to
that group's first record and the cut repeats). Failure points come from writes only. Records from m on
are returned in ``batchItemFailures``.

A group's name is a function of its first record alone: ``<sequence number>-<event id>``, or, when those
cannot be part of a name, ``sha256-<digest of the record's JSON>`` (the JSON is canonical: keys sorted).
Two facts make a redelivery, in any of these orders, add nothing. A name is stable: a record r that is the
first of its (kind, date) in a batch starting at checkpoint c is the first in every batch that starts
between c and r, since those hold the same records before r; so a delivery that holds r again names the
same object and replaces it whole (rows the object held past the new batch's end leave it, and the batch
after archives them under names of its own). And nothing at or after m stays in an object named before m
(step 3), so when the checkpoint moves to m, the objects named before it hold exactly the records before
it, once each; the retry from m rewrites every object named from m on before the checkpoint passes its
name. Shards do not meet: their records, and so the names, are distinct, in whatever order shards are
delivered.

Limits: the argument relies on Lambda's order (keep the mapping's ParallelizationFactor at 1). Records of a
batch Lambda gives up on (its on-failure destination) may be archived in part, and objects named in it may
hold rows the next batch archives again. A delivery order Lambda never uses, a shard's later records and
then a batch starting before them that reaches into them, archives those rows twice. An unparsed record
without a usable ApproximateCreationDateTime is dated by the day it is archived: delivered again on a
later day, it can be archived twice.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from boto3.dynamodb.types import Binary, TypeDeserializer
from botocore.exceptions import BotoCoreError, ClientError

from leanops.constants import ENV_ARCHIVE
from leanops.data.storage import ObjectStore, open_store
from leanops.errors import ConfigError, InvalidInput, LeanopsError
from leanops.observability import logger
from leanops.protocol.dynamodb import CONFIG_SK_PREFIX, OUTPUT_SK_PREFIX
from leanops.protocol.model import AUDIT_PREFIX, RUN_RECORD_PREFIX, OutputKind, TopicRef
from leanops.protocol.table import PARTITION_KEY, SORT_KEY

#: Sort-key prefix -> kind, for the items the archive keeps.
KINDS = {
    RUN_RECORD_PREFIX: "runs",
    OUTPUT_SK_PREFIX: "outputs",
    AUDIT_PREFIX: "audit",
    CONFIG_SK_PREFIX: "config",
}
#: The kind of the stream records that cannot be rows, kept raw (no sort-key prefix: not in :data:`KINDS`).
UNPARSED = "unparsed"

#: The event source mapping's filter: TTL deletions (DynamoDB's own service principal) of archived kinds.
EVENT_FILTER: dict[str, Any] = {
    "eventName": ["REMOVE"],
    "userIdentity": {"type": ["Service"], "principalId": ["dynamodb.amazonaws.com"]},
    "dynamodb": {"Keys": {SORT_KEY: {"S": [{"prefix": prefix} for prefix in KINDS]}}},
}

TIMESTAMP = pa.timestamp("ms", tz="UTC")
_COMMON = [
    ("topic", pa.string()),
    ("partition", pa.string()),
    ("key", pa.string()),
    ("expired_at", TIMESTAMP),
    ("event_id", pa.string()),
    ("sequence_number", pa.string()),
    ("item", pa.string()),
]
#: kind -> the columns of its files (all nullable).
SCHEMAS: dict[str, pa.Schema] = {
    "runs": pa.schema(
        [
            *_COMMON,
            ("execution", pa.string()),
            ("outcome", pa.string()),
            ("started_at", TIMESTAMP),
            ("ended_at", TIMESTAMP),
            ("batches", pa.int64()),
            ("records", pa.int64()),
            ("position", pa.string()),
            ("lag_seconds", pa.float64()),
            ("fence", pa.int64()),
            ("error", pa.string()),
            ("cause", pa.string()),
        ]
    ),
    "outputs": pa.schema(
        [
            *_COMMON,
            ("seq", pa.int64()),
            ("record_kind", pa.string()),
            ("committed_at", TIMESTAMP),
            ("position", pa.string()),
            ("after", pa.string()),
            ("object", pa.string()),
            ("quarantine", pa.string()),
            ("stem", pa.string()),
            ("attempt", pa.string()),
            ("records", pa.int64()),
            ("written", pa.int64()),
            ("quarantined", pa.int64()),
            ("source_keys", pa.list_(pa.string())),
            ("fence", pa.int64()),
            ("owner", pa.string()),
            ("superseded_by", pa.int64()),
            ("superseded_at", TIMESTAMP),
            # A rewind's: the first and last seq it superseded (also those expired before it could mark them).
            ("superseded_from", pa.int64()),
            ("superseded_to", pa.int64()),
            ("action", pa.string()),
            ("actor", pa.string()),
            ("reason", pa.string()),
        ]
    ),
    "audit": pa.schema(
        [
            *_COMMON,
            ("changed_at", TIMESTAMP),
            ("action", pa.string()),
            ("actor", pa.string()),
            ("reason", pa.string()),
            ("before", pa.string()),
            ("after", pa.string()),
        ]
    ),
    "config": pa.schema(
        [
            *_COMMON,
            ("version", pa.int64()),
            ("digest", pa.string()),
            ("pushed_by", pa.string()),
            ("pushed_at", TIMESTAMP),
            ("removed", pa.bool_()),
            ("settings", pa.string()),
        ]
    ),
    UNPARSED: pa.schema(
        [
            ("key", pa.string()),  # the sort key, if the record has a readable one
            ("partition_key", pa.string()),  # the partition key, likewise
            ("expired_at", TIMESTAMP),
            ("event_id", pa.string()),
            ("sequence_number", pa.string()),
            ("reason", pa.string()),  # why the record is no row
            ("record", pa.string()),  # the whole stream record, as JSON
        ]
    ),
}
#: kind -> the column holding the item's own time, whose UTC day is the ``date`` partition (unparsed: the
#: deletion's time; a record without one is dated by the day it was archived, and its ``expired_at`` is null).
DATE_COLUMNS = {
    "runs": "started_at",
    "outputs": "committed_at",
    "audit": "changed_at",
    "config": "pushed_at",
    UNPARSED: "expired_at",
}
PARQUET_COMPRESSION = "zstd"

_TOPIC_PK_PREFIX = "topic#"
_INT64 = range(-(2**63), 2**63)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
#: Stream records name objects: their sequence numbers are digits, their event ids safe in a key.
_SEQUENCE_NUMBER = re.compile(r"[0-9]{1,64}")
_EVENT_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
#: The name of a group whose first record's sequence number or event id cannot be part of one.
_DIGEST_PREFIX = "sha256-"
#: Longest reason kept (a reason quotes the value at fault, which may be long; the record is kept whole).
_REASON_CHARS = 1000
_deserializer = TypeDeserializer()


class MalformedRecord(LeanopsError, ValueError):
    """A stream record or item that cannot be turned into an archive row."""


# --- item -> row ---------------------------------------------------------------------------------------


def kind_of(sort_key: object) -> str | None:
    """The archive kind of an item with this sort key, or None for items the archive does not keep."""
    if isinstance(sort_key, str):
        for prefix, kind in KINDS.items():
            if sort_key.startswith(prefix):
                return kind
    return None


def topic_of(partition_key: object) -> tuple[str, str | None]:
    """The topic and partition (None: the topic's own state) of a partition key built by
    :attr:`TopicRef.key`: ``topic#<name>`` or ``topic#<name>/<partition>``."""
    if not isinstance(partition_key, str) or not partition_key.startswith(_TOPIC_PK_PREFIX):
        raise MalformedRecord(f"partition key {partition_key!r} is not a topic's (topic#<name>)")
    name, _, partition = partition_key[len(_TOPIC_PK_PREFIX) :].partition("/")
    try:
        ref = TopicRef(name, partition or None)
    except InvalidInput as exc:
        raise MalformedRecord(f"partition key {partition_key!r}: {exc}") from None
    if ref.key != partition_key:  # the same rule TopicRef builds keys by, read backwards
        raise MalformedRecord(f"partition key {partition_key!r} is not one TopicRef builds")
    return ref.topic, ref.partition


def row(kind: str, item: Mapping[str, Any]) -> dict[str, Any]:
    """The archive row of ``item`` (a state-table item as Python values: numbers as Decimal from a stream
    image, or as int and float from the store; NULL as None): every column of ``SCHEMAS[kind]``.

    Timestamps are UTC datetimes, JSON columns text; a missing attribute is None. ``expired_at``,
    ``event_id`` and ``sequence_number`` are None here (a live item): :func:`archived` sets them from its
    stream record. Raises :class:`MalformedRecord` for an attribute that cannot be its column's type.
    """
    columns = _KIND_COLUMNS.get(kind)
    if columns is None:
        raise MalformedRecord(f"unknown archive kind {kind!r}: one of {', '.join(_KIND_COLUMNS)}")
    topic, partition = topic_of(item.get(PARTITION_KEY))
    key = item.get(SORT_KEY)
    if not isinstance(key, str) or kind_of(key) != kind:
        raise MalformedRecord(f"sort key {key!r} is not a {kind} item's")
    common = {
        "topic": topic,
        "partition": partition,
        "key": key,
        "expired_at": None,
        "event_id": None,
        "sequence_number": None,
        "item": _json(dict(item), "the item"),
    }
    return common | columns(item, key)


def _run_columns(item: Mapping[str, Any], key: str) -> dict[str, Any]:
    lag_ms = _number(item, "lag_ms")
    return {
        "execution": _text(item, "execution"),
        "outcome": _text(item, "outcome"),
        "started_at": _timestamp(item, "started_at_ms"),
        "ended_at": _timestamp(item, "ended_at_ms"),
        "batches": _integer(item, "batches"),
        "records": _integer(item, "records"),
        "position": _text(item, "position"),
        "lag_seconds": None if lag_ms is None else lag_ms / 1000,
        "fence": _integer(item, "fence"),
        "error": _text(item, "error"),
        "cause": _text(item, "cause"),
    }


def _output_columns(item: Mapping[str, Any], key: str) -> dict[str, Any]:
    return {
        "seq": _key_number(key, OUTPUT_SK_PREFIX),
        # An output record without ``kind`` is a batch's (only overrides write one).
        "record_kind": _text(item, "kind") or OutputKind.BATCH.value,
        "committed_at": _timestamp(item, "committed_at"),
        "position": _text(item, "position"),
        "after": _text(item, "after"),
        "object": _text(item, "object"),
        "quarantine": _text(item, "quarantine"),
        "stem": _text(item, "stem"),
        "attempt": _text(item, "attempt"),
        "records": _integer(item, "records"),
        "written": _integer(item, "written"),
        "quarantined": _integer(item, "quarantined"),
        "source_keys": _text_list(item, "source_keys"),
        "fence": _integer(item, "fence"),
        "owner": _text(item, "owner"),
        "superseded_by": _integer(item, "superseded_by"),
        "superseded_at": _timestamp(item, "superseded_at_ms"),
        "superseded_from": _integer(item, "superseded_from"),
        "superseded_to": _integer(item, "superseded_to"),
        "action": _text(item, "action"),
        "actor": _text(item, "actor"),
        "reason": _text(item, "reason"),
    }


def _audit_columns(item: Mapping[str, Any], key: str) -> dict[str, Any]:
    return {
        "changed_at": _timestamp(item, "at_ms"),
        "action": _text(item, "action"),
        "actor": _text(item, "actor"),
        "reason": _text(item, "reason"),
        "before": _json_text(item, "before"),
        "after": _json_text(item, "after"),
    }


def _config_columns(item: Mapping[str, Any], key: str) -> dict[str, Any]:
    version = _integer(item, "version")
    return {
        "version": version if version is not None else _key_number(key, CONFIG_SK_PREFIX),
        "digest": _text(item, "digest"),
        "pushed_by": _text(item, "pushed_by"),
        "pushed_at": _timestamp(item, "pushed_at_ms"),
        "removed": _boolean(item, "removed"),
        # Stored as JSON text already (a DynamoDB map would lose the order of its keys).
        "settings": _json_text(item, "settings"),
    }


_KIND_COLUMNS: dict[str, Callable[[Mapping[str, Any], str], dict[str, Any]]] = {
    "runs": _run_columns,
    "outputs": _output_columns,
    "audit": _audit_columns,
    "config": _config_columns,
}


def _text(item: Mapping[str, Any], name: str) -> str | None:
    value = item.get(name)
    if value is None or isinstance(value, str):
        return value
    raise MalformedRecord(f"{name} {value!r} is not text")


def _integer(item: Mapping[str, Any], name: str) -> int | None:
    value = item.get(name)
    if value is None:
        return None
    if not isinstance(value, bool) and isinstance(value, int | Decimal | float):
        try:
            whole = int(value)
        except (ValueError, OverflowError, InvalidOperation):  # NaN, infinity
            whole = None
        if whole is not None and whole == value and whole in _INT64:
            return whole
    raise MalformedRecord(f"{name} {value!r} is not a whole number of 64 bits")


def _number(item: Mapping[str, Any], name: str) -> float | None:
    value = item.get(name)
    if value is None:
        return None
    if not isinstance(value, bool) and isinstance(value, int | Decimal | float):
        return float(value)
    raise MalformedRecord(f"{name} {value!r} is not a number")


def _timestamp(item: Mapping[str, Any], name: str) -> datetime | None:
    """An epoch-milliseconds attribute as a UTC datetime (exact: no float on the way)."""
    milliseconds = _integer(item, name)
    return None if milliseconds is None else _from_ms(milliseconds, name)


def _from_ms(milliseconds: int, name: str) -> datetime:
    try:
        return _EPOCH + timedelta(milliseconds=milliseconds)
    except OverflowError:
        raise MalformedRecord(f"{name} {milliseconds} ms is not a time") from None


def _boolean(item: Mapping[str, Any], name: str) -> bool | None:
    value = item.get(name)
    if value is None or isinstance(value, bool):
        return value
    raise MalformedRecord(f"{name} {value!r} is not true or false")


def _text_list(item: Mapping[str, Any], name: str) -> list[str] | None:
    value = item.get(name)
    if value is None:
        return None
    if isinstance(value, set | frozenset):  # a DynamoDB string set
        value = sorted(value)
    if isinstance(value, list | tuple) and all(isinstance(entry, str) for entry in value):
        return list(value)
    raise MalformedRecord(f"{name} {value!r} is not a list of text")


def _json_text(item: Mapping[str, Any], name: str) -> str | None:
    """A map or list as JSON text; text is kept as it is (already JSON)."""
    value = item.get(name)
    if value is None or isinstance(value, str):
        return value
    return _json(value, name)


def _json(value: Any, name: str) -> str:
    """JSON with numbers as numbers (Decimal: int when whole), sets as sorted lists, binary as base64;
    keys sorted, so a redelivered record makes the same bytes."""
    try:
        return json.dumps(value, default=_json_value, sort_keys=True, allow_nan=False, ensure_ascii=False)
    except (TypeError, ValueError) as exc:
        raise MalformedRecord(f"{name} cannot be JSON: {exc}") from None


def _json_value(value: Any) -> Any:
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, set | frozenset):
        return sorted(value, key=str)  # a set is of one type; Binary has no order of its own
    if isinstance(value, Binary):
        value = value.value
    if isinstance(value, bytes | bytearray):
        return base64.b64encode(bytes(value)).decode("ascii")
    raise TypeError(f"{type(value).__name__} is not JSON")


def _key_number(key: str, prefix: str) -> int:
    digits = key[len(prefix) :]
    if not digits.isdigit() or int(digits) not in _INT64:
        raise MalformedRecord(f"sort key {key!r} does not end in a number")
    return int(digits)


# --- stream record -> row ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Archived:
    """One stream record as the archive keeps it: its row, where (kind, date), and the name it gives the
    object of its group when it is the group's first record (``<sequence number>-<event id>``, or
    ``sha256-<digest>`` for an unparsed record whose sequence number or event id cannot be part of a name).
    ``reason`` is why an unparsed record is no row (None for the others)."""

    kind: str
    date: str
    name: str
    row: dict[str, Any]
    reason: str | None = None

    @property
    def sequence_number(self) -> str | None:
        value = self.row["sequence_number"]
        return value if isinstance(value, str) else None

    @property
    def event_id(self) -> str | None:
        value = self.row["event_id"]
        return value if isinstance(value, str) else None

    @property
    def object_key(self) -> str:
        return f"kind={self.kind}/date={self.date}/{self.name}.parquet"


def archived(record: object, *, now: datetime | None = None) -> Archived:
    """One Lambda DynamoDB-stream record (a TTL deletion: its ``OldImage`` is the item) as the archive keeps
    it: its row (:func:`parsed`), or, if it cannot be one, the record itself (:func:`unparsed`, dated by
    ``now``, default the current time, if the record has no usable time). Never raises: what a record
    cannot be now it cannot be on any retry (the rule is a function of the record alone)."""
    try:
        return parsed(record)
    except MalformedRecord as exc:
        reason = str(exc)
    except Exception as exc:  # a fault no rule foresaw (e.g. a number DynamoDB's context rejects): kept raw
        reason = f"{type(exc).__name__}: {exc}"
    return unparsed(record, reason, now=now)


def parsed(record: object) -> Archived:
    """The row of one Lambda DynamoDB-stream record, of its item's kind.

    Raises :class:`MalformedRecord` if the record names no object (sequence number, event id), carries no
    old image (the stream must be NEW_AND_OLD_IMAGES or OLD_IMAGE), or its item is not one the archive
    keeps or cannot be a row.
    """
    if not isinstance(record, Mapping):
        raise MalformedRecord(f"the record is {type(record).__name__}, not a JSON object")
    stream = record.get("dynamodb")
    if not isinstance(stream, Mapping):
        raise MalformedRecord("the record has no dynamodb body")
    sequence_number, event_id = stream.get("SequenceNumber"), record.get("eventID")
    if not isinstance(sequence_number, str) or not _SEQUENCE_NUMBER.fullmatch(sequence_number):
        raise MalformedRecord(f"sequence number {sequence_number!r} is not digits")
    if not isinstance(event_id, str) or not _EVENT_ID.fullmatch(event_id):
        raise MalformedRecord(f"event id {event_id!r} cannot be part of an object's name")
    image = stream.get("OldImage")
    if not isinstance(image, Mapping) or not image:
        raise MalformedRecord("the record has no OldImage: the stream must carry old images")
    try:
        item = {name: _deserializer.deserialize(value) for name, value in image.items()}
    except (TypeError, ValueError, KeyError, AttributeError, ArithmeticError) as exc:
        raise MalformedRecord(f"the OldImage is not DynamoDB JSON: {exc!r}") from None
    kind = kind_of(item.get(SORT_KEY))
    if kind is None:
        raise MalformedRecord(f"sort key {item.get(SORT_KEY)!r} is not an archived kind's")
    expired_at = _approximate_time(stream.get("ApproximateCreationDateTime"))
    values = row(kind, item) | {
        "expired_at": expired_at,
        "event_id": event_id,
        "sequence_number": sequence_number,
    }
    # An item without its own time is kept under the day it expired rather than lost.
    day = values[DATE_COLUMNS[kind]] or expired_at
    if day is None:
        raise MalformedRecord(f"the {kind} item has no time of its own and the record none either")
    _fits(kind, values)
    return Archived(kind, day.date().isoformat(), f"{sequence_number}-{event_id}", values)


def unparsed(record: object, reason: str, *, now: datetime | None = None) -> Archived:
    """``record``, which cannot be a row of its kind, as a row of :data:`UNPARSED`: its keys, time, event id
    and sequence number where they are readable, ``reason``, and the whole record as JSON. Dated by its
    ApproximateCreationDateTime, or by ``now`` (default: the current time) if that is unusable. Never
    raises."""
    text = _record_json(record)
    body = record.get("dynamodb") if isinstance(record, Mapping) else None
    stream: Mapping[str, Any] = body if isinstance(body, Mapping) else {}
    sequence_number = stream.get("SequenceNumber")
    event_id = record.get("eventID") if isinstance(record, Mapping) else None
    try:
        expired_at = _approximate_time(stream.get("ApproximateCreationDateTime"))
    except MalformedRecord:
        expired_at = None
    day = expired_at or now or datetime.now(UTC)
    if len(reason) > _REASON_CHARS:
        reason = reason[: _REASON_CHARS - 1] + "…"
    reason = _utf8(reason)
    values = {
        "key": _readable_key(stream, SORT_KEY),
        "partition_key": _readable_key(stream, PARTITION_KEY),
        "expired_at": expired_at,
        "event_id": _utf8(event_id) if isinstance(event_id, str) else None,
        "sequence_number": _utf8(sequence_number) if isinstance(sequence_number, str) else None,
        "reason": reason,
        "record": text,
    }
    if (
        isinstance(sequence_number, str)
        and _SEQUENCE_NUMBER.fullmatch(sequence_number)
        and isinstance(event_id, str)
        and _EVENT_ID.fullmatch(event_id)
    ):
        name = f"{sequence_number}-{event_id}"
    else:  # a function of the record alone, as the name must be (module docstring)
        name = _DIGEST_PREFIX + hashlib.sha256(text.encode("ascii")).hexdigest()
    return Archived(UNPARSED, day.astimezone(UTC).date().isoformat(), name, values, reason)


def _fits(kind: str, values: Mapping[str, Any]) -> None:
    """Raise :class:`MalformedRecord` unless ``values`` convert to ``SCHEMAS[kind]`` (a row that passed
    :func:`row` but could not be written, such as text that is not UTF-8, would fail its batch)."""
    try:
        table(kind, [values])
    except (pa.ArrowException, ValueError, TypeError, OverflowError) as exc:
        raise MalformedRecord(f"the row does not fit the {kind} schema: {exc}") from None


def _record_json(record: object) -> str:
    """The record as canonical JSON (keys sorted, ASCII: any text survives, and the bytes are the same for
    every delivery of the record); a value JSON cannot hold is written as its text."""
    try:
        return json.dumps(record, sort_keys=True, ensure_ascii=True, default=str)
    except (TypeError, ValueError, RecursionError):  # keys of several types, a cycle, too deep
        return json.dumps(repr(record), ensure_ascii=True)


def _readable_key(stream: Mapping[str, Any], name: str) -> str | None:
    """A key attribute's text, from the old image or else the record's keys, if it is a DynamoDB string."""
    for source in ("OldImage", "Keys"):
        attributes = stream.get(source)
        value = attributes.get(name) if isinstance(attributes, Mapping) else None
        text = value.get("S") if isinstance(value, Mapping) else None
        if isinstance(text, str):
            return _utf8(text)
    return None


def _utf8(text: str) -> str:
    """``text`` as UTF-8 can hold it (a lone surrogate, which JSON allows, written as its escape)."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _approximate_time(value: object) -> datetime | None:
    """A stream record's ApproximateCreationDateTime (epoch seconds: a number, or text in some samples)."""
    if value is None:
        return None
    try:
        milliseconds = int(Decimal(str(value)) * 1000)
    except (InvalidOperation, ValueError, OverflowError):
        raise MalformedRecord(f"ApproximateCreationDateTime {value!r} is not epoch seconds") from None
    return _from_ms(milliseconds, "ApproximateCreationDateTime")


# --- writing -------------------------------------------------------------------------------------------


def archive_root(environ: Mapping[str, str] = os.environ) -> ObjectStore:
    """The archive root :data:`ENV_ARCHIVE` names: an S3 prefix or a local folder."""
    root = environ.get(ENV_ARCHIVE, "").strip()
    if not root:
        raise ConfigError(
            f"{ENV_ARCHIVE} is not set: set it to the archive root, s3://bucket/prefix/ or a local folder"
        )
    return open_store(root)


def table(kind: str, rows: Sequence[Mapping[str, Any]]) -> pa.Table:
    """``rows`` (from :func:`row`) as an Arrow table of ``SCHEMAS[kind]``."""
    return pa.Table.from_pylist(list(rows), schema=SCHEMAS[kind])


def parquet_bytes(kind: str, rows: Sequence[Mapping[str, Any]]) -> bytes:
    buffer = io.BytesIO()
    pq.write_table(table(kind, rows), buffer, compression=PARQUET_COMPRESSION)
    return buffer.getvalue()


@dataclass(frozen=True)
class BatchArchived:
    """What :func:`archive_batch` left: the records before ``failure_point`` are archived, in ``objects``
    objects; those from it on must be delivered again (the handler returns them as batchItemFailures)."""

    failure_point: int
    objects: int

    @property
    def rows(self) -> int:
        return self.failure_point


@dataclass
class _Group:
    """One (kind, date) of a batch: its records (indexes, ascending) and its object."""

    kind: str
    key: str
    members: list[int]
    #: The last member the object holds as written by this batch; -1 while not written.
    written_through: int = -1

    @property
    def first(self) -> int:
        return self.members[0]


def archive_batch(entries: Sequence[Archived], store: ObjectStore) -> BatchArchived:
    """Write a batch's rows (one per record, in sequence order: :func:`archived`) idempotently: steps 2 and
    3 of the module docstring. Only a failed write sets a failure point."""
    groups: dict[tuple[str, str], _Group] = {}
    for index, entry in enumerate(entries):
        group = groups.get((entry.kind, entry.date))
        if group is None:
            groups[(entry.kind, entry.date)] = _Group(entry.kind, entry.object_key, [index])
        else:
            group.members.append(index)
    ordered = list(groups.values())  # by first record: dicts keep insertion order
    point = len(entries)
    for group in ordered:
        if not _write(store, group, entries, point):
            point = group.first  # later groups are named after it: the retry writes them
            break
    # Objects named before the point must hold nothing from it on: the retry starts there.
    while stale := [g for g in ordered if g.first < point <= g.written_through]:
        for group in reversed(stale):  # the latest first: a failure there spares the cuts before it
            if not _write(store, group, entries, point):
                point = group.first
                break
    return BatchArchived(point, sum(1 for group in ordered if group.first < point))


def _write(store: ObjectStore, group: _Group, entries: Sequence[Archived], before: int) -> bool:
    """Write the group's object with its records before ``before``; False if the write failed."""
    members = [index for index in group.members if index < before]
    data = parquet_bytes(group.kind, [entries[index].row for index in members])
    try:
        store.put(group.key, io.BytesIO(data))
    except (LeanopsError, BotoCoreError, ClientError, OSError) as exc:
        logger.warning(
            "archive object not written; its records will be delivered again",
            extra={"object": group.key, "error": str(exc)},
        )
        return False
    group.written_through = members[-1]
    return True
