"""The chaos harness's checks (bench/chaos.py) on synthetic sink folders: each invariant catches what it
is meant to, so a clean chaos run cannot pass by not looking. No DynamoDB, no processes."""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from tests.support import chaos_processors

BENCH = Path(__file__).resolve().parents[2] / "bench"


@pytest.fixture(scope="module")
def chaos() -> ModuleType:
    """bench/chaos.py, imported as the script imports it (bench/ on sys.path, for ``common``)."""
    sys.path.insert(0, str(BENCH))
    try:
        return importlib.import_module("chaos")
    finally:
        sys.path.remove(str(BENCH))


def write(sink: Path, name: str, ids: list[int]) -> None:
    path = sink / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps({"event_id": f"t-{i}"}) + "\n" for i in ids))


@pytest.fixture
def topic(chaos: ModuleType, tmp_path: Path) -> dict[str, Any]:
    """Topic ``t``: 10 records landed in two objects of 5, committed in three batches, sink in order."""
    landed = [
        chaos.LandedObject("part-00000000.jsonl", 0, 5),
        chaos.LandedObject("part-00000001.jsonl", 5, 5),
    ]
    batches: list[dict[str, Any]] = [
        {"seq": 1, "after": None, "end": "part-00000000.jsonl#3", "object": "t.origin.1-aaaaaaaa.jsonl"},
        {
            "seq": 2,
            "after": "part-00000000.jsonl#3",
            "end": "part-00000001.jsonl#0",
            "object": "t.part-00000000.jsonl.0000000003.1-aaaaaaaa.jsonl",
        },
        {
            "seq": 3,
            "after": "part-00000001.jsonl#0",
            "end": "part-00000001.jsonl#5",
            "object": "t.part-00000001.jsonl.0000000000.2-bbbbbbbb-cccccccc.jsonl",
        },
    ]
    sink = tmp_path / "out"
    for batch, ids in zip(batches, ([0, 1, 2], [3, 4], [5, 6, 7, 8, 9]), strict=True):
        batch.update(written=len(ids), records=len(ids), quarantined=0, quarantine=None)
        write(sink, batch["object"], ids)
    return {"landed": landed, "batches": batches, "sink": sink}


def check(chaos: ModuleType, topic: dict[str, Any]) -> dict[str, Any]:
    return chaos.check_topic("t", topic["landed"], topic["sink"], topic["batches"])


def test_a_clean_sink_passes_every_invariant(chaos, topic):
    found = check(chaos, topic)
    assert {key: found[key] for key in chaos.INVARIANTS} == dict.fromkeys(chaos.INVARIANTS, 0)
    assert found["records_landed"] == found["committed_distinct_records"] == 10
    assert found["unexpected_records"] == found["quarantined"] == 0
    assert found["final_position_covers_all_landed"]
    assert not found["checkpoint_chain_breaks"] and not found["objects_with_unexpected_content"]


def test_a_deleted_committed_object_is_missing_and_its_records_lost(chaos, topic):
    deleted = chaos.inject_loss(topic["sink"], topic["batches"])
    assert deleted == "t.origin.1-aaaaaaaa.jsonl"
    found = check(chaos, topic)
    assert found["missing_committed_objects"] == 1
    assert found["lost_records"] == found["lost_in_missing_objects"] == 3
    assert found["lost_sample"] == ["t-0", "t-1", "t-2"]
    assert found["missing_objects"][0]["ids"] == "t-0..t-2"
    assert found["duplicate_records"] == found["orphans_after_drain"] == 0


def test_a_record_in_two_committed_objects_is_a_duplicate(chaos, topic):
    write(topic["sink"], topic["batches"][2]["object"], [4, 5, 6, 7, 8, 9])
    found = check(chaos, topic)
    assert found["duplicate_records"] == 1 and found["duplicate_sample"] == ["t-4"]
    assert [o["seq"] for o in found["objects_with_unexpected_content"]] == [3]
    assert found["lost_records"] == 0


def test_objects_no_commit_names_are_orphans_but_hidden_temporaries_are_not(chaos, topic):
    write(topic["sink"], "t.origin.3-dddddddd.jsonl", [0, 1, 2])
    write(topic["sink"], "_quarantine/t.origin.3-dddddddd.jsonl", [])
    write(topic["sink"], "_tmp-0123", [7])
    found = check(chaos, topic)
    assert found["orphans_after_drain"] == 2
    assert found["orphan_objects"] == ["t.origin.3-dddddddd.jsonl"]
    assert found["orphan_quarantine_objects"] == ["_quarantine/t.origin.3-dddddddd.jsonl"]
    assert found["hidden_temporary_files"] == 1
    assert found["duplicate_records"] == 0  # an orphan is not committed output


def test_records_never_landed_and_records_never_committed(chaos, topic):
    write(topic["sink"], topic["batches"][2]["object"], [5, 6, 7, 8, 99])
    found = check(chaos, topic)
    assert found["unexpected_records"] == 1 and found["unexpected_sample"] == ["t-99"]
    assert found["lost_records"] == 1 and found["lost_sample"] == ["t-9"]


def test_a_commit_that_does_not_start_where_the_last_ended_is_a_chain_break(chaos, topic):
    topic["batches"][2]["after"] = "part-00000000.jsonl#4"
    found = check(chaos, topic)
    assert found["checkpoint_chain_breaks"] == [
        {"seq": 3, "after": "part-00000000.jsonl#4", "expected": "part-00000001.jsonl#0"}
    ]


def test_positions_map_to_topic_wide_line_indexes(chaos, topic):
    landed = topic["landed"]
    assert chaos.position_index(landed, None) == 0
    assert chaos.position_index(landed, "part-00000000.jsonl#3") == 3
    assert chaos.position_index(landed, "part-00000001.jsonl#0") == 5
    assert chaos.position_index(landed, "part-00000001.jsonl#5") == 10


def test_totals_add_the_topics_up(chaos, topic):
    chaos.inject_loss(topic["sink"], topic["batches"])
    found = check(chaos, topic)
    summed = chaos.totals({"t": found, "u": found})
    assert summed["missing_committed_objects"] == 2 and summed["lost_records"] == 6


def test_the_chaos_processor_passes_records_through(monkeypatch):
    monkeypatch.setenv(chaos_processors.ENV_SLEEP_MS, "5")

    class Context:
        topic, batch_id, fence = "t", "origin", 1

    records = [{"event_id": "t-0"}, {"event_id": "t-1"}]
    assert chaos_processors.process(records, Context()) == records


@pytest.mark.parametrize("qualifier", ["", ":$LATEST", ":7"])
def test_a_running_task_is_recognised_by_its_function_qualified_or_not(chaos, qualifier):
    from datetime import UTC, datetime

    arn = f"arn:aws:lambda:us-east-1:123456789012:function:ProcessFunction{qualifier}"
    at = datetime(2030, 1, 1, tzinfo=UTC)
    scheduled = {
        "type": "LambdaFunctionScheduled",
        "timestamp": at,
        "lambdaFunctionScheduledEventDetails": {"resource": arn},
    }
    events = [{"type": "LambdaFunctionStarted", "timestamp": at}, scheduled]  # newest first
    assert chaos.task_running(events, "ProcessFunction", at.timestamp() + 1) == at.timestamp()
    # another function's task, one scheduled after the worker's record, or one that ended: not running
    assert chaos.task_running(events, "AdvanceFunction", at.timestamp() + 1) is None
    assert chaos.task_running(events, "ProcessFunction", at.timestamp() - 1) is None
    assert chaos.task_running([{"type": "LambdaFunctionSucceeded"}, *events], "ProcessFunction", 2e9) is None
