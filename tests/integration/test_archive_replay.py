"""`leanops archive replay` (leanopsctl.archive_replay): the batches the archive's event source mapping gave
up on, named by Lambda's on-failure record, archived again from the stream, exactly once.

Locally: the local mapping (leanopsctl.local.streams) gives up on a batch of DynamoDB Local's TTL deletions
and writes the on-failure record AWS documents; the replay reads the range back from the stream and
archives it. With ``--stack``: the queue's message, the stream and the archive in moto."""

from __future__ import annotations

import copy
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pyarrow.parquet as pq
import pytest
import yaml
from botocore.exceptions import ClientError
from click.testing import CliRunner
from leanopsctl import archive_replay
from leanopsctl.archive_replay import BatchRange, DeadLetterFile, local_reader, replay
from leanopsctl.cli import main
from leanopsctl.local import streams
from leanopsctl.local.pool import Invocation
from leanopsctl.local.stack import StackRecord
from leanopsctl.target import Target
from moto import mock_aws

from leanops.config import load_topics
from leanops.constants import ENV_HOME
from leanops.data.storage import LocalStore
from tests.integration import test_archive_local as local
from tests.integration.test_archive_local import (
    TEMPLATE,
    N,
    archived_items,
    archived_rows,
    assert_exactly,
    mapping_for,
)

# Waits on DynamoDB Local's TTL sweeps, which fall behind on busy CPUs (ttl_deadline): room for it.
pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

#: The local archive tests' fixtures: a home, the archive function's pool, N expired items of each kind.
home, archive_pool, expired = local.home, local.archive_pool, local.expired
#: Its own DynamoDB Local, as the local archive tests have (TTL sweeps that serve these tables alone).
dynamodb_local = local.dynamodb_local

#: The invocation record AWS documents for a DynamoDB stream's on-failure destination (Lambda developer
#: guide, "Retaining discarded records for a DynamoDB event source"): the shape both ends rely on.
DOCUMENTED_RECORD: dict[str, Any] = {
    "requestContext": {
        "requestId": "316aa6d0-8154-xmpl-9af7-85d5f4a6bc81",
        "functionArn": "arn:aws:lambda:us-east-2:123456789012:function:myfunction",
        "condition": "RetryAttemptsExhausted",
        "approximateInvokeCount": 1,
    },
    "responseContext": {"statusCode": 200, "executedVersion": "$LATEST", "functionError": "Unhandled"},
    "version": "1.0",
    "timestamp": "2019-11-14T00:13:49.717Z",
    "DDBStreamBatchInfo": {
        "shardId": "shardId-00000001573689847184-864758bb",
        "startSequenceNumber": "800000000003126276362",
        "endSequenceNumber": "800000000003126276362",
        "approximateArrivalOfFirstRecord": "2019-11-14T00:13:19Z",
        "approximateArrivalOfLastRecord": "2019-11-14T00:13:19Z",
        "batchSize": 1,
        "streamArn": "arn:aws:dynamodb:us-east-2:123456789012:table/mytable/stream/2019-11-14T00:04:06.388",
    },
}
FUNCTION_ERROR = Invocation(
    json.dumps({"errorType": "TimeoutError", "errorMessage": "timed out", "stackTrace": []}).encode(),
    "Unhandled",
    "r",
)


def _shape_of(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _shape_of(inner) for key, inner in value.items()}
    return type(value).__name__


def dead_letters(home: Path) -> list[dict[str, Any]]:
    path = home / streams.DEAD_LETTERS_FILE
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def archive_files(home: Path) -> dict[str, bytes]:
    root = streams.archive_root(home)
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*.parquet"))}


# ------------------------------------------------------------------------------------------------------------
# Locally: DynamoDB Local's stream, the local mapping's on-failure records
# ------------------------------------------------------------------------------------------------------------


