"""The ``dynamodb`` source against DynamoDB Local: order, resumption, pagination, checks and positions."""

from __future__ import annotations

import base64
import contextlib
import json
import random
import re
import uuid
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest
from boto3.dynamodb.types import Binary, TypeSerializer
from botocore.exceptions import ClientError
from leanopsctl.local.dynamodb_local import local_client

from leanops.data.dynamodb_source import DynamoDBSource, parse_position, plain
from leanops.errors import ConfigError, InvalidInput, SourceError, StoreThrottled

pytestmark = pytest.mark.integration

_serializer = TypeSerializer()


class QuerySpy:
    """A client that forwards everything and records each Query's request and item count."""

    def __init__(self, client: Any) -> None:
        self._client = client
        self.queries: list[dict[str, Any]] = []
        self.page_sizes: list[int] = []

    def query(self, **request: Any) -> dict[str, Any]:
        self.queries.append(request)
        response = self._client.query(**request)
        self.page_sizes.append(len(response.get("Items", [])))
        return response

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)


class FailingClient:
    """A client whose every request fails with the given error code."""

    def __init__(self, code: str) -> None:
        self.code = code

    def _fail(self, operation: str) -> None:
        raise ClientError({"Error": {"Code": self.code, "Message": "it went\nwrong"}}, operation)

    def query(self, **request: Any) -> dict[str, Any]:
        self._fail("Query")
        return {}

    def describe_table(self, **request: Any) -> dict[str, Any]:
        self._fail("DescribeTable")
        return {}


@pytest.fixture
def client(dynamodb_local: Any) -> Any:
    return local_client(dynamodb_local.endpoint_url)


@pytest.fixture
def make_table(client: Any, request: pytest.FixtureRequest) -> Iterator[Any]:
    """``make_table(("device", "S"), ("ts", "N"))`` creates a fresh source table; all are deleted after."""
    created: list[str] = []

    def make(hash_key: tuple[str, str], range_key: tuple[str, str] | None) -> str:
        readable = re.sub(r"[^A-Za-z0-9_.-]+", "-", request.node.name)[:60].strip("-")
        name = f"source-{readable}-{uuid.uuid4().hex[:8]}"
        keys = [(hash_key, "HASH")] + ([(range_key, "RANGE")] if range_key else [])
        client.create_table(
            TableName=name,
            KeySchema=[{"AttributeName": n, "KeyType": kind} for (n, _), kind in keys],
            AttributeDefinitions=[{"AttributeName": n, "AttributeType": t} for (n, t), _ in keys],
            BillingMode="PAY_PER_REQUEST",
        )
        created.append(name)
        return name

    yield make
    for name in created:
        with contextlib.suppress(client.exceptions.ResourceNotFoundException):
            client.delete_table(TableName=name)


def put_items(client: Any, table: str, items: list[dict[str, Any]]) -> None:
    for start in range(0, len(items), 25):
        requests = [
            {"PutRequest": {"Item": {k: _serializer.serialize(v) for k, v in item.items()}}}
            for item in items[start : start + 25]
        ]
        pending: dict[str, Any] = {table: requests}
        while pending:
            pending = client.batch_write_item(RequestItems=pending).get("UnprocessedItems") or {}


@pytest.fixture
def numbers(client: Any, make_table: Any) -> str:
    """A table keyed ``device`` (S) + ``ts`` (N)."""
    return make_table(("device", "S"), ("ts", "N"))


@pytest.fixture
def strings(client: Any, make_table: Any) -> str:
    """A table keyed ``device`` (S) + ``key`` (S)."""
    return make_table(("device", "S"), ("key", "S"))


def read_all(source: DynamoDBSource, limit: int, after: str | None = None) -> list[list[dict[str, Any]]]:
    """Every batch until the source reports no more, each resuming at the previous batch's end."""
    batches = []
    while True:
        batch = source.read(after, limit)
        batches.append(batch.records)
        assert batch.rejects == [] and batch.keys == []
        after = batch.end if batch.end is not None else after
        if not batch.more:
            return batches


# --- reading -----------------------------------------------------------------------------------------------


