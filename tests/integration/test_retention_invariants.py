"""What output records expiring (decision 0014) must not break, on DynamoDB Local: nothing deletes committed
output, no backward move goes unchecked, no look-back silently finds nothing, and every run keeps its record.

DynamoDB Local cannot be made to jump a week: TTL is applied as DynamoDB applies it, by deleting every item
whose ``expires_at`` lies before the fake clock's now (found by an adversarial review, each test fails on
the code before its fix)."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest

from leanops import safety_net, sink_gc, tasks
from leanops.config import parse_topics
from leanops.data.files import FilesSink, FilesSource, new_attempt
from leanops.data.late import LookbackExpired, late_objects
from leanops.errors import InvalidInput, LeanopsError
from leanops.protocol import Protocol, Retention, TopicRef
from leanops.protocol.dynamodb import DynamoDBStore
from tests.support import worlds
from tests.support.clock import FakeClock

pytestmark = pytest.mark.integration
T = TopicRef("t")
DAY_MS = 86_400_000
WEEK_AND_A_DAY_MS = 8 * DAY_MS  # past the default OutputRecordDays (7)


def ttl_sweep(state_table: Any, now_ms: int) -> list[str]:
    """DynamoDB's TTL: delete every item whose ``expires_at`` has passed; the deleted sort keys."""
    gone = []
    for page in state_table.client.get_paginator("scan").paginate(TableName=state_table.name):
        for item in page["Items"]:
            if "expires_at" in item and int(item["expires_at"]["N"]) < now_ms // 1000:
                key = {"pk": item["pk"], "sk": item["sk"]}
                state_table.client.delete_item(TableName=state_table.name, Key=key)
                gone.append(item["sk"]["S"])
    return gone


@pytest.fixture
def world(state_table: Any, tmp_path: Path) -> dict[str, Any]:
    source = tmp_path / "in"
    source.mkdir()
    for part in range(3):
        lines = "".join(json.dumps({"i": part * 5 + i}) + "\n" for i in range(5))
        (source / f"part-{part}.jsonl").write_text(lines)
    topic = {
        "source": {"type": "files", "uri": str(source)},
        "sink": {"type": "files", "uri": str(tmp_path / "out")},
        "batch_size": 5,
        "lease_seconds": 30,
        "isolation": "none",
    }
    clock = FakeClock()
    return {
        "topics": parse_topics({"topics": {"t": topic}}, tmp_path / "topics.yaml"),
        "protocol": Protocol(DynamoDBStore(state_table.name, state_table.client, Retention()), clock=clock),
        "clock": clock,
        "table": state_table,
        "source": source,
        "sink": FilesSink(str(tmp_path / "out"), "t"),
        "stem_of": FilesSource(str(source)).stem,
    }


def expire(world: dict[str, Any]) -> list[str]:
    world["clock"].advance(WEEK_AND_A_DAY_MS)
    return ttl_sweep(world["table"], world["clock"]())


def sink_objects(world: dict[str, Any]) -> set[str]:
    return {name for name, _ in world["sink"].attempts()}


def test_a_commit_retried_after_its_record_expired_keeps_its_committed_object(world):
    state = worlds.start(world, "exec-1")
    state["batch"] = tasks.process(
        tasks.RunState.from_json(state), world["protocol"], world["topics"], lambda: 60_000
    ).to_json()
    tasks.advance(tasks.RunState.from_json(state), state["batch"], world["protocol"], world["topics"])
    committed = {r.data["object"] for r in world["protocol"].outputs(T)}
    assert committed <= sink_objects(world)
    # WHEN the same advance is retried after the lock's and the output record's TTLs passed
    assert "output#000000000001" in expire(world)
    with pytest.raises(LeanopsError):  # it cannot tell it landed: the run fails...
        tasks.advance(tasks.RunState.from_json(state), state["batch"], world["protocol"], world["topics"])
    # THEN ...but nothing committed is deleted (settlement: unsettled, kept)
    assert committed <= sink_objects(world)


