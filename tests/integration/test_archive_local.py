"""The local archive path (leanopsctl.local.streams): DynamoDB Local's TTL deletions, read from the state
table's stream, shaped as Lambda delivers them, filtered by the ArchiveFunction's filter and delivered to its
real handler in a worker of the local stack's kind, which writes Parquet under ``<home>/archive``."""

from __future__ import annotations

import copy
import dataclasses
import json
import shutil
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow.dataset as ds
import pytest
from leanopsctl.local import stack, streams
from leanopsctl.local.dynamodb_local import DynamoDBLocal
from leanopsctl.local.pool import FunctionPool, Invocation
from leanopsctl.local.template import load_yaml, read_template

from leanops.archive import EVENT_FILTER, archived
from tests.conftest import running_dynamodb_local
from tests.support.cli import finish

# Waits on DynamoDB Local's TTL sweeps, which fall behind on busy CPUs (ttl_deadline): room for it.
pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

REPO = Path(__file__).resolve().parents[2]
TEMPLATE = REPO / "template.yaml"
FIXTURE = REPO / "tests" / "events" / "dynamodb_stream_ttl_remove.json"
FUNCTION = "ArchiveFunction"

#: DynamoDB Local deletes expired items in sweeps, measured here (3.3.1): one about every 10 s, of at most
#: 20 items of a table (81 expired items were gone after 0, 10, 20, 30 and 40 s, 20 at a time).
TTL_SWEEP_SECONDS = 10.0
TTL_SWEEP_ITEMS = 20


@pytest.fixture(scope="module")
def dynamodb_local(offline_aws_env: None) -> Iterator[DynamoDBLocal]:
    """This module's own DynamoDB Local (the state tables of its tests live there): its TTL sweeps serve
    these tables alone. On the session's, shared with the rest of the suite, 17 of 21 expired items were
    still there after 160 s in a CI run with nothing else on the machine."""
    with running_dynamodb_local() as server:
        yield server