def test_reads_one_partition_from_the_beginning_in_sort_key_order(client, numbers):
    timestamps = [5, 100, 9, 10, -3, 1.5, 42]
    put_items(client, numbers, [{"device": "d1", "ts": Decimal(str(t)), "v": f"v{t}"} for t in timestamps])
    put_items(client, numbers, [{"device": "d2", "ts": Decimal(t), "v": "other"} for t in (1, 6, 200)])
    spy = QuerySpy(client)
    source = DynamoDBSource(numbers, "device", "d1", "ts", client=spy)

    batch = source.read(None, 100)

    assert [r["ts"] for r in batch.records] == [-3, 1.5, 5, 9, 10, 42, 100]
    assert [r["v"] for r in batch.records] == ["v-3", "v1.5", "v5", "v9", "v10", "v42", "v100"]
    assert batch.end == "N:100"
    assert batch.more is False
    assert batch.origin(0) == {"table": numbers, "sort_key": -3}
    assert batch.origin(1) == {"table": numbers, "sort_key": 1.5}
    assert batch.rejects == [] and batch.keys == []
    assert spy.queries and all(q["ConsistentRead"] is True for q in spy.queries)
    assert spy.queries[0]["KeyConditionExpression"] == "#pk = :pk"


def test_resumes_after_a_checkpoint_without_duplicates_or_losses(client, numbers):
    ids = list(range(1, 2501))
    shuffled = random.Random(7).sample(ids, len(ids))
    put_items(client, numbers, [{"device": "d1", "ts": i * 10, "id": i} for i in shuffled])
    put_items(client, numbers, [{"device": "d0", "ts": i, "id": -i} for i in range(1, 40)])
    spy = QuerySpy(client)
    source = DynamoDBSource(numbers, "device", "d1", "ts", client=spy)

    batches = read_all(source, 300)

    assert [len(b) for b in batches] == [300] * 8 + [100]
    assert [r["id"] for b in batches for r in b] == ids  # each item exactly once, in order
    assert all(q["ConsistentRead"] is True for q in spy.queries)
    assert all(q["Limit"] <= 300 for q in spy.queries)
    resumed = [
        q for q in spy.queries if "ExclusiveStartKey" not in q and ":after" in q["ExpressionAttributeValues"]
    ]
    assert resumed[0]["KeyConditionExpression"] == "#pk = :pk AND #sk > :after"
    assert resumed[0]["ExpressionAttributeValues"][":after"] == {"N": "3000"}


def test_a_batch_resumes_exactly_after_its_checkpoint(client, numbers):
    put_items(client, numbers, [{"device": "d1", "ts": t} for t in (1, 2, 3, 4, 5)])
    source = DynamoDBSource(numbers, "device", "d1", "ts", client=client)

    first = source.read(None, 2)
    second = source.read(first.end, 2)
    third = source.read(second.end, 2)

    assert ([r["ts"] for r in first.records], first.end, first.more) == ([1, 2], "N:2", True)
    assert ([r["ts"] for r in second.records], second.end, second.more) == ([3, 4], "N:4", True)
    assert ([r["ts"] for r in third.records], third.end, third.more) == ([5], "N:5", False)
    last = source.read("N:5", 2)
    assert (last.records, last.end, last.more) == ([], None, False)
    # A checkpoint between two keys, typed by hand.
    assert [r["ts"] for r in source.read("N:2.5", 10).records] == [3, 4, 5]


def test_pages_past_one_megabyte_query_pages(client, numbers):
    payload = "x" * 12_000  # ~12 KB items: one 1 MB Query page holds fewer than 100 of them
    put_items(client, numbers, [{"device": "d1", "ts": i, "payload": payload} for i in range(400)])
    spy = QuerySpy(client)
    source = DynamoDBSource(numbers, "device", "d1", "ts", client=spy)

    first = source.read(None, 250)

    assert [r["ts"] for r in first.records] == list(range(250))
    assert all(r["payload"] == payload for r in first.records)
    assert (first.end, first.more) == ("N:249", True)
    assert len(spy.queries) >= 3 and max(spy.page_sizes) < 100
    assert "ExclusiveStartKey" in spy.queries[1]
    # Each page asks only for the records still wanted.
    assert spy.queries[0]["Limit"] == 250
    assert spy.queries[1]["Limit"] == 250 - spy.page_sizes[0]

    rest = source.read(first.end, 250)
    assert [r["ts"] for r in rest.records] == list(range(250, 400))
    assert (rest.end, rest.more) == ("N:399", False)


