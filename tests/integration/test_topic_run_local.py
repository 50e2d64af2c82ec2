"""The real topic-run ASL and handlers, executed by the local runtime against DynamoDB Local."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest
import yaml
from leanopsctl.local.runtime import LocalRuntime

from examples.vehicle_telemetry.generate import generate
from leanops.constants import ENV_CONFIG
from leanops.data.files import FilesSink
from leanops.errors import StoreThrottled
from leanops.protocol import Acquired, Protocol, TopicRef
from leanops.protocol.dynamodb import DynamoDBStore

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]
MACHINE = "TopicRunStateMachine"


@pytest.fixture
def pipeline(tmp_path, state_table):
    """A topic over generated data, and a runtime of the project's template.yaml on the test table."""

    def make(records=3_000, per_object=1_000, batch_size=1_000, processor=None, timeouts=None, **settings):
        data = tmp_path / "data"
        generate(data, records, per_object, malformed=0.0)
        topic = {
            "source": {"type": "files", "uri": str(data)},
            "sink": {"type": "files", "uri": str(tmp_path / "out")},
            "batch_size": batch_size,
            "lease_seconds": 60,
            **settings,
        }
        if processor:
            topic["processor"] = processor
        config = tmp_path / "topics.yaml"
        config.write_text(yaml.safe_dump({"topics": {"vt": topic}}))
        return LocalRuntime(
            REPO / "template.yaml",
            table_name=state_table.name,
            log_to=tmp_path / "functions.log",
            environment={ENV_CONFIG: str(config)},
            retry_delay_scale=0.01,
            timeouts=timeouts,
            enforce_timeouts=False,
        )

    return make


def run(runtime, **input_):
    return runtime.run(MACHINE, {"topic": "vt", **input_}, f"t-{uuid.uuid4().hex[:12]}", timeout=120)


def committed_events(tmp_path) -> list[str]:
    return sorted(
        json.loads(line)["event_id"]
        for path in (tmp_path / "out").glob("vt.*.jsonl")
        for line in path.read_text().splitlines()
    )


def test_three_batches_of_backlog_then_up_to_date(pipeline, tmp_path):
    with pipeline(records=3_000) as runtime:
        first = run(runtime)
        second = run(runtime)
    assert first.succeeded, (first.error, first.cause)
    assert (first.output["outcome"], first.output["batches"], first.output["records"]) == (
        "processed",
        3,
        3_000,
    )
    assert first.output["checkpoint"]["position"] == "date=2025-11-25/hour=00/part-00002.jsonl#1000"
    assert committed_events(tmp_path) == [f"evt-{i:09d}" for i in range(3_000)]
    # Acquire, Acquired?, then (ProcessBatch, AdvanceCheckpoint, MoreBacklog?) x 3, Done
    assert first.states_entered == 2 + 3 * 3 + 1
    assert (second.output["outcome"], second.output["batches"]) == ("up_to_date", 0)
    assert second.states_entered == 3  # Acquire saw nothing new and released: Acquire, Acquired?, Done


def test_a_locked_topic_is_skipped(pipeline, state_table):
    protocol = Protocol(DynamoDBStore(state_table.name, state_table.client))
    assert isinstance(protocol.acquire(TopicRef("vt"), "another-execution", 60), Acquired)
    with pipeline() as runtime:
        result = run(runtime)
    assert result.succeeded and result.output["outcome"] == "skipped_locked"
    assert result.states_entered == 3  # Acquire, Acquired?, Done
    assert protocol.status(TopicRef("vt")).lock.owner == "another-execution"


def test_a_duplicate_scheduled_start_does_nothing(pipeline):
    with pipeline() as runtime:
        first = run(runtime, scheduled_time="2026-11-25T10:00:00Z")
        duplicate = run(runtime, scheduled_time="2026-11-25T10:00:00Z")
    assert first.output["outcome"] == "processed" and duplicate.output["outcome"] == "duplicate"


def test_a_processor_error_releases_the_lock_and_fails_with_its_type(pipeline, state_table, tmp_path):
    with pipeline(processor="tests.support.processors:fail") as runtime:
        result = run(runtime)
    assert result.status.value == "FAILED"
    assert result.error == "SensorFault"
    assert "batch origin: sensor calibration missing" in result.cause  # the first batch starts at the origin
    status = Protocol(DynamoDBStore(state_table.name, state_table.client)).status(TopicRef("vt"))
    assert status.lock_status.value == "free" and status.checkpoint.seq == 0
    # AND the failure is on record for status (error, and a streak of one), and nothing was written
    assert (status.lock.last_outcome, status.lock.last_error, status.lock.failures) == (
        "failed",
        "SensorFault",
        1,
    )
    assert list(FilesSink(str(tmp_path / "out"), "vt").attempts()) == []