def test_a_batch_given_up_after_its_writes_is_replayed_from_the_stream_exactly_once(
    state_table, home, archive_pool, expired
):
    """The adversarial order: the real function archives the batch, then fails (a timeout after its writes),
    every attempt; the mapping gives the batch up. The replay archives it again: each row still once."""
    delivered: list[list[dict[str, Any]]] = []

    def writes_then_fails(payload: bytes) -> Invocation:
        delivered.append(json.loads(payload)["Records"])
        archive_pool.invoke(payload)  # the real handler, in a worker, writes the batch's objects
        return FUNCTION_ERROR

    mapping = mapping_for(
        state_table, home, writes_then_fails, maximum_retry_attempts=1, bisect_on_error=False
    )
    report = mapping.drain()
    assert (report.delivered, report.invocations, report.dead_lettered) == (4 * N, 2, 4 * N)
    # THEN the on-failure record is the documented one, naming the batch's shard and range
    (record,) = dead_letters(home)
    assert _shape_of(record) == _shape_of(DOCUMENTED_RECORD)
    assert list(record) == list(DOCUMENTED_RECORD)
    assert list(record["DDBStreamBatchInfo"]) == list(DOCUMENTED_RECORD["DDBStreamBatchInfo"])
    info, batch = record["DDBStreamBatchInfo"], delivered[-1]
    assert record["requestContext"]["condition"] == "RetryAttemptsExhausted"
    assert record["requestContext"]["approximateInvokeCount"] == 2
    assert info["batchSize"] == 4 * N
    assert info["startSequenceNumber"] == batch[0]["dynamodb"]["SequenceNumber"]
    assert info["endSequenceNumber"] == batch[-1]["dynamodb"]["SequenceNumber"]
    assert info["streamArn"] == batch[0]["eventSourceARN"]
    assert_exactly(home, expired)  # archived in part (here: whole) before it failed
    before = archive_files(home)
    # WHEN the range is replayed
    lines: list[str] = []
    done = replay(
        DeadLetterFile(home),
        local_reader(mapping),
        LocalStore(streams.archive_root(home)),
        progress=lines.append,
    )
    # THEN every row is there once, under the same object names, and the record is gone
    assert (done.ranges_replayed, done.records_archived, done.left) == (1, 4 * N, [])
    assert_exactly(home, expired)
    assert set(archive_files(home)) == set(before)
    assert (home / streams.DEAD_LETTERS_FILE).read_text() == ""
    assert lines[0].startswith(f"replaying shard {BatchRange.parse(json.dumps(record)).shard_id}")
    # AND a record delivered twice (or a replay run again before its delete) adds nothing
    (home / streams.DEAD_LETTERS_FILE).write_text(json.dumps(record) + "\n")
    again = replay(DeadLetterFile(home), local_reader(mapping), LocalStore(streams.archive_root(home)))
    assert (again.ranges_replayed, again.records_archived) == (1, 4 * N)
    assert_exactly(home, expired)
    assert set(archive_files(home)) == set(before)
    # AND with nothing left to replay, a replay does nothing
    idle = replay(DeadLetterFile(home), local_reader(mapping), LocalStore(streams.archive_root(home)))
    assert (idle.ranges_replayed, idle.records_archived, idle.left) == (0, 0, [])


@pytest.fixture
def local_cli(state_table, home, monkeypatch, tmp_path) -> Iterator[Any]:
    """`leanops ...` in this process, its local target the test's table on the session's DynamoDB Local and
    its home ``home`` (no local stack: the replay reads DynamoDB Local's stream directly)."""
    monkeypatch.setenv(ENV_HOME, str(home))
    topics = tmp_path / "topics.yaml"
    topics.write_text(
        yaml.safe_dump(
            {
                "topics": {
                    "t": {
                        "source": {"type": "files", "uri": "./in"},
                        "sink": {"type": "files", "uri": "./out"},
                    }
                }
            }
        )
    )
    record = StackRecord(
        0, "http://127.0.0.1:9", state_table.endpoint_url, state_table.name, str(topics), str(TEMPLATE), ""
    )
    target = Target(
        description="the test's local stack",
        session=boto3.session.Session(region_name="us-east-1"),
        table=state_table.name,
        state_machine_arn="arn:aws:states:us-east-1:123456789012:stateMachine:TopicRun",
        topics=load_topics(str(topics)),
        local=record,
    )
    monkeypatch.setattr("leanopsctl.cli.common.local_target", lambda config: target)
    monkeypatch.setattr("leanopsctl.cli.common._route_local_clients", lambda target: None)

    def leanops(*args: str) -> Any:
        return CliRunner().invoke(main, [*args, "--config", str(topics)])

    yield leanops