def test_string_sort_keys_are_read_in_lexical_order(client, strings):
    keys = ["b", "a10", "a9", "a", "B", "é", "a/b c", "z#1"]
    put_items(client, strings, [{"device": "d1", "key": k} for k in keys])
    source = DynamoDBSource(strings, "device", "d1", "key", client=client)

    batch = source.read(None, 3)
    assert [r["key"] for r in batch.records] == ["B", "a", "a/b c"]
    assert (batch.end, batch.more) == ("S:a/b c", True)
    assert batch.origin(2) == {"table": strings, "sort_key": "a/b c"}

    rest = read_all(source, 3, batch.end)
    assert [r["key"] for b in rest for r in b] == ["a10", "a9", "b", "z#1", "é"]
    assert source.read("S:a9", 10).end == "S:é"


def test_number_partition_key_and_string_sort_key(client, make_table):
    table = make_table(("tenant", "N"), ("key", "S"))
    put_items(client, table, [{"tenant": 7, "key": k} for k in ("x", "y")] + [{"tenant": 8, "key": "w"}])
    source = DynamoDBSource(table, "tenant", 7, "key", client=client)
    source.check()
    batch = source.read(None, 10)
    assert [(r["tenant"], r["key"]) for r in batch.records] == [(7, "x"), (7, "y")]
    assert batch.end == "S:y"


def test_empty_partition_reads_nothing_and_other_partitions_are_not_read(client, numbers):
    put_items(client, numbers, [{"device": "other", "ts": t} for t in range(5)])
    source = DynamoDBSource(numbers, "device", "d1", "ts", client=client)

    batch = source.read(None, 10)

    assert (batch.records, batch.end, batch.more) == ([], None, False)
    assert source.has_records_after(None) is False
    assert DynamoDBSource(numbers, "device", "other", "ts", client=client).has_records_after(None) is True


def test_has_records_after(client, numbers):
    put_items(client, numbers, [{"device": "d1", "ts": t} for t in (10, 20)])
    spy = QuerySpy(client)
    source = DynamoDBSource(numbers, "device", "d1", "ts", client=spy)

    assert source.has_records_after(None) is True
    assert source.has_records_after("N:9") is True
    assert source.has_records_after("N:10") is True
    assert source.has_records_after("N:19.5") is True
    assert source.has_records_after("N:20") is False
    assert source.has_records_after("N:1000") is False
    assert len(spy.queries) == 6
    assert all(q["Limit"] == 1 and q["ConsistentRead"] is True for q in spy.queries)


def test_should_stop_is_honoured_after_the_first_record(client, numbers):
    put_items(client, numbers, [{"device": "d1", "ts": t} for t in range(1, 6)])
    source = DynamoDBSource(numbers, "device", "d1", "ts", client=client)

    batch = source.read(None, 10, should_stop=lambda: True)
    assert [r["ts"] for r in batch.records] == [1]
    assert (batch.end, batch.more) == ("N:1", True)

    calls: list[int] = []

    def stop_on_third_question() -> bool:
        calls.append(1)
        return len(calls) > 2

    batch = source.read("N:1", 10, should_stop=stop_on_third_question)
    assert [r["ts"] for r in batch.records] == [2, 3, 4]
    assert len(calls) == 3  # never asked before the first record: a batch always makes progress
    assert (batch.end, batch.more) == ("N:4", True)
    assert [r["ts"] for r in source.read(batch.end, 10).records] == [5]


def test_default_client_uses_the_endpoint_from_the_environment(client, numbers, state_table):
    # state_table sets AWS_ENDPOINT_URL_DYNAMODB to the session's DynamoDB Local for this test.
    put_items(client, numbers, [{"device": "d1", "ts": 1, "v": "hello"}])
    source = DynamoDBSource(numbers, "device", "d1", "ts")
    source.check()
    assert source.read(None, 5).records == [{"device": "d1", "ts": 1, "v": "hello"}]


# --- items as plain JSON -----------------------------------------------------------------------------------


