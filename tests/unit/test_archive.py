"""The archive's rules (leanops.archive): item -> row, the event source mapping's filter, and how a batch is
written when a write fails. The stream consumer end to end: test_archive_handler.py.

Stream records are built from tests/events/dynamodb_stream_ttl_remove.json, the one place the shape of a
Lambda DynamoDB-stream record of a TTL deletion lives, as AWS documents it:
https://docs.aws.amazon.com/lambda/latest/dg/with-ddb-filtering.html (a Lambda DynamoDB-stream record) and
https://docs.aws.amazon.com/amazondynamodb/latest/APIReference/API_streams_Record.html (``userIdentity``
of a TTL deletion: type ``Service``, principalId ``dynamodb.amazonaws.com``).
"""

from __future__ import annotations

import copy
import functools
import json
import re
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, cast

import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest
from boto3.dynamodb.types import TypeDeserializer, TypeSerializer
from leanopsctl.local.template import load_yaml
from moto.events.models import EventPattern

from leanops import archive
from leanops.data.storage import LocalStore, S3Store
from leanops.errors import SinkError

EVENTS = Path(__file__).parents[1] / "events"
FIXTURE = EVENTS / "dynamodb_stream_ttl_remove.json"
TEMPLATE = Path(__file__).parents[2] / "template.yaml"
KIND_ORDER = ("runs", "outputs", "audit", "config")
HOUR_MS = 3_600_000

_serializer = TypeSerializer()
_deserializer = TypeDeserializer()


# --- building stream records from the fixture ---------------------------------------------------------


@functools.cache
def _fixture_text() -> str:
    return FIXTURE.read_text()


def fixture_records() -> list[dict[str, Any]]:
    """The fixture's records (a fresh copy each time: tests change them)."""
    records: list[dict[str, Any]] = json.loads(_fixture_text())["Records"]
    return records


def image_item(record: dict[str, Any]) -> dict[str, Any]:
    """A record's old image as Python values (numbers as Decimal, as a stream image deserializes)."""
    return {name: _deserializer.deserialize(value) for name, value in record["dynamodb"]["OldImage"].items()}


def fixture_item(kind: str, *, override: bool = False) -> dict[str, Any]:
    """The fixture's item of ``kind`` (outputs: the batch's, or with ``override`` the override's)."""
    for record in fixture_records():
        item = image_item(record)
        if archive.kind_of(item["sk"]) == kind and (item.get("kind") == "override") == override:
            return item
    raise AssertionError(f"the fixture has no {kind} item (override={override})")


def stream_record(item: dict[str, Any], *, sequence_number: int, event_id: str, expired_at_s: int) -> dict:
    """The TTL deletion of ``item`` as Lambda delivers it: the fixture's record with this item, sequence
    number, event id and deletion time."""
    record = copy.deepcopy(fixture_records()[0])
    record["eventID"] = event_id
    body = record["dynamodb"]
    body["OldImage"] = {name: _serializer.serialize(value) for name, value in item.items()}
    body["Keys"] = {name: _serializer.serialize(item[name]) for name in ("pk", "sk")}
    body["SequenceNumber"] = str(sequence_number)
    body["ApproximateCreationDateTime"] = expired_at_s
    body["SizeBytes"] = len(json.dumps(body["OldImage"]))
    return record


#: 2026-04-01T00:00:00Z: the first item's time; items are five hours apart, so a history spans days.
START_MS = 1_775_001_600_000


def history_items(n: int, topic: str = "vehicle_telemetry") -> Iterator[dict[str, Any]]:
    """``n`` items of each kind for one topic, in the order a topic makes them (kinds interleaved, over
    several days): runs, outputs (every third an override), audit and config records."""
    run, batch, override = (
        fixture_item("runs"),
        fixture_item("outputs"),
        fixture_item("outputs", override=True),
    )
    audit, config = fixture_item("audit"), fixture_item("config")
    pk = f"topic#{topic}"
    for i in range(n):
        at = START_MS + i * 5 * HOUR_MS
        yield run | {
            "pk": pk,
            "sk": f"runlog#{at:013d}#{i:08x}",
            "started_at_ms": Decimal(at),
            "ended_at_ms": Decimal(at + 40_000),
        }
        output = override if i % 3 == 2 else batch
        yield output | {"pk": pk, "sk": f"output#{100 + i:012d}", "committed_at": Decimal(at + 30_000)}
        yield audit | {"pk": pk, "sk": f"audit#{at + 2000:013d}#{i:016x}", "at_ms": Decimal(at + 2000)}
        yield config | {
            "pk": pk,
            "sk": f"config#{i + 1:010d}",
            "version": Decimal(i + 1),
            "pushed_at_ms": Decimal(at + 3000),
        }