def test_leanops_archive_replay_replays_each_bisected_range_and_removes_its_line(
    state_table, home, expired, local_cli
):
    """The template's mapping (bisect on error) and a function that always fails before writing: every
    record ends alone in a range of its own. `leanops archive replay` archives them all, once."""
    mapping = mapping_for(state_table, home, lambda payload: FUNCTION_ERROR, maximum_retry_attempts=0)
    assert mapping.source.bisect_on_error
    assert mapping.drain().dead_lettered == 4 * N
    records = dead_letters(home)
    assert len(records) == 4 * N and {r["DDBStreamBatchInfo"]["batchSize"] for r in records} == {1}
    assert archived_rows(home) == []
    # WHEN
    result = local_cli("archive", "replay", "--json")
    # THEN
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["ranges_replayed"] == 4 * N and summary["records_archived"] == 4 * N
    assert summary["ranges_left"] == 0 and summary["left"] == []
    assert summary["source"] == str(home / streams.DEAD_LETTERS_FILE)
    assert summary["archive"] == str(streams.archive_root(home))
    assert result.stderr.count("replaying shard ") == 4 * N
    assert_exactly(home, expired)
    assert dead_letters(home) == []
    before = archive_files(home)
    # AND replayed again: nothing left, nothing added
    again = local_cli("archive", "replay")
    assert again.exit_code == 0, again.output
    assert again.stdout.startswith("replayed 0 range(s)") and "0 range(s) left" in again.stdout
    assert archive_files(home) == before


def test_ranges_that_cannot_be_replayed_are_reported_kept_and_exit_1(state_table, home, local_cli):
    """A range whose shard is gone (trimmed after 24 hours), one whose stream is gone, and a line that is no
    on-failure record: one line each on stderr, every line kept, exit 1."""
    client, table = state_table.client, state_table.name
    (item,) = archived_items(1, expires_at=1)["runs"]
    client.put_item(TableName=table, Item=item)
    client.delete_item(TableName=table, Key={"pk": item["pk"], "sk": item["sk"]})
    mapping = mapping_for(state_table, home, lambda payload: FUNCTION_ERROR)
    (removal,) = [r for r in mapping.records() if r["eventName"] == "REMOVE"]
    sequence = removal["dynamodb"]["SequenceNumber"]

    def line(**info: str) -> str:
        record = copy.deepcopy(DOCUMENTED_RECORD)
        record["DDBStreamBatchInfo"].update(
            startSequenceNumber=sequence, endSequenceNumber=sequence, streamArn=removal["eventSourceARN"]
        )
        record["DDBStreamBatchInfo"].update(info)
        return json.dumps(record)

    shard_gone = line(shardId="shardId-00000001573689847184-00000000")
    stream_gone = line(streamArn=removal["eventSourceARN"].rsplit("/", 1)[0] + "/2019-11-14T00:04:06.388")
    lines = [shard_gone, stream_gone, "not json"]
    home.mkdir(parents=True, exist_ok=True)
    (home / streams.DEAD_LETTERS_FILE).write_text("".join(text + "\n" for text in lines))
    result = local_cli("archive", "replay", "--json")
    assert result.exit_code == 1, result.output
    summary = json.loads(result.stdout)
    assert (summary["ranges_replayed"], summary["records_archived"], summary["ranges_left"]) == (0, 0, 3)
    refused = [text for text in result.stderr.splitlines() if text.startswith("leanops: not replayed: ")]
    assert len(refused) == 3
    assert "shardId-00000001573689847184-00000000" in refused[0] and "cannot be replayed" in refused[0]
    assert "has no stream" in refused[1] and "cannot be replayed" in refused[1]
    assert ":3: not an on-failure record" in refused[2]
    assert (home / streams.DEAD_LETTERS_FILE).read_text().splitlines() == lines
    assert archived_rows(home) == []


# ------------------------------------------------------------------------------------------------------------
# --stack: the queue, the stream and the archive in moto
# ------------------------------------------------------------------------------------------------------------

REGION = "us-east-1"
BUCKET = "archive-bucket"
ROOT = f"s3://{BUCKET}/archive/"