def test_items_are_plain_json(client, numbers):
    item = {
        "device": "d1",
        "ts": 1,
        "count": Decimal("3"),
        "big": Decimal("12345678901234567890"),
        "ratio": Decimal("0.25"),
        "exp": Decimal("1E+2"),
        "tags": {"b", "a", "c"},
        "scores": {Decimal("10"), Decimal("9"), Decimal("1.5")},
        "blob": Binary(b"\x00\x01hi"),
        "blobs": {Binary(b"b"), Binary(b"a")},
        "flag": True,
        "nothing": None,
        "nested": {"list": [Decimal("1"), Decimal("2.5"), {"deep": {"x", "y"}}], "s": "t"},
    }
    put_items(client, numbers, [item])
    record = DynamoDBSource(numbers, "device", "d1", "ts", client=client).read(None, 1).records[0]

    assert record == {
        "device": "d1",
        "ts": 1,
        "count": 3,
        "big": 12345678901234567890,
        "ratio": 0.25,
        "exp": 100,
        "tags": ["a", "b", "c"],
        "scores": [1.5, 9, 10],
        "blob": base64.b64encode(b"\x00\x01hi").decode(),
        "blobs": ["YQ==", "Yg=="],
        "flag": True,
        "nothing": None,
        "nested": {"list": [1, 2.5, {"deep": ["x", "y"]}], "s": "t"},
    }
    assert type(record["count"]) is int and type(record["ratio"]) is float
    assert json.loads(json.dumps(record)) == record


def test_plain_converts_decimals_and_sets():
    assert plain(Decimal("7.000")) == 7 and type(plain(Decimal("7.000"))) is int
    assert plain(Decimal("-0.5")) == -0.5
    assert plain({Decimal("3"), Decimal("-1")}) == [-1, 3]
    assert plain(b"\xff") == "/w=="


# --- check --------------------------------------------------------------------------------------------------


def test_check_accepts_the_right_schema(client, numbers, strings):
    DynamoDBSource(numbers, "device", "d1", "ts", client=client).check()
    DynamoDBSource(strings, "device", "d1", "key", client=client).check()


def test_check_names_a_missing_table(client):
    source = DynamoDBSource("no-such-table", "device", "d1", "ts", client=client)
    with pytest.raises(ConfigError) as error:
        source.check()
    assert str(error.value) == (
        "dynamodb source table no-such-table does not exist: create it or fix the topic's source.table"
    )
    with pytest.raises(ConfigError, match="does not exist"):
        source.read(None, 10)


def test_check_refuses_a_wrong_key_schema(client, numbers, make_table):
    with pytest.raises(ConfigError) as error:
        DynamoDBSource(numbers, "device", "d1", "time", client=client).check()
    assert "has key schema HASH=device, RANGE=ts" in str(error.value)
    assert "expects HASH=device, RANGE=time" in str(error.value)

    with pytest.raises(ConfigError, match="has key schema HASH=device, RANGE=ts"):
        DynamoDBSource(numbers, "ts", "d1", "device", client=client).check()

    hash_only = make_table(("device", "S"), None)
    with pytest.raises(ConfigError) as error:
        DynamoDBSource(hash_only, "device", "d1", "ts", client=client).check()
    assert f"table {hash_only} has key schema HASH=device;" in str(error.value)


def test_check_refuses_binary_sort_keys_and_a_partition_value_of_the_wrong_type(client, numbers, make_table):
    binary = make_table(("device", "S"), ("ts", "B"))
    with pytest.raises(ConfigError, match="sort key ts has type B; only string"):
        DynamoDBSource(binary, "device", "d1", "ts", client=client).check()
    with pytest.raises(ConfigError, match="partition key device has type S"):
        DynamoDBSource(numbers, "device", 1, "ts", client=client).check()


def test_constructor_refuses_empty_names_and_odd_partition_values(client):
    with pytest.raises(ConfigError, match="sort_key must be a non-empty string"):
        DynamoDBSource("t", "pk", "v", "", client=client)
    with pytest.raises(ConfigError, match="partition_value must be a string or an integer"):
        DynamoDBSource("t", "pk", True, "sk", client=client)
    with pytest.raises(ConfigError, match="partition_value must not be empty"):
        DynamoDBSource("t", "pk", "", "sk", client=client)