def shard_records(items: list[dict[str, Any]], shard: int) -> list[dict[str, Any]]:
    """The TTL deletions of ``items`` on one shard, in sequence order (each shard has its own numbers)."""
    base = 4_421_584_500_000_000_000_000_000 + shard * 10**22
    return [
        stream_record(
            item,
            sequence_number=base + position * 1_000,
            event_id=f"{shard:02x}{position:030x}",
            expired_at_s=int(item["expires_at"]) + 3600,
        )
        for position, item in enumerate(items)
    ]


def group_objects(entries: list[archive.Archived]) -> dict[str, int]:
    """The batch's objects, by group in order of first record: object key -> index of its first record."""
    firsts: dict[tuple[str, str], tuple[str, int]] = {}
    for index, entry in enumerate(entries):
        firsts.setdefault((entry.kind, entry.date), (entry.object_key, index))
    return dict(firsts.values())


def sequence_numbers(records: list[dict[str, Any]]) -> list[str]:
    return [record["dynamodb"]["SequenceNumber"] for record in records]


def read_back(root: Path) -> dict[str, list[str]]:
    """kind -> the archived records' sequence numbers (unparsed ones included), read with pyarrow.dataset
    (hive partitioning); checks on the way that every row lies in the date partition of its item's own time
    (an unparsed record's: its deletion's)."""
    found: dict[str, list[str]] = {}
    for kind in (*KIND_ORDER, archive.UNPARSED):
        folder = root / f"kind={kind}"
        if not folder.is_dir():
            found[kind] = []
            continue
        rows = ds.dataset(folder, format="parquet", partitioning="hive").to_table().to_pylist()
        for row in rows:
            own_time = row[archive.DATE_COLUMNS[kind]]
            assert str(row["date"]) == own_time.astimezone(UTC).date().isoformat(), row["key"]
        found[kind] = [row["sequence_number"] for row in rows]
    return found


# --- item -> row ---------------------------------------------------------------------------------------


def test_kinds_and_schemas_cover_the_archived_sort_keys() -> None:
    assert archive.KINDS == {"runlog#": "runs", "output#": "outputs", "audit#": "audit", "config#": "config"}
    assert archive.UNPARSED == "unparsed"
    assert set(archive.SCHEMAS) == {*KIND_ORDER, archive.UNPARSED} == set(archive.DATE_COLUMNS)
    common = ["topic", "partition", "key", "expired_at", "event_id", "sequence_number", "item"]
    for kind in KIND_ORDER:
        assert archive.SCHEMAS[kind].names[: len(common)] == common
    assert archive.SCHEMAS[archive.UNPARSED].names == [
        "key",
        "partition_key",
        "expired_at",
        "event_id",
        "sequence_number",
        "reason",
        "record",
    ]
    for kind, schema in archive.SCHEMAS.items():
        assert all(field.nullable for field in schema)
        assert archive.DATE_COLUMNS[kind] in schema.names
        # Hive partitioning supplies these: a column of the same name would clash with it.
        assert not {"kind", "date"} & set(schema.names)
    assert archive.kind_of("run#2026-04-01T10:05") is None  # run keys are not history
    assert archive.kind_of("checkpoint") is None


