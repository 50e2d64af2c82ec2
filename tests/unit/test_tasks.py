"""The four tasks as plain functions, driven the way the state machine drives them, on the in-memory store."""

from __future__ import annotations

import json

import pytest

from leanops import tasks
from leanops.batch import passthrough, run_batch
from leanops.config import parse_topics
from leanops.errors import LockLost
from leanops.heartbeat import Heartbeat
from leanops.protocol import Protocol
from leanops.protocol.memory import InMemoryStore
from tests.support.clock import FakeClock


@pytest.fixture
def world(tmp_path):
    source = tmp_path / "in"
    source.mkdir()
    for part in range(3):
        (source / f"part-{part}.jsonl").write_text(
            "".join(json.dumps({"i": part * 5 + i}) + "\n" for i in range(5))
        )
    document = {
        "topics": {
            "t": {
                "source": {"type": "files", "uri": str(source)},
                "sink": {"type": "files", "uri": str(tmp_path / "out")},
                "batch_size": 4,
                "lease_seconds": 30,
                "max_batches_per_run": 10,
            }
        }
    }
    clock = FakeClock()
    return {
        "topics": parse_topics(document, tmp_path / "topics.yaml"),
        "protocol": Protocol(InMemoryStore(), clock=clock),
        "clock": clock,
        "out": tmp_path / "out",
    }


def start(world, execution="exec-1", **input_):
    event = {"input": {"topic": "t", **input_}, "execution": execution, "execution_name": execution}
    return tasks.acquire(event, world["protocol"], world["topics"]).to_json()


def run(world, execution="exec-1", remaining_ms=lambda: 60_000, **input_):
    """Acquire -> (ProcessBatch -> AdvanceCheckpoint)* as the ASL does; returns the final state."""
    state = start(world, execution, **input_)
    while state["outcome"] == "acquired" and not state["released"]:
        state["batch"] = tasks.process(
            tasks.RunState.from_json(state), world["protocol"], world["topics"], remaining_ms
        ).to_json()
        state = tasks.advance(
            tasks.RunState.from_json(state), state["batch"], world["protocol"], world["topics"]
        ).to_json()
    return state


def output_records(world):
    return sorted(
        json.loads(line)["i"]
        for path in world["out"].glob("t.*.jsonl")
        for line in path.read_text().splitlines()
    )


def test_a_run_processes_the_backlog_in_batches_then_is_up_to_date(world):
    done = run(world)
    assert (done["outcome"], done["batches"], done["records"], done["released"]) == ("processed", 4, 15, True)
    assert done["checkpoint"]["position"] == "part-2.jsonl#5"
    assert output_records(world) == list(range(15))
    again = run(world, "exec-2")
    assert (again["outcome"], again["batches"], again["released"]) == ("up_to_date", 0, True)
    assert world["protocol"].status(tasks.TopicRef("t")).lock_status.value == "free"


def test_the_batch_cap_ends_a_run_that_the_next_run_continues(world):
    world["topics"].topics["t"] = (
        world["topics"]
        .topics["t"]
        .__class__(**{**world["topics"].topics["t"].__dict__, "max_batches_per_run": 2})
    )
    first = run(world)
    assert (first["batches"], first["records"], first["checkpoint"]["position"]) == (2, 8, "part-1.jsonl#3")
    second = run(world, "exec-2")
    assert (second["batches"], second["records"]) == (2, 7)
    assert output_records(world) == list(range(15))


def test_a_duplicate_start_of_the_same_scheduled_time_does_nothing(world):
    first = start(world, "exec-1", scheduled_time="2026-11-25T10:00:00Z")
    duplicate = start(world, "exec-2", scheduled_time="2026-11-25T10:00:00Z")
    assert first["outcome"] == "acquired" and duplicate["outcome"] == "duplicate"


def test_a_locked_topic_is_skipped(world):
    start(world, "exec-1")
    assert start(world, "exec-2")["outcome"] == "skipped_locked"


def test_the_deadline_cuts_the_batch_and_the_run_goes_on(world):
    # GIVEN a Lambda whose remaining time drops below the reserve after 2 records per batch
    calls = {"n": 0}

    def remaining_ms():
        calls["n"] += 1
        return 60_000 if calls["n"] % 3 == 1 else 1_000  # first call sets the reserve at 10 s

    done = run(world, remaining_ms=remaining_ms)
    # THEN every batch committed what it read, and all records arrived exactly once
    assert done["batches"] > 4 and done["outcome"] == "processed"
    assert output_records(world) == list(range(15))


def test_heartbeat_renews_and_reports_a_takeover_before_the_sink_write(world):
    # GIVEN a run holding the lock, with a heartbeat beating often
    state = tasks.RunState.from_json(start(world, "exec-1"))
    protocol, clock = world["protocol"], world["clock"]
    with Heartbeat(protocol, state.lease, 30, interval_seconds=0.001) as heartbeat:
        # WHEN its lease lapses while it is paused and another run takes over
        clock.advance(31_000 + 2_001)
        assert start(world, "exec-2")["outcome"] == "acquired"
        assert heartbeat.lost_event.wait(5)
        # THEN the check before the sink write stops it, so it writes nothing
        with pytest.raises(LockLost):
            run_batch(
                world["topics"].topic("t"),
                None,
                passthrough,
                fence=1,
                logger=None,
                before_write=heartbeat.check,
            )
    assert not world["out"].exists()


def test_release_after_failure_frees_only_the_failed_executions_lock(world):
    start(world, "exec-1")
    assert tasks.release_after_failure({"state": {"topic": "t"}, "owner": "exec-2"}, world["protocol"]) == {
        "released": False
    }
    assert tasks.release_after_failure({"state": {"topic": "t"}, "owner": "exec-1"}, world["protocol"]) == {
        "released": True
    }
    assert tasks.release_after_failure({"state": {}, "owner": "exec-1"}, world["protocol"]) == {
        "released": False
    }


def test_a_task_that_starts_past_its_deadline_takes_one_record_per_batch(world):
    first = run(world, remaining_ms=lambda: 0)
    assert (first["batches"], first["records"]) == (10, 10)  # the batch cap ends the run
    second = run(world, "exec-2", remaining_ms=lambda: 0)
    assert (second["batches"], second["records"]) == (5, 5)
    assert output_records(world) == list(range(15))


def test_metrics_carry_the_topic_dimension_the_alarms_select_on(world):
    from leanops.observability import metrics

    start(world, "exec-1")
    assert metrics.dimension_set.get("topic") == "t"
    metrics.clear_metrics()