def ttl_deadline(items: int) -> float:
    """Seconds to allow DynamoDB Local's TTL to delete ``items`` expired items before failing: five times the
    sweeps it needs, one more (the first may be up to a period away), and a minute. Generous, since the wait
    ends as soon as they are gone: with the CPUs busy (other tests, other work) the sweeps fall behind their
    10 s (two busy loops beside the suite: 17 of 21 items still there after 60 s)."""
    return 5 * (-(-items // TTL_SWEEP_ITEMS) + 1) * TTL_SWEEP_SECONDS + 60.0


#: Every archived item's own time falls on this UTC day (its ``date`` partition).
DAY = "2024-03-05"
DAY_MS = 1_709_596_800_000  # 2024-03-05T00:00:00Z
#: Items per archived kind (4 kinds, and a run key: one TTL sweep deletes them all).
N = 4

#: One of DynamoDB Local's TTL deletions as its GetRecords returns it (raw JSON, read in this test's
#: development): no userIdentity, a name AWS never uses, the creation time rounded down to the minute.
LOCAL_TTL_RECORD: dict[str, Any] = {
    "eventID": "b4b404ee-3209-4709-a16d-2cb531baf21a",
    "eventName": "UNKNOWN_TO_SDK_VERSION",
    "eventVersion": "1.1",
    "eventSource": "aws:dynamodb",
    "awsRegion": "ddblocal",
    "dynamodb": {
        "ApproximateCreationDateTime": 1795959600.000,
        "Keys": {"sk": {"S": "runlog#1"}, "pk": {"S": "topic#a"}},
        "OldImage": {
            "expires_at": {"N": "1795959603"},
            "sk": {"S": "runlog#1"},
            "x": {"N": "1.5"},
            "pk": {"S": "topic#a"},
        },
        "SequenceNumber": "000000000000000000004",
        "SizeBytes": 58,
        "StreamViewType": "NEW_AND_OLD_IMAGES",
    },
}
SOURCE_ARN = "arn:aws:dynamodb:us-east-1:123456789012:table/t/stream/2026-11-29T13:40:13.092"


def archive_source() -> streams.StreamEventSource:
    (source,) = [s for s in streams.stream_event_sources(read_template(TEMPLATE)) if s.function == FUNCTION]
    return source


# ------------------------------------------------------------------------------------------------------------
# Records as Lambda delivers them, and the TTL marking (no server needed)
# ------------------------------------------------------------------------------------------------------------


def _shape_of(value: Any) -> Any:
    """The keys and value types of a record, recursively (attribute maps by their type tags only)."""
    if isinstance(value, dict):
        return {key: _shape_of(inner) for key, inner in value.items()}
    return type(value).__name__


def test_a_local_ttl_deletion_is_shaped_as_lambda_delivers_one():
    aws = json.loads(FIXTURE.read_text())["Records"][0]
    shaped = streams.shape(LOCAL_TTL_RECORD, SOURCE_ARN)
    # The same fields, of the same types, as AWS's record (the attribute values are the items' own).
    assert list(shaped) == list(aws)
    assert {k: _shape_of(v) for k, v in shaped.items() if k != "dynamodb"} == {
        k: _shape_of(v) for k, v in aws.items() if k != "dynamodb"
    }
    assert {k: type(v).__name__ for k, v in shaped["dynamodb"].items()} == {
        k: type(v).__name__ for k, v in aws["dynamodb"].items()
    }
    assert shaped["eventName"] == "REMOVE" and shaped["userIdentity"] == streams.TTL_IDENTITY
    assert shaped["awsRegion"] == "us-east-1" and shaped["eventSourceARN"] == SOURCE_ARN
    assert shaped["dynamodb"]["ApproximateCreationDateTime"] == 1795959600
    # AND the filter of the template's event source mapping, which is the archive's, lets it through
    source = archive_source()
    assert source.filters == (EVENT_FILTER,)
    assert streams.RecordFilter(source.filters)(shaped)


def _removal(name: str, expires_at: int | None, created: float = 1795959600.0) -> dict[str, Any]:
    record = copy.deepcopy(LOCAL_TTL_RECORD)
    record["eventName"] = name
    record["dynamodb"]["ApproximateCreationDateTime"] = created
    if expires_at is None:
        del record["dynamodb"]["OldImage"]["expires_at"]
    else:
        record["dynamodb"]["OldImage"]["expires_at"] = {"N": str(expires_at)}
    return record


@pytest.mark.parametrize(
    ("name", "expires_at", "created", "ttl"),
    [
        # expired before the minute the record was made in: a TTL deletion, whoever named it
        ("REMOVE", 1795959600, 1795959600.0, True),
        ("REMOVE", 1795959000, 1795959600.0, True),
        (streams.LOCAL_TTL_EVENT_NAME, 1795959000, 1795959600.0, True),
        # DynamoDB Local rounds the time down to the minute: its own TTL deletion within that minute
        (streams.LOCAL_TTL_EVENT_NAME, 1795959659, 1795959600.0, True),
        # ... in milliseconds, as some versions give it
        (streams.LOCAL_TTL_EVENT_NAME, 1795959659, 1795959600000.0, True),
        # a user's DeleteItem of an item that had not expired (within the minute: unknown, so not)
        ("REMOVE", 1795959630, 1795959600.0, False),
        ("REMOVE", 1795963200, 1795959600.0, False),
        # an expiry after the minute is never a TTL deletion; nor an item without one
        (streams.LOCAL_TTL_EVENT_NAME, 1795959660, 1795959600.0, False),
        ("REMOVE", None, 1795959600.0, False),
        (streams.LOCAL_TTL_EVENT_NAME, None, 1795959600.0, False),
    ],
)
def test_only_removals_of_expired_items_are_marked_as_ttl_deletions(name, expires_at, created, ttl):
    shaped = streams.shape(_removal(name, expires_at, created), SOURCE_ARN)
    assert shaped["eventName"] == "REMOVE"
    assert shaped["dynamodb"]["ApproximateCreationDateTime"] == 1795959600
    assert ("userIdentity" in shaped) is ttl
    assert streams.RecordFilter([EVENT_FILTER])(shaped) is ttl


def test_inserts_and_modifications_are_never_marked():
    insert = copy.deepcopy(LOCAL_TTL_RECORD)
    insert["eventName"] = "INSERT"
    insert["dynamodb"]["NewImage"] = insert["dynamodb"].pop("OldImage")
    shaped = streams.shape(insert, SOURCE_ARN)
    assert shaped["eventName"] == "INSERT" and "userIdentity" not in shaped
    assert not streams.RecordFilter([EVENT_FILTER])(shaped)


# ------------------------------------------------------------------------------------------------------------
# Against DynamoDB Local
# ------------------------------------------------------------------------------------------------------------


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / "home"


@pytest.fixture
def archive_pool(state_table, home) -> Iterator[FunctionPool]:
    """The ArchiveFunction's pool, made as the local stack makes it (its template environment, the local
    archive root): invocations run the real handler in a worker process."""
    template = read_template(TEMPLATE)
    refs = template.local_refs(template.table_refs(state_table.name))
    base = {**stack.LOCAL_CREDENTIALS, **streams.local_environment(home)}
    pools = stack._pools(template, refs, state_table.name, base, home / "logs" / "functions.log", 1)
    try:
        yield pools[FUNCTION]
    finally:
        for pool in pools.values():
            pool.close()


def mapping_for(state_table, home: Path, invoke, **changes: Any) -> streams.StreamMapping:
    """The template's mapping of the ArchiveFunction (as the stack wires it), invoking ``invoke``."""
    template = read_template(TEMPLATE)
    refs = template.local_refs(template.table_refs(state_table.name))
    (mapping,) = streams.stream_mappings(
        template, refs, {FUNCTION: invoke}, dynamodb_endpoint=state_table.endpoint_url, home=home
    )
    if not changes:
        return mapping
    return streams.StreamMapping(
        dataclasses.replace(mapping.source, **changes),
        table_name=mapping.table_name,
        table_arn=mapping.table_arn,
        dynamodb_endpoint=state_table.endpoint_url,
        invoke=invoke,
        home=home,
    )


def _fixture_images() -> dict[str, dict[str, Any]]:
    """The fixture's old images, one per kind: templates of realistic items."""
    images: dict[str, dict[str, Any]] = {}
    for record in json.loads(FIXTURE.read_text())["Records"]:
        image = record["dynamodb"]["OldImage"]
        kind = image["sk"]["S"].split("#", 1)[0]
        if kind == "output" and "kind" in image:
            continue  # the override: one output item is enough
        images.setdefault(kind, image)
    return images


def archived_items(n: int, expires_at: int) -> dict[str, list[dict[str, Any]]]:
    """``n`` items of each archived kind, interleaved in time, their own times on :data:`DAY`."""
    images = _fixture_images()
    items: dict[str, list[dict[str, Any]]] = {"runs": [], "outputs": [], "audit": [], "config": []}

    def item(kind: str, i: int, sk: str, times: dict[str, int]) -> dict[str, Any]:
        image = copy.deepcopy(images[kind])
        image.update(pk={"S": f"topic#archive_{i % 3}"}, sk={"S": sk}, expires_at={"N": str(expires_at)})
        image.update({name: {"N": str(value)} for name, value in times.items()})
        return image

    for i in range(n):
        ms = DAY_MS + 3_600_000 + i * 60_000
        items["runs"].append(
            item("runlog", i, f"runlog#{ms:013d}#{i:08x}", {"started_at_ms": ms, "ended_at_ms": ms + 5_000})
        )
        items["outputs"].append(item("output", i, f"output#{i + 1:012d}", {"committed_at": ms + 1_000}))
        items["audit"].append(item("audit", i, f"audit#{ms + 2_000:013d}#{i:016x}", {"at_ms": ms + 2_000}))
        items["config"].append(
            item("config", i, f"config#{i + 1:010d}", {"pushed_at_ms": ms + 3_000, "version": i + 1})
        )
    return items


def put_all(client, table: str, items: list[dict[str, Any]]) -> None:
    for start in range(0, len(items), 25):
        chunk = items[start : start + 25]
        client.batch_write_item(RequestItems={table: [{"PutRequest": {"Item": item}} for item in chunk]})


def wait_until_deleted(client, table: str, items: list[dict[str, Any]]) -> float:
    """Wait until DynamoDB Local's TTL deleted every one of ``items``; the seconds it took."""
    keys = [{"pk": item["pk"], "sk": item["sk"]} for item in items]
    started = time.monotonic()
    deadline = started + ttl_deadline(len(keys))
    while True:
        left = 0
        for start in range(0, len(keys), 100):
            answer = client.batch_get_item(RequestItems={table: {"Keys": keys[start : start + 100]}})
            assert not answer.get("UnprocessedKeys")
            left += len(answer["Responses"][table])
        if not left:
            return time.monotonic() - started
        assert time.monotonic() < deadline, (
            f"{left} expired items still in {table} after {ttl_deadline(len(keys))} s"
        )
        time.sleep(0.2)  # polling a condition, not waiting for one: the deadline bounds it


def archived_rows(home: Path) -> list[dict[str, Any]]:
    """Every row of the archive, read back through its hive partitions (kind, date)."""
    root = streams.archive_root(home)
    if not root.exists():
        return []
    dataset = ds.dataset(str(root), format="parquet", partitioning="hive")
    rows: list[dict[str, Any]] = dataset.to_table(
        columns=["kind", "date", "key", "sequence_number"]
    ).to_pylist()
    return rows


def assert_exactly(home: Path, expected: dict[str, list[dict[str, Any]]]) -> None:
    rows = archived_rows(home)
    assert Counter(row["kind"] for row in rows) == {kind: len(items) for kind, items in expected.items()}
    for kind, items in expected.items():
        keys = sorted(row["key"] for row in rows if row["kind"] == kind)
        assert keys == sorted(item["sk"]["S"] for item in items), kind
    assert {str(row["date"]) for row in rows} == {DAY}


@pytest.fixture
def expired(state_table) -> dict[str, list[dict[str, Any]]]:
    """N expired items of each archived kind, and items that must not be archived: a run key past its TTL,
    an output whose TTL is ahead, a user's deletion of an item without a TTL and of one not yet expired.
    Returns once DynamoDB Local's TTL has deleted the expired ones."""
    client, table = state_table.client, state_table.name
    now = int(time.time())
    items = archived_items(N, expires_at=now - 3_600)
    put_all(client, table, [item for kind in items.values() for item in kind])
    run_key = {
        "pk": {"S": "topic#archive_0"},
        "sk": {"S": "run#manual-1"},
        "expires_at": {"N": str(now - 60)},
    }
    future = copy.deepcopy(items["outputs"][0]) | {
        "sk": {"S": "output#000000009999"},
        "expires_at": {"N": str(now + 86_400)},
    }
    no_ttl = copy.deepcopy(items["audit"][0]) | {"sk": {"S": f"audit#{DAY_MS:013d}#{'f' * 16}"}}
    del no_ttl["expires_at"]
    user_deleted = copy.deepcopy(future) | {"sk": {"S": "output#000000009998"}}
    put_all(client, table, [run_key, future, no_ttl, user_deleted])
    for item in (no_ttl, user_deleted):
        client.delete_item(TableName=table, Key={"pk": item["pk"], "sk": item["sk"]})
    took = wait_until_deleted(client, table, [*(i for kind in items.values() for i in kind), run_key])
    print(f"DynamoDB Local's TTL deleted {4 * N + 1} items in {took:.1f} s")
    assert client.get_item(TableName=table, Key={"pk": future["pk"], "sk": future["sk"]}).get("Item")
    return items


def test_each_ttl_deletion_is_archived_once_also_when_the_stream_is_delivered_again(
    state_table, home, archive_pool, expired
):
    calls: list[tuple[dict[str, Any], Any]] = []

    def invoke(payload: bytes) -> Invocation:
        answer = archive_pool.invoke(payload)
        calls.append((json.loads(payload), json.loads(answer.payload)))
        return answer

    mapping = mapping_for(state_table, home, invoke)
    events = load_yaml(TEMPLATE)["Resources"][FUNCTION]["Properties"]["Events"]
    assert mapping.source.batch_size == events["TableStream"]["Properties"]["BatchSize"]
    # WHEN the mapping drains the stream
    report = mapping.drain()
    # THEN each expired item of an archived kind is archived once, nothing else is, and nothing failed
    assert_exactly(home, expired)
    assert (report.delivered, report.failed_invocations, report.dead_lettered) == (4 * N, 0, 0)
    assert [answer for _event, answer in calls] == [{"batchItemFailures": []}]
    event = calls[0][0]
    assert all(
        r["userIdentity"] == streams.TTL_IDENTITY and r["eventName"] == "REMOVE" for r in event["Records"]
    )
    assert not (home / streams.DEAD_LETTERS_FILE).exists()
    # AND the positions are kept: a second drain finds nothing new
    assert mapping.drain().invocations == 0
    # WHEN the positions are forgotten and the stream is delivered again from its trim horizon
    mapping.reset()
    again = mapping.drain()
    # THEN the same records reach the function, and the archive still holds each once
    assert again.delivered == 4 * N and again.invocations == 1
    assert_exactly(home, expired)
    # AND delivered again in batches of 7 (new batch boundaries: objects cut and renamed), still once each
    mapping.reset()
    small = mapping_for(state_table, home, invoke, batch_size=7).drain()
    assert small.invocations == -(-4 * N // 7) and small.failed_invocations == 0
    assert_exactly(home, expired)


def test_a_failed_write_is_retried_through_the_partial_batch_response(
    state_table, home, archive_pool, expired
):
    mapping = mapping_for(state_table, home, archive_pool.invoke)
    delivered = [record for record in mapping.records() if mapping.matches(record)]
    assert len(delivered) == 4 * N
    # GIVEN the object of the last group of the batch cannot be written once (a folder stands in its place)
    firsts: dict[str, int] = {}
    for index, record in enumerate(delivered):
        firsts.setdefault(archived(record).kind, index)
    blocked_at = max(firsts.values())
    assert blocked_at > 0
    blocker = streams.archive_root(home) / archived(delivered[blocked_at]).object_key
    blocker.mkdir(parents=True)
    (blocker / "in-the-way").write_text("x")
    calls: list[tuple[dict[str, Any], Any]] = []

    def invoke(payload: bytes) -> Invocation:
        answer = archive_pool.invoke(payload)
        calls.append((json.loads(payload), json.loads(answer.payload)))
        shutil.rmtree(blocker, ignore_errors=True)  # the next write succeeds
        return answer

    mapping.invoke = invoke
    # WHEN the stream is drained
    report = mapping.drain()
    # THEN each item is archived once, and nothing was given up on
    assert_exactly(home, expired)
    assert (report.invocations, report.failed_invocations, report.dead_lettered) == (2, 1, 0)
    # AS the first invocation handed back the records from the blocked group on ...
    sequence = [record["dynamodb"]["SequenceNumber"] for record in delivered]
    (_first_event, first_answer), (second_event, second_answer) = calls
    assert [f["itemIdentifier"] for f in first_answer["batchItemFailures"]] == sequence[blocked_at:]
    # ... and the mapping delivered exactly those again, which the function archived
    assert [r["dynamodb"]["SequenceNumber"] for r in second_event["Records"]] == sequence[blocked_at:]
    assert second_answer == {"batchItemFailures": []}


def test_a_function_error_is_bisected_retried_then_dead_lettered(state_table, home):
    """Lambda's handling of function errors, with a stand-in function: every write to the table is delivered
    (no filter); the batch holding one poison record fails whole until the poison stands alone, which fails
    1 + MaximumRetryAttempts times and is given up on; every other record is delivered, and succeeds."""
    client, table = state_table.client, state_table.name
    for i in range(8):  # one by one: the stream's order is theirs
        client.put_item(TableName=table, Item={"pk": {"S": "topic#t"}, "sk": {"S": f"k{i:02d}"}})
    succeeded: list[str] = []
    attempts: list[list[str]] = []

    def invoke(payload: bytes) -> Invocation:
        keys = [r["dynamodb"]["Keys"]["sk"]["S"] for r in json.loads(payload)["Records"]]
        attempts.append(keys)
        if "k05" in keys:
            error = {"errorType": "ValueError", "errorMessage": "poison", "stackTrace": []}
            return Invocation(json.dumps(error).encode(), "Unhandled", "r")
        succeeded.extend(keys)
        return Invocation(b"null", None, "r")

    mapping = mapping_for(state_table, home, invoke, filters=(), maximum_retry_attempts=2)
    report = mapping.drain()
    assert sorted(succeeded) == [f"k{i:02d}" for i in range(8) if i != 5]
    # 8 -> [0-3] ok, [4-7] fails -> [4,5] fails -> [4] ok, [5] fails 1 + 2 times -> given up; [6,7] ok
    assert attempts == [
        [f"k{i:02d}" for i in range(8)],
        ["k00", "k01", "k02", "k03"],
        ["k04", "k05", "k06", "k07"],
        ["k04", "k05"],
        ["k04"],
        ["k05"],
        ["k05"],
        ["k05"],
        ["k06", "k07"],
    ]
    assert report.dead_lettered == 1
    (line,) = (home / streams.DEAD_LETTERS_FILE).read_text().splitlines()
    dead = json.loads(line)
    assert dead["requestContext"]["condition"] == "RetryAttemptsExhausted"
    info = dead["DDBStreamBatchInfo"]
    assert info["batchSize"] == 1 and info["startSequenceNumber"] == info["endSequenceNumber"]
    assert info["streamArn"].startswith(f"arn:aws:dynamodb:us-east-1:123456789012:table/{table}/stream/")
    # AND the mapping moved on: nothing is delivered again
    assert mapping.drain().invocations == 0


def test_a_lambda_service_error_is_no_attempt_and_the_batch_comes_again(state_table, home):
    client, table = state_table.client, state_table.name
    for i in range(3):
        client.put_item(TableName=table, Item={"pk": {"S": "topic#t"}, "sk": {"S": f"k{i}"}})
    answers = [
        Invocation(
            json.dumps({"errorType": "Lambda.ServiceException", "errorMessage": "stopping"}).encode(),
            "Unhandled",
            "r",
        ),
        Invocation(b"null", None, "r"),
    ]
    events: list[int] = []

    def invoke(payload: bytes) -> Invocation:
        events.append(len(json.loads(payload)["Records"]))
        return answers.pop(0)

    mapping = mapping_for(state_table, home, invoke, filters=(), maximum_retry_attempts=0)
    assert mapping.drain().interrupted
    assert not (home / streams.POSITIONS_FILE).exists()  # no batch finished: no position moved
    assert not mapping.drain().interrupted
    assert events == [3, 3]


# ------------------------------------------------------------------------------------------------------------
# The local stack's poller
# ------------------------------------------------------------------------------------------------------------


def test_the_local_stack_archives_an_expired_item_by_itself(project):
    code, out, err = finish(project["leanops"]("local", "up"))
    assert code == 0, err
    record = stack.StackRecord.read(project["env_home"] / stack.STACK_FILE)
    assert record is not None
    from leanopsctl.local.dynamodb_local import local_client

    client = local_client(record.dynamodb_endpoint)
    (item,) = archived_items(1, expires_at=int(time.time()) - 60)["runs"]
    client.put_item(TableName=record.table, Item=item)
    # WHEN DynamoDB Local's TTL deletes it, THEN the stack's poller archives it, with nobody draining
    home = project["env_home"]
    deadline = time.monotonic() + ttl_deadline(1) + 120  # + the archive function's first INIT
    while not archived_rows(home):
        assert time.monotonic() < deadline, (home / "logs" / stack.STACK_LOG).read_text()[-3000:]
        time.sleep(0.2)
    rows = archived_rows(home)
    assert [(r["kind"], r["key"]) for r in rows] == [("runs", item["sk"]["S"])]
    positions = json.loads((home / streams.POSITIONS_FILE).read_text())
    assert positions["table"] == record.table
    code, out, _ = finish(project["leanops"]("local", "down"))
    assert code == 0 and out.startswith("local stack stopped")