def test_rows_of_the_fixture_hold_each_kinds_columns() -> None:
    rows = [archive.archived(record) for record in fixture_records()]
    run, batch, override, audit, config = (entry.row for entry in rows)

    assert (run["topic"], run["partition"], run["outcome"]) == ("vehicle_telemetry", None, "processed")
    assert run["started_at"] == datetime(2026, 4, 2, 10, 5, 0, 123_000, tzinfo=UTC)
    assert (run["batches"], run["records"], run["fence"]) == (2, 2000, 12)
    assert run["lag_seconds"] == 1941.877
    assert (run["error"], run["cause"]) == (None, None)  # NULL attributes

    assert (batch["seq"], batch["record_kind"], batch["superseded_by"]) == (42, "batch", 43)
    assert batch["source_keys"] == [
        "date=2026-04-02/hour=09/part-00002.jsonl",
        "date=2026-04-02/hour=09/part-00003.jsonl",
    ]
    assert (batch["quarantine"], batch["action"]) == (None, None)
    assert (override["record_kind"], override["action"], override["object"]) == ("override", "rewind", None)
    assert (batch["superseded_from"], batch["superseded_to"]) == (None, None)

    assert (audit["partition"], audit["action"]) == ("bf-0123456789ab", "pause")
    assert json.loads(audit["before"]) == {"paused": False}
    assert json.loads(audit["after"])["paused_at_ms"] == 1_767_969_012_345  # a number, not text

    assert (config["version"], config["removed"]) == (3, False)
    assert json.loads(config["settings"])["schedule"] == "rate(5 minutes)"

    first = fixture_records()[0]
    assert run["key"] == first["dynamodb"]["Keys"]["sk"]["S"]
    assert (run["sequence_number"], run["event_id"]) == (
        first["dynamodb"]["SequenceNumber"],
        first["eventID"],
    )
    assert run["expired_at"] == datetime.fromtimestamp(first["dynamodb"]["ApproximateCreationDateTime"], UTC)
    # The whole old image, numbers as numbers.
    assert json.loads(run["item"])["started_at_ms"] == 1_775_124_300_123
    assert json.loads(run["item"])["expires_at"] == int(first["dynamodb"]["OldImage"]["expires_at"]["N"])
    assert [entry.date for entry in rows] == ["2026-04-02"] * 3 + ["2026-01-09"] * 2


def _as_store_reads(value: Any) -> Any:
    """What the state store's reads make of DynamoDB numbers (int when whole, else float)."""
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, dict):
        return {name: _as_store_reads(entry) for name, entry in value.items()}
    if isinstance(value, list):
        return [_as_store_reads(entry) for entry in value]
    return value


@pytest.mark.parametrize("kind", KIND_ORDER)
def test_a_live_item_and_its_stream_image_make_the_same_row(kind: str) -> None:
    image = fixture_item(kind)
    live = archive.row(kind, _as_store_reads(image))
    assert live == archive.row(kind, image)
    assert (live["expired_at"], live["event_id"], live["sequence_number"]) == (None, None, None)
    # Every row fits its schema: Parquet round trip, same values.
    assert archive.table(kind, [live]).to_pylist() == [live]


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"started_at_ms": "yesterday"}, "started_at_ms 'yesterday' is not a whole number"),
        ({"batches": Decimal("2.5")}, "batches Decimal('2.5') is not a whole number"),
        ({"fence": Decimal(2**63)}, "is not a whole number of 64 bits"),
        ({"outcome": Decimal(1)}, "outcome Decimal('1') is not text"),
        ({"pk": "leanops#topics"}, "partition key 'leanops#topics' is not a topic's"),
        ({"pk": "topic#bad name"}, "invalid topic name"),
        ({"sk": "lock"}, "sort key 'lock' is not a runs item's"),
    ],
)
def test_an_item_that_cannot_be_a_row_is_malformed(change: dict[str, Any], reason: str) -> None:
    with pytest.raises(archive.MalformedRecord, match=reason.replace("(", r"\(").replace(")", r"\)")):
        archive.row("runs", fixture_item("runs") | change)


def test_a_rewinds_output_record_carries_the_range_it_superseded() -> None:
    rewind = fixture_item("outputs", override=True) | {
        "superseded_from": Decimal(40),
        "superseded_to": Decimal(44),
    }
    row = archive.row("outputs", rewind)
    assert (row["superseded_from"], row["superseded_to"]) == (40, 44)
    assert archive.SCHEMAS["outputs"].field("superseded_from").type == "int64"
    assert archive.SCHEMAS["outputs"].field("superseded_to").type == "int64"
    assert archive.table("outputs", [row]).to_pylist() == [row]
    with pytest.raises(archive.MalformedRecord, match="superseded_to '44' is not a whole number"):
        archive.row("outputs", rewind | {"superseded_to": "44"})