def test_a_transient_error_is_retried_then_succeeds(pipeline, tmp_path):
    with pipeline(records=1_000) as runtime:
        runtime.inject("ProcessFunction", StoreThrottled("DynamoDB is busy"), times=2)
        result = run(runtime)
        attempts = runtime.invocations("ProcessFunction")
    assert result.succeeded and result.output["records"] == 1_000
    assert attempts == 3  # two throttled attempts, then the one that worked
    assert committed_events(tmp_path) == [f"evt-{i:09d}" for i in range(1_000)]


def test_the_lambda_deadline_cuts_batches_and_the_run_goes_on(pipeline, tmp_path):
    # GIVEN a process task with a 0.25 s budget, and a batch far larger than it can read in that time
    records = 120_000
    with pipeline(
        records=records, per_object=60_000, batch_size=records, timeouts={"ProcessFunction": 0.25}
    ) as runtime:
        result = run(runtime)
    # THEN it commits what it read before the deadline, batch after batch, and loses nothing
    assert result.succeeded, (result.error, result.cause)
    assert result.output["batches"] > 1 and result.output["records"] == records
    assert committed_events(tmp_path) == [f"evt-{i:09d}" for i in range(records)]


def test_a_dynamodb_source_topic_runs_end_to_end(tmp_path, state_table, ddb_client_factory):
    # GIVEN a table of events by device, sort key a number that crosses 9 -> 10 digits, and another device
    client, table = ddb_client_factory(), f"events-{uuid.uuid4().hex[:8]}"
    client.create_table(
        TableName=table,
        KeySchema=[
            {"AttributeName": "device", "KeyType": "HASH"},
            {"AttributeName": "ts", "KeyType": "RANGE"},
        ],
        AttributeDefinitions=[
            {"AttributeName": "device", "AttributeType": "S"},
            {"AttributeName": "ts", "AttributeType": "N"},
        ],
        BillingMode="PAY_PER_REQUEST",
    )
    stamps = [999_999_000 + 7 * i for i in range(500)]  # 999,999,000 .. 1,000,002,493
    for device in ("d-1", "d-2"):
        for ts in stamps:
            client.put_item(
                TableName=table, Item={"device": {"S": device}, "ts": {"N": str(ts)}, "v": {"N": "1.5"}}
            )
    topic = {
        "source": {
            "type": "dynamodb",
            "table": table,
            "partition_key": "device",
            "partition_value": "d-1",
            "sort_key": "ts",
        },
        "sink": {"type": "files", "uri": str(tmp_path / "out")},
        "batch_size": 120,
        "timestamp_field": "ts",
    }
    config = tmp_path / "topics.yaml"
    config.write_text(yaml.safe_dump({"topics": {"vt": topic}}))
    runtime = LocalRuntime(
        REPO / "template.yaml",
        table_name=state_table.name,
        log_to=tmp_path / "functions.log",
        environment={ENV_CONFIG: str(config)},
        enforce_timeouts=False,
    )
    # WHEN the topic runs, then new events arrive and it runs again
    with runtime:
        first = run(runtime)
        for ts in (1_000_002_494, 1_000_002_500):
            client.put_item(
                TableName=table, Item={"device": {"S": "d-1"}, "ts": {"N": str(ts)}, "v": {"N": "2"}}
            )
        second = run(runtime)
        third = run(runtime)
    # THEN every event of d-1 is committed exactly once, in order, and nothing of d-2
    assert (first.output["records"], second.output["records"], third.output["outcome"]) == (
        500,
        2,
        "up_to_date",
    )
    protocol = Protocol(DynamoDBStore(state_table.name, ddb_client_factory()))
    outputs = [o.data for o in protocol.outputs(TopicRef("vt"))]
    committed = [
        json.loads(line)
        for o in outputs
        for line in (tmp_path / "out" / o["object"]).read_text().splitlines()
    ]
    assert [r["ts"] for r in committed] == [*stamps, 1_000_002_494, 1_000_002_500]
    assert {r["device"] for r in committed} == {"d-1"} and committed[0]["v"] == 1.5
    checkpoint = protocol.read_checkpoint(TopicRef("vt"))
    assert (checkpoint.position, checkpoint.last_ingested_ts) == ("N:1000002500", 1_000_002_500)