@pytest.fixture
def moto_stack(monkeypatch, tmp_path) -> Iterator[dict[str, Any]]:
    """A state table with a stream holding three TTL deletions of archived items, the dead-letter queue with
    the on-failure record naming them, and `leanops ... --stack s` aimed at them. moto's stream carries no
    ``userIdentity``: its removals get the one DynamoDB Streams' GetRecords gives a TTL deletion."""
    from moto.dynamodb.models import table as moto_table

    original = moto_table.StreamRecord.__init__

    def ttl_removal(self: Any, table: Any, stream_type: str, event_name: str, *args: Any) -> None:
        original(self, table, stream_type, event_name, *args)
        if event_name == "REMOVE":
            self.record["userIdentity"] = {"PrincipalId": "dynamodb.amazonaws.com", "Type": "Service"}

    monkeypatch.setattr(moto_table.StreamRecord, "__init__", ttl_removal)
    monkeypatch.setattr(archive_replay, "WAIT_SECONDS", 0)
    # botocore sends DynamoDB Streams calls naming a stream to <account>.streams-ddb...; moto 5.2 answers
    # them only at the regional endpoint.
    monkeypatch.setenv("AWS_ACCOUNT_ID_ENDPOINT_MODE", "disabled")
    with mock_aws():
        dynamodb = boto3.client("dynamodb", region_name=REGION)
        table = dynamodb.create_table(
            TableName="state",
            KeySchema=[
                {"AttributeName": "pk", "KeyType": "HASH"},
                {"AttributeName": "sk", "KeyType": "RANGE"},
            ],
            AttributeDefinitions=[
                {"AttributeName": "pk", "AttributeType": "S"},
                {"AttributeName": "sk", "AttributeType": "S"},
            ],
            BillingMode="PAY_PER_REQUEST",
            StreamSpecification={"StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"},
        )["TableDescription"]
        items = archived_items(1, expires_at=1)
        expected = [items["runs"][0], items["outputs"][0], items["audit"][0]]
        for item in expected:
            dynamodb.put_item(TableName="state", Item=item)
        for item in expected:
            dynamodb.delete_item(TableName="state", Key={"pk": item["pk"], "sk": item["sk"]})
        stream_arn = table["LatestStreamArn"]
        reader = boto3.client("dynamodbstreams", region_name=REGION)
        (shard,) = reader.describe_stream(StreamArn=stream_arn)["StreamDescription"]["Shards"]
        iterator = reader.get_shard_iterator(
            StreamArn=stream_arn, ShardId=shard["ShardId"], ShardIteratorType="TRIM_HORIZON"
        )["ShardIterator"]
        removals = [
            r for r in reader.get_records(ShardIterator=iterator)["Records"] if r["eventName"] == "REMOVE"
        ]
        assert len(removals) == 3
        record = copy.deepcopy(DOCUMENTED_RECORD)
        record["DDBStreamBatchInfo"].update(
            shardId=shard["ShardId"],
            startSequenceNumber=removals[0]["dynamodb"]["SequenceNumber"],
            endSequenceNumber=removals[-1]["dynamodb"]["SequenceNumber"],
            batchSize=3,
            streamArn=stream_arn,
        )
        sqs = boto3.client("sqs", region_name=REGION)
        url = sqs.create_queue(QueueName="ArchiveDeadLetterQueue")["QueueUrl"]
        sqs.send_message(QueueUrl=url, MessageBody=json.dumps(record))
        topics = tmp_path / "topics.yaml"
        topics.write_text(
            yaml.safe_dump(
                {
                    "topics": {
                        "t": {
                            "source": {"type": "files", "uri": "./in"},
                            "sink": {"type": "files", "uri": "./out"},
                        }
                    }
                }
            )
        )
        outputs = {"ArchiveRoot": ROOT, "ArchiveDeadLetterQueueUrl": url, "StateTableName": "state"}

        def stack_target(config: str, stack: str, **_: Any) -> Target:
            return Target(
                description=f"stack {stack} ({REGION})",
                session=boto3.session.Session(region_name=REGION),
                table="state",
                state_machine_arn=f"arn:aws:states:{REGION}:123456789012:stateMachine:TopicRun",
                topics=load_topics(config),
                outputs=outputs,
            )

        monkeypatch.setattr("leanopsctl.cli.common.stack_target", stack_target)

        def leanops(*args: str) -> Any:
            return CliRunner().invoke(main, [*args, "--stack", "s", "--config", str(topics)])

        yield {"leanops": leanops, "sqs": sqs, "url": url, "expected": expected, "record": record}