def test_a_partition_key_reads_back_into_the_topic_and_partition_it_was_built_from() -> None:
    assert archive.topic_of("topic#vehicle_telemetry") == ("vehicle_telemetry", None)
    assert archive.topic_of("topic#vehicle_telemetry/bf-0123456789ab") == (
        "vehicle_telemetry",
        "bf-0123456789ab",
    )
    with pytest.raises(archive.MalformedRecord):
        archive.topic_of("topic#a/b/c")


#: 2026-04-09T12:00:00Z: "now" for records without a usable time of their own.
NOW = datetime(2026, 4, 9, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("change", "reason", "named_by_record"),
    [
        (lambda r: r["dynamodb"].pop("OldImage"), "no OldImage", True),
        (lambda r: r["dynamodb"]["OldImage"].update(sk={"S": "checkpoint"}), "not an archived kind's", True),
        (lambda r: r["dynamodb"]["OldImage"].update(fence={"Q": "1"}), "not DynamoDB JSON", True),
        (lambda r: r["dynamodb"]["OldImage"].update(fence={"S": "12"}), "fence '12' is not a whole", True),
        # More digits than DynamoDB's decimal context takes: boto3 raises decimal.Rounded (no ValueError).
        (lambda r: r["dynamodb"]["OldImage"].update(fence={"N": "1." + "0" * 40 + "1"}), "Rounded", True),
        # A lone surrogate (JSON allows one) is text Parquet cannot hold.
        (lambda r: r["dynamodb"]["OldImage"].update(outcome={"S": "\ud800"}), "does not fit the runs", True),
        (lambda r: r["dynamodb"].update(ApproximateCreationDateTime="soon"), "is not epoch seconds", True),
        (
            lambda r: r["dynamodb"].update(SequenceNumber="12ab"),
            "sequence number '12ab' is not digits",
            False,
        ),
        (lambda r: r.update(eventID="../x"), "cannot be part of an object's name", False),
        (lambda r: r["dynamodb"].pop("SequenceNumber"), "sequence number None is not digits", False),
    ],
)
def test_a_stream_record_that_cannot_be_a_row_is_archived_raw(
    change: Any, reason: str, named_by_record: bool
) -> None:
    record = fixture_records()[0]
    change(record)
    # The strict rule refuses it...
    with pytest.raises(archive.MalformedRecord, match=reason):
        archive.parsed(record)
    # ...and the archive keeps it whole instead, with the reason, as a row of kind unparsed.
    entry = archive.archived(record, now=NOW)
    assert entry.kind == archive.UNPARSED
    assert entry.reason is not None and entry.reason == entry.row["reason"]
    assert re.search(reason, entry.reason)
    assert json.loads(entry.row["record"]) == record
    body = record["dynamodb"]
    assert entry.row["sequence_number"] == body.get("SequenceNumber")
    assert entry.row["event_id"] == record["eventID"]
    assert (entry.row["key"], entry.row["partition_key"]) == (
        body["Keys"]["sk"]["S"] if "OldImage" not in body else body["OldImage"]["sk"].get("S"),
        "topic#vehicle_telemetry",
    )
    if body["ApproximateCreationDateTime"] == "soon":
        assert entry.row["expired_at"] is None
        assert entry.date == NOW.date().isoformat()
    else:
        expired_at = datetime.fromtimestamp(body["ApproximateCreationDateTime"], UTC)
        assert entry.row["expired_at"] == expired_at
        assert entry.date == expired_at.date().isoformat()
    if named_by_record:
        assert entry.name == f"{body['SequenceNumber']}-{record['eventID']}"
    else:  # a digest of the record: the same for every delivery of it
        assert re.fullmatch(r"sha256-[0-9a-f]{64}", entry.name)
        assert archive.archived(copy.deepcopy(record), now=NOW).name == entry.name
    assert entry.object_key == f"kind=unparsed/date={entry.date}/{entry.name}.parquet"
    assert archive.table(archive.UNPARSED, [entry.row]).to_pylist() == [entry.row]


@pytest.mark.parametrize(
    "record", [None, 17, "text", [], {}, {"dynamodb": []}, {"eventID": 3, "dynamodb": {}}]
)
def test_anything_delivered_as_a_record_is_archived_raw(record: Any) -> None:
    entry = archive.archived(record, now=NOW)
    assert (entry.kind, entry.date, entry.row["expired_at"]) == (archive.UNPARSED, "2026-04-09", None)
    assert json.loads(entry.row["record"]) == record
    assert entry.name.startswith("sha256-")
    assert archive.table(archive.UNPARSED, [entry.row]).to_pylist() == [entry.row]