# --- positions ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "position",
    ["x", "", "N:", "N:abc", "N:1_000", "N:NaN", "N:Infinity", "N: 1", "S:", "B:AA==", "n:1", "17"],
)
def test_invalid_positions_are_refused_everywhere(client, numbers, position):
    source = DynamoDBSource(numbers, "device", "d1", "ts", client=client)
    expected = (
        f"invalid position {position!r} for dynamodb source {numbers}: expected N:<number> or S:<string>"
    )
    for use in (
        lambda: source.read(position, 10),
        lambda: source.has_records_after(position),
        lambda: source.order(position),
        lambda: source.stem(position),
        lambda: parse_position(position, numbers),
    ):
        with pytest.raises(InvalidInput) as error:
            use()
        assert str(error.value) == expected


def test_positions_of_the_wrong_type_for_the_table_are_refused(client, numbers, strings):
    put_items(client, numbers, [{"device": "d1", "ts": 1}])
    by_number = DynamoDBSource(numbers, "device", "d1", "ts", client=client)
    by_string = DynamoDBSource(strings, "device", "d1", "key", client=client)
    with pytest.raises(
        InvalidInput, match=r"^invalid position 'S:1' .* ts is a number, expected N:<number>$"
    ):
        by_number.order("S:1")
    with pytest.raises(InvalidInput, match=r"ts is a number, expected N:<number>$"):
        DynamoDBSource(numbers, "device", "d1", "ts", client=client).read("S:1", 10)
    with pytest.raises(InvalidInput, match=r"key is a string, expected S:<string>$"):
        by_string.order("N:1")
    with pytest.raises(InvalidInput, match=r"key is a string, expected S:<string>$"):
        DynamoDBSource(strings, "device", "d1", "key", client=client).has_records_after("N:1")


def test_order_sorts_numbers_numerically_and_strings_lexically(client, numbers, strings):
    by_number = DynamoDBSource(numbers, "device", "d1", "ts", client=client)
    positions = ["N:10", "N:9", "N:-1", "N:1.5", "N:100", "N:1e1", "N:0.25"]
    assert sorted(positions, key=by_number.order) == [
        "N:-1",
        "N:0.25",
        "N:1.5",
        "N:9",
        "N:10",
        "N:1e1",
        "N:100",
    ]
    assert by_number.order("N:9") < by_number.order("N:10")
    assert by_number.order("N:10") == by_number.order("N:1e1") == Decimal(10)

    by_string = DynamoDBSource(strings, "device", "d1", "key", client=client)
    assert sorted(["S:b", "S:a9", "S:a10", "S:é", "S:B"], key=by_string.order) == [
        "S:B",
        "S:a10",
        "S:a9",
        "S:b",
        "S:é",
    ]
    assert by_string.order("S:a10") < by_string.order("S:a9")


def test_order_agrees_with_dynamodb(client, numbers, strings):
    values = [Decimal(v) for v in ("-100", "-1.5", "0", "0.001", "2", "9", "10", "1E+3", "123456789012")]
    put_items(
        client, numbers, [{"device": "d1", "ts": v} for v in random.Random(1).sample(values, len(values))]
    )
    by_number = DynamoDBSource(numbers, "device", "d1", "ts", client=client)
    read = [by_number.order(f"N:{r['ts']}") for r in by_number.read(None, 100).records]
    assert read == sorted(read) and len(read) == len(values)

    words = ["Z", "a", "ab", "a b", "~", "é", "日本", "😀", "a\u00e9", "ae"]
    put_items(client, strings, [{"device": "d1", "key": w} for w in words])
    by_string = DynamoDBSource(strings, "device", "d1", "key", client=client)
    batch = by_string.read(None, 100)
    positions = [f"S:{r['key']}" for r in batch.records]
    assert positions == sorted(positions, key=by_string.order) and len(positions) == len(words)


def test_stem_is_a_safe_file_name(client, numbers, strings):
    by_number = DynamoDBSource(numbers, "device", "d1", "ts", client=client)
    by_string = DynamoDBSource(strings, "device", "d1", "key", client=client)
    assert by_number.stem(None) == "origin"
    assert by_number.stem("N:17") == "N%3A17"
    assert by_number.stem("N:-1.5") == "N%3A-1.5"
    assert by_string.stem("S:day=1/a b_c.d") == "S%3Aday=1%2Fa%20b_c.d"
    assert by_string.stem("S:_x") == "S%3A_x"
    assert by_string.stem("S:a%2F") != by_string.stem("S:a/")