def operator_set_back(world: dict[str, Any], position: str) -> None:
    protocol = world["protocol"]
    lease = protocol.acquire(T, f"operator-{uuid.uuid4().hex}", 30).lease
    try:
        protocol.set_checkpoint(lease, position=position, actor="alice", reason="reprocess")
    finally:
        protocol.release(lease)


def test_no_backward_move_over_commits_whose_records_expired(world):
    assert worlds.run(world, "exec-1")["outcome"] == "processed"
    with pytest.raises(InvalidInput, match="committed batch seq"):
        operator_set_back(world, "part-0.jsonl#5")
    expire(world)
    with pytest.raises(InvalidInput, match="no longer holds the output records of its first commits"):
        operator_set_back(world, "part-0.jsonl#5")
    # a rewind to a commit that expired says what to do, and changes nothing
    lease = world["protocol"].acquire(T, "operator-x", 30).lease
    with pytest.raises(InvalidInput, match="is not in the table"):
        world["protocol"].rewind_checkpoint(lease, to_seq=1, actor="alice", reason="again")
    # to the beginning it goes, recording the whole range it supersedes for the archive's readers
    rewound = world["protocol"].rewind_checkpoint(lease, to_seq=0, actor="alice", reason="again")
    record = world["protocol"].store.read_output(T, rewound.after.seq)
    assert record is not None
    assert (record.data["superseded_from"], record.data["superseded_to"]) == (1, rewound.before.seq)


def test_an_idle_topics_look_back_says_it_cannot_look_once_its_records_expired(world):
    protocol = world["protocol"]
    assert worlds.run(world, "exec-1")["outcome"] == "processed"
    (world["source"] / "part-0b.jsonl").write_text('{"i": 99}\n')  # lands late: sorts before the checkpoint
    config, position = world["topics"].topic("t"), protocol.read_checkpoint(T).position
    assert late_objects(protocol, T, config, position) == ["part-0b.jsonl"]
    expire(world)  # idle for a week: no commit, the records expire
    with pytest.raises(LookbackExpired, match="OutputRecordDays"):
        late_objects(protocol, T, config, position)
    # a run still goes on (its acquire reports it: metric and warning, not an error)
    assert worlds.run(world, "exec-2")["outcome"] in ("up_to_date", "processed")


def test_gc_keeps_an_attempt_at_a_start_whose_record_expired(world):
    assert worlds.run(world, "exec-1")["outcome"] == "processed"
    orphan = world["sink"].object_name("origin", new_attempt(9, "arn:dead"))
    world["sink"].write(orphan, [{"i": -1}])
    expire(world)
    done = sink_gc.collect_topic(world["protocol"], T, world["sink"], world["stem_of"])
    # committed objects of expired records look the same: never deleted on that ground
    assert orphan not in done.deleted and {"object": orphan, "reason": sink_gc.UNKNOWN_STEM} in done.kept
    assert not done.deleted


def test_a_run_whose_release_finds_the_lock_taken_still_leaves_its_record(tmp_path):
    world = worlds.three_part_topic(tmp_path)
    state = worlds.start(world, "exec-1", started="2026-11-29T10:00:00.000Z")
    world["protocol"].force_unlock(T, actor="alice", reason="stuck?")
    tasks.advance(tasks.RunState.from_json(state), {"end": None}, world["protocol"], world["topics"])
    (record,) = world["protocol"].store.run_records[T].values()
    assert (record.execution, record.outcome) == ("exec-1", "up_to_date")


def test_the_safety_net_keeps_the_record_of_a_run_that_committed_before_it_timed_out(tmp_path):
    world = worlds.three_part_topic(tmp_path)
    arn = "arn:aws:states:us-east-1:123456789012:execution:TopicRun:exec-1"
    worlds.run(world, arn, started="2027-01-15T08:00:00.000Z")
    event = {
        "detail": {
            "executionArn": arn,
            "status": "TIMED_OUT",
            "input": json.dumps({"topic": "t"}),
            "startDate": 1_800_000_000_000,  # 2027-01-15T08:00:00Z, as $$.Execution.StartTime above
        }
    }
    safety_net.release_after_execution_end(event, world["protocol"])
    (record,) = world["protocol"].store.run_records[T].values()
    assert (record.outcome, record.batches, record.records) == ("processed", 4, 15)