def test_an_item_without_its_own_time_is_dated_by_its_expiry() -> None:
    record = fixture_records()[0]
    del record["dynamodb"]["OldImage"]["started_at_ms"]
    entry = archive.archived(record)
    assert entry.row["started_at"] is None
    assert entry.date == entry.row["expired_at"].date().isoformat() == "2026-04-09"


# --- the filter ----------------------------------------------------------------------------------------

SPEC_FILTER = {
    "eventName": ["REMOVE"],
    "userIdentity": {"type": ["Service"], "principalId": ["dynamodb.amazonaws.com"]},
    "dynamodb": {
        "Keys": {
            "sk": {
                "S": [
                    {"prefix": "runlog#"},
                    {"prefix": "output#"},
                    {"prefix": "audit#"},
                    {"prefix": "config#"},
                ]
            }
        }
    },
}


def passes_filter(record: dict[str, Any]) -> bool:
    """Whether Lambda's filter (EventBridge pattern rules; moto's implementation) lets the record through."""
    return EventPattern.load(json.dumps(archive.EVENT_FILTER)).matches_event(cast(Any, record))


def test_the_filter_is_the_contracts() -> None:
    assert archive.EVENT_FILTER == SPEC_FILTER


def test_the_filter_passes_ttl_deletions_of_archived_kinds_only() -> None:
    ttl = fixture_records()
    assert all(passes_filter(record) for record in ttl)

    by_a_user = fixture_records()[0]
    del by_a_user["userIdentity"]  # a DeleteItem (and DynamoDB Local's TTL) carries none
    assert not passes_filter(by_a_user)

    by_another_service = fixture_records()[0]
    by_another_service["userIdentity"]["principalId"] = "replication.dynamodb.amazonaws.com"
    assert not passes_filter(by_another_service)

    for event_name in ("INSERT", "MODIFY"):
        change = fixture_records()[0]
        change["eventName"] = event_name
        assert not passes_filter(change), event_name

    for sort_key in ("run#2026-04-02T10:05", "lock", "checkpoint", "schema", "backfill#bf-0123456789ab"):
        other = fixture_records()[0]
        other["dynamodb"]["Keys"]["sk"]["S"] = sort_key
        assert not passes_filter(other), sort_key


def test_the_template_filters_the_archive_functions_stream_with_the_same_pattern() -> None:
    resources = load_yaml(TEMPLATE)["Resources"]
    events = resources["ArchiveFunction"]["Properties"]["Events"]
    streams = [event["Properties"] for event in events.values() if event["Type"] == "DynamoDB"]
    assert len(streams) == 1
    (pattern,) = [entry["Pattern"] for entry in streams[0]["FilterCriteria"]["Filters"]]
    assert json.loads(pattern) == archive.EVENT_FILTER
    assert "ReportBatchItemFailures" in streams[0]["FunctionResponseTypes"]
    assert resources["ArchiveFunction"]["Properties"]["Handler"] == "leanops.handlers.archive.handler"


# --- writing a batch -----------------------------------------------------------------------------------


@pytest.fixture
def put_failures(monkeypatch: pytest.MonkeyPatch) -> dict[str, set[int]]:
    """Object key -> which of its puts (1 = the first) fail; the local and the S3 store both honour it."""
    failing: dict[str, set[int]] = {}
    attempts: dict[str, int] = {}
    for store_class in (LocalStore, S3Store):

        def put(self: Any, key: str, stream: Any, _original: Any = store_class.put) -> None:
            attempts[key] = attempts.get(key, 0) + 1
            if attempts[key] in failing.get(key, ()):
                raise SinkError(f"cannot write {key}: injected failure")
            _original(self, key, stream)

        monkeypatch.setattr(store_class, "put", put)
    return failing


def held_by_objects(root: Path) -> dict[str, list[str]]:
    """Object file name -> the sequence numbers it holds."""
    return {
        path.name: pq.read_table(path, columns=["sequence_number"]).column(0).to_pylist()
        for path in root.rglob("*.parquet")
    }