# --- errors -------------------------------------------------------------------------------------------------


def test_aws_errors_become_one_line_source_errors():
    source = DynamoDBSource("events", "device", "d1", "ts", client=FailingClient("AccessDeniedException"))
    with pytest.raises(SourceError) as error:
        source.read("N:1", 10)
    assert str(error.value) == (
        "dynamodb source table events: query of partition device='d1' failed: AccessDeniedException: "
        "it went wrong"
    )
    with pytest.raises(SourceError, match=r"^dynamodb source table events: describe failed: AccessDenied"):
        source.check()


def test_throttling_becomes_store_throttled():
    source = DynamoDBSource("events", "device", "d1", "ts", client=FailingClient("ThrottlingException"))
    with pytest.raises(StoreThrottled, match=r"^dynamodb source table events is busy"):
        source.has_records_after(None)


def test_limit_must_be_positive(client, numbers):
    with pytest.raises(InvalidInput, match="limit must be at least 1"):
        DynamoDBSource(numbers, "device", "d1", "ts", client=client).read(None, 0)


# --- a bounded source (a backfill's) -------------------------------------------------------------------


@pytest.mark.parametrize("limit", [1, 2, 50])
def test_a_bounded_source_reads_exactly_the_items_after_its_start_up_to_its_bound(client, numbers, limit):
    keys = [-2, 0, 1.5, 3, 7, 8, 20]
    put_items(client, numbers, [{"device": "d1", "ts": Decimal(str(k))} for k in keys])
    put_items(client, numbers, [{"device": "d2", "ts": Decimal(k)} for k in (2, 5)])
    bounds = ["N:-5", "N:-2", "N:0", "N:1.50", "N:2", "N:3", "N:7", "N:20", "N:99"]
    for after in [None, *bounds]:
        for until in bounds:
            source = DynamoDBSource(numbers, "device", "d1", "ts", client=client, until=until)
            low = Decimal(after[2:]) if after else Decimal("-Infinity")
            expected = [k for k in keys if low < Decimal(str(k)) <= Decimal(until[2:])]
            got = [r["ts"] for batch in read_all(source, limit, after) for r in batch]
            assert got == expected, (after, until, limit)
            assert source.has_records_after(after) == bool(expected), (after, until)


@pytest.mark.parametrize("limit", [1, 50])
def test_a_bounded_source_of_string_keys_compares_as_dynamodb_does(client, strings, limit):
    keys = ["a", "a#1", "ab", "b", "b\u00e9", "c", "\u4e2d"]
    put_items(client, strings, [{"device": "d1", "key": k} for k in keys])
    bounds = ["S:0", "S:a", "S:a#", "S:ab", "S:b\u00e9", "S:bz", "S:\u4e2d", "S:\uffff"]
    for after in [None, *bounds]:
        for until in bounds:
            source = DynamoDBSource(strings, "device", "d1", "key", client=client, until=until)
            expected = [k for k in keys if (after is None or k > after[2:]) and k <= until[2:]]
            assert [r["key"] for batch in read_all(source, limit, after) for r in batch] == expected
            assert source.has_records_after(after) == bool(expected), (after, until)


def test_a_bounded_source_takes_numbers_however_they_are_spelled(client, numbers):
    put_items(client, numbers, [{"device": "d1", "ts": Decimal(k)} for k in ("1.5", "2", "3")])
    source = DynamoDBSource(numbers, "device", "d1", "ts", client=client, until="N:2.000")
    assert [r["ts"] for batch in read_all(source, 1, "N:1.50") for r in batch] == [2]
    assert [r["ts"] for batch in read_all(source, 5, "N:1e0") for r in batch] == [1.5, 2]
    assert not source.has_records_after("N:2.0") and not source.has_records_after("N:02")


# --- an index, an age, a cut -------------------------------------------------------------------------------