def queued(sqs: Any, url: str) -> list[str]:
    """The bodies in the queue (visible ones: received, then made visible again)."""
    answer = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, VisibilityTimeout=0)
    return [message["Body"] for message in answer.get("Messages", [])]


def s3_rows() -> list[dict[str, Any]]:
    s3 = boto3.client("s3", region_name=REGION)
    rows = []
    for item in s3.list_objects_v2(Bucket=BUCKET).get("Contents", []):
        data = s3.get_object(Bucket=BUCKET, Key=item["Key"])["Body"].read()
        kind = item["Key"].split("/")[1].removeprefix("kind=")
        rows += [{"kind": kind, **row} for row in pq.read_table(io.BytesIO(data)).to_pylist()]
    return rows


def test_stack_replay_deletes_the_message_only_once_its_range_is_archived(moto_stack, monkeypatch):
    leanops, sqs, url = moto_stack["leanops"], moto_stack["sqs"], moto_stack["url"]
    body = json.dumps(moto_stack["record"])
    # GIVEN the archive cannot be written (its bucket is missing): the range is not archived, the message kept
    failed = leanops("archive", "replay", "--json")
    assert failed.exit_code == 1, failed.output
    assert json.loads(failed.stdout)["ranges_left"] == 1
    (refused,) = [text for text in failed.stderr.splitlines() if text.startswith("leanops: not replayed: ")]
    assert "not archived" in refused and moto_stack["record"]["DDBStreamBatchInfo"]["shardId"] in refused
    assert queued(sqs, url) == [body]  # kept, and visible again at once
    # WHEN the bucket exists, the message is deleted only after every object of its range is written
    boto3.client("s3", region_name=REGION).create_bucket(Bucket=BUCKET)
    deletes: list[int] = []
    delete = archive_replay.DeadLetterQueue.done

    def done(self: Any, letter: Any) -> None:
        deletes.append(len(s3_rows()))
        delete(self, letter)

    monkeypatch.setattr(archive_replay.DeadLetterQueue, "done", done)
    result = leanops("archive", "replay", "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert (summary["ranges_replayed"], summary["records_archived"], summary["left"]) == (1, 3, [])
    assert summary["archive"] == ROOT and summary["source"] == url
    assert deletes == [3]
    assert queued(sqs, url) == []
    rows = s3_rows()
    assert sorted((r["kind"], r["key"]) for r in rows) == sorted(
        (kind, item["sk"]["S"])
        for kind, item in zip(("runs", "outputs", "audit"), moto_stack["expected"], strict=True)
    )
    # AND again: nothing left, nothing added
    again = leanops("archive", "replay", "--json")
    assert again.exit_code == 0, again.output
    assert json.loads(again.stdout)["ranges_replayed"] == 0
    assert len(s3_rows()) == 3


def test_stack_replay_of_a_trimmed_range_keeps_the_message(moto_stack, monkeypatch):
    """Records older than the stream's 24 hours: GetShardIterator answers TrimmedDataAccessException."""
    leanops, sqs, url = moto_stack["leanops"], moto_stack["sqs"], moto_stack["url"]
    boto3.client("s3", region_name=REGION).create_bucket(Bucket=BUCKET)

    def trimmed(batch: BatchRange) -> list[dict[str, Any]]:
        error = {"Error": {"Code": "TrimmedDataAccessException", "Message": "trimmed"}}

        class Client:
            def get_shard_iterator(self, **_: Any) -> Any:
                raise ClientError(error, "GetShardIterator")

        return archive_replay.read_range(Client(), batch.stream_arn, batch, lambda raw: dict(raw))

    monkeypatch.setattr("leanopsctl.cli.archive.stack_reader", lambda client: trimmed)
    result = leanops("archive", "replay")
    assert result.exit_code == 1, result.output
    (refused,) = [text for text in result.stderr.splitlines() if text.startswith("leanops: not replayed: ")]
    assert "trimmed from the stream" in refused and "cannot be replayed" in refused
    assert "0 range(s) from" in result.stdout and "1 range(s) left" in result.stdout
    assert queued(sqs, url) == [json.dumps(moto_stack["record"])]
    assert s3_rows() == []