def test_a_failed_rewrite_moves_the_failure_point_down_to_that_groups_first_record(
    tmp_path: Path, put_failures: dict[str, set[int]]
) -> None:
    entries = [archive.archived(record) for record in shard_records(list(history_items(6)), 0)]
    first_of = group_objects(entries)
    keys = list(first_of)
    # GIVEN the third group's write fails, and so does the cut-back rewrite of the second group (kinds
    # interleave: the first two groups hold records from the third group's first on)
    put_failures[keys[2]] = {1}
    put_failures[keys[1]] = {2}
    store = LocalStore(tmp_path)
    # WHEN the batch is written
    result = archive.archive_batch(entries, store)
    # THEN the failure point is the second group's first record, and only the first group stands for it
    point = first_of[keys[1]]
    assert result == archive.BatchArchived(failure_point=point, objects=1)
    assert result.rows == point
    # AND no object named by a record before the point holds a record from it on
    names_before = {entries[i].object_key.rsplit("/", 1)[1] for i in range(point)}
    held = held_by_objects(tmp_path)
    archived_before = {entry.row["sequence_number"] for entry in entries[:point]}
    for name, numbers in held.items():
        if name in names_before:
            assert set(numbers) <= archived_before, name
    assert sorted(n for name in names_before for n in held.get(name, [])) == sorted(archived_before)


def test_objects_are_zstd_parquet_of_the_kinds_schema_without_partition_columns(tmp_path: Path) -> None:
    entries = [archive.archived(record) for record in fixture_records()]
    assert archive.archive_batch(entries, LocalStore(tmp_path)) == archive.BatchArchived(5, 4)
    for kind in KIND_ORDER:
        (path,) = (tmp_path / f"kind={kind}").rglob("*.parquet")
        assert pq.read_schema(path).remove_metadata() == archive.SCHEMAS[kind]
        metadata = pq.ParquetFile(path).metadata
        assert metadata.row_group(0).column(0).compression == "ZSTD"
    # Named by the group's first record: sequence number and event id.
    first = fixture_records()[0]
    expected = f"{first['dynamodb']['SequenceNumber']}-{first['eventID']}.parquet"
    assert (tmp_path / "kind=runs" / "date=2026-04-02" / expected).is_file()
    assert not list(tmp_path.rglob("_tmp-*"))  # the atomic writes left no temporary file


def test_a_group_whose_first_record_has_no_usable_name_is_named_by_its_digest_on_every_delivery(
    tmp_path: Path,
) -> None:
    records = shard_records(list(history_items(3)), 0)
    # GIVEN three unparsed records deleted the same hour: the first two with event ids no name can hold (the
    # second without an old image too), the fifth, whose name is usable, with an attribute of a wrong type
    for record in records:
        record["dynamodb"]["ApproximateCreationDateTime"] = 1_775_800_000
    records[0]["eventID"] = "../x"
    records[1]["eventID"] = "../y"
    records[1]["dynamodb"].pop("OldImage")
    records[4]["dynamodb"]["OldImage"]["fence"] = {"S": "12"}
    store = LocalStore(tmp_path)
    # WHEN a short delivery is followed by one from the same checkpoint that reaches further (the
    # checkpoint's move was lost), and then by the rest
    for batch in (records[:2], records[:6], records[6:]):
        entries = [archive.archived(record) for record in batch]
        assert archive.archive_batch(entries, store) == archive.BatchArchived(
            len(batch), len(group_objects(entries))
        )
    # THEN each record is archived once
    found = read_back(tmp_path)
    assert sorted(n for numbers in found.values() for n in numbers) == sorted(sequence_numbers(records))
    assert sorted(found[archive.UNPARSED]) == sorted(sequence_numbers([records[0], records[1], records[4]]))
    # AND the group took its first record's name both times: the digest of its JSON (named by the fifth
    # record's usable name in the second delivery, it would leave the first delivery's object beside it)
    (unparsed,) = (tmp_path / "kind=unparsed").rglob("*.parquet")
    assert unparsed.name == archive.archived(records[0]).name + ".parquet"
    assert unparsed.name.startswith("sha256-")
    reasons = pq.read_table(unparsed, columns=["reason"]).column(0).to_pylist()
    assert len(reasons) == 3 and "cannot be part of an object's name" in reasons[0]