@pytest.fixture
def queue(client: Any, request: pytest.FixtureRequest) -> Iterator[str]:
    """A table keyed ``pk`` + ``sk`` with a global index ``by_status`` (``status`` + ``since``: a string,
    ``<epoch ms, 13 digits>#<id>``) and a local index ``by_n`` (``pk`` + ``n``: a number)."""
    name = f"queue-{uuid.uuid4().hex[:8]}"
    strings = [("pk", "S"), ("sk", "S"), ("status", "S"), ("since", "S"), ("n", "N")]
    client.create_table(
        TableName=name,
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}],
        AttributeDefinitions=[{"AttributeName": n, "AttributeType": t} for n, t in strings],
        GlobalSecondaryIndexes=[
            {
                "IndexName": "by_status",
                "KeySchema": [
                    {"AttributeName": "status", "KeyType": "HASH"},
                    {"AttributeName": "since", "KeyType": "RANGE"},
                ],
                "Projection": {"ProjectionType": "ALL"},
            }
        ],
        LocalSecondaryIndexes=[
            {
                "IndexName": "by_n",
                "KeySchema": [
                    {"AttributeName": "pk", "KeyType": "HASH"},
                    {"AttributeName": "n", "KeyType": "RANGE"},
                ],
                "Projection": {"ProjectionType": "ALL"},
            }
        ],
        BillingMode="PAY_PER_REQUEST",
    )
    yield name
    with contextlib.suppress(client.exceptions.ResourceNotFoundException):
        client.delete_table(TableName=name)


def since(ms: int, ident: str) -> str:
    return f"{ms:013d}#{ident}"


def test_an_index_source_reads_its_partition_in_index_order_eventually_consistently(client, queue):
    put_items(
        client,
        queue,
        [
            {
                "pk": f"p{i}",
                "sk": "p",
                "status": "PENDING" if i % 2 else "DONE",
                "since": since(1000 + i, f"p{i}"),
            }
            for i in range(10)
        ],
    )
    spy = QuerySpy(client)
    source = DynamoDBSource(queue, "status", "PENDING", "since", client=spy, index="by_status")
    source.check()
    batches = read_all(source, 2)
    assert [r["pk"] for batch in batches for r in batch] == ["p1", "p3", "p5", "p7", "p9"]
    assert {q["IndexName"] for q in spy.queries} == {"by_status"}
    assert {q["ConsistentRead"] for q in spy.queries} == {False}  # a global index offers nothing else
    local = DynamoDBSource(queue, "pk", "p1", "n", client=spy, index="by_n")
    local.check()
    local.read(None, 1)
    assert spy.queries[-1]["ConsistentRead"] is True  # a local index is read strongly


def test_an_index_is_checked_by_name_and_key_schema(client, queue):
    with pytest.raises(ConfigError, match=rf"table {queue} has no index nope \(indexes: by_n, by_status\)"):
        DynamoDBSource(queue, "status", "PENDING", "since", client=client, index="nope").check()
    with pytest.raises(
        ConfigError, match=r"index by_status of table .* has key schema HASH=status, RANGE=since"
    ):
        DynamoDBSource(queue, "status", "PENDING", "sk", client=client, index="by_status").check()


@pytest.mark.parametrize("kind", ["S", "N"])
def test_min_age_reads_only_items_at_least_that_old_and_the_rest_later(client, queue, make_table, kind):
    now = {"ms": 1_800_000_000_000}
    if kind == "S":
        table, key = queue, "sk"
        items = [
            {"pk": "feed", "sk": since(now["ms"] - age, f"x{age}")} for age in (90_000, 61_000, 59_000, 0)
        ]
    else:
        table, key = make_table(("pk", "S"), ("sk", "N")), "sk"
        items = [{"pk": "feed", "sk": now["ms"] - age} for age in (90_000, 61_000, 59_000, 0)]
    put_items(client, table, items)
    source = DynamoDBSource(
        table, "pk", "feed", key, client=client, min_age_seconds=60, clock=lambda: now["ms"]
    )
    first = source.read(None, 10)
    assert [r[key] for r in first.records] == [items[0]["sk"], items[1]["sk"]]
    assert first.more is False and source.has_records_after(first.end) is False
    now["ms"] += 2_000  # the 59 s old item comes of age; the newest does not
    assert source.has_records_after(first.end) is True
    second = source.read(first.end, 10)
    assert [r[key] for r in second.records] == [items[2]["sk"]]
    now["ms"] += 60_000
    assert [r[key] for r in source.read(second.end, 10).records] == [items[3]["sk"]]


def test_min_age_and_a_backfill_bound_read_up_to_the_earlier_of_the_two(client, queue):
    now = 1_800_000_000_000
    items = [{"pk": "feed", "sk": since(now - age, "x")} for age in (300_000, 200_000, 100_000)]
    put_items(client, queue, items)
    bounded = DynamoDBSource(
        queue,
        "pk",
        "feed",
        "sk",
        client=client,
        min_age_seconds=150,
        clock=lambda: now,
        until=f"S:{items[0]['sk']}",
    )
    assert [r["sk"] for r in bounded.read(None, 10).records] == [items[0]["sk"]]
    aged = DynamoDBSource(
        queue,
        "pk",
        "feed",
        "sk",
        client=client,
        min_age_seconds=150,
        clock=lambda: now,
        until=f"S:{items[2]['sk']}",
    )
    assert [r["sk"] for r in aged.read(None, 10).records] == [items[0]["sk"], items[1]["sk"]]


def test_a_cut_ends_the_batch_before_the_first_item_of_another_value(client, numbers):
    put_items(client, numbers, [{"device": "d", "ts": t, "day": t // 10} for t in range(25)])
    source = DynamoDBSource(numbers, "device", "d", "ts", client=client)
    after, days = None, []
    while True:
        batch = source.read(after, 100, cut=lambda record: record["day"])
        days.append(sorted({r["day"] for r in batch.records}))
        after = batch.end
        if not batch.more:
            break
    assert days == [[0], [1], [2]]


@pytest.mark.parametrize(
    ("key", "found_by"),
    [
        ("2026-11-29T10:00:00.000Z#a", "check"),  # an ISO time sorts after every time: the newest key
        ("0001732521600123#a", "read"),  # 16 digits sort before the times: read at once, so refused there
        ("123#a", "read"),
        ("١٧٣٢٥٢١٦٠٠١٢٣#a", "check"),  # 13 digits, but not ASCII ones: they sort after every time
    ],
)
def test_min_age_refuses_a_partition_whose_keys_are_not_13_digit_times(client, strings, key, found_by):
    good = {"device": "d", "key": since(1_700_000_000_000, "ok")}
    put_items(client, strings, [good, {"device": "d", "key": key}])
    source = DynamoDBSource(strings, "device", "d", "key", client=client, min_age_seconds=60)
    refused = pytest.raises(ConfigError, match="does not start with 13 digits of epoch milliseconds")
    if found_by == "check":
        with refused:
            source.check()
    else:
        source.check()  # the newest key is a good one
        with refused:
            source.read(None, 10)


def test_min_age_takes_13_digit_time_keys_and_an_empty_partition(client, strings):
    source = DynamoDBSource(strings, "device", "d", "key", client=client, min_age_seconds=60)
    source.check()  # nothing to look at yet
    put_items(
        client, strings, [{"device": "d", "key": "1800000000000"}, {"device": "d", "key": since(1, "x")}]
    )
    source.check()


def test_a_warm_process_forgets_its_description_when_the_table_was_recreated_with_other_keys(
    client, make_table
):
    # A process learnt the sort key is a string; the table is recreated with a number key meanwhile (a second
    # folder's operator, a restore): the next batch of that process must not go on believing the string.
    table = make_table(("device", "S"), ("key", "S"))
    put_items(client, table, [{"device": "d", "key": since(1_700_000_000_000, "a")}])
    DynamoDBSource(table, "device", "d", "key", client=client, min_age_seconds=60).check()
    client.delete_table(TableName=table)
    client.get_waiter("table_not_exists").wait(TableName=table)
    client.create_table(
        TableName=table,
        KeySchema=[
            {"AttributeName": "device", "KeyType": "HASH"},
            {"AttributeName": "key", "KeyType": "RANGE"},
        ],
        AttributeDefinitions=[
            {"AttributeName": "device", "AttributeType": "S"},
            {"AttributeName": "key", "AttributeType": "N"},
        ],
        BillingMode="PAY_PER_REQUEST",
    )
    put_items(client, table, [{"device": "d", "key": 1_700_000_000_000}])
    warm = DynamoDBSource(table, "device", "d", "key", client=client, min_age_seconds=60)
    with pytest.raises(SourceError, match="ValidationException"):  # the stale string bound is refused ...
        warm.read(None, 10)
    assert [r["key"] for r in warm.read(None, 10).records] == [1_700_000_000_000]  # ... and then it knows
