"""Every execution that claims its run key leaves one run record, whichever way it ends (docs/decisions/0014):
in the same write as the lock's release when there is one; a retried task writes no second one."""

from __future__ import annotations

from typing import Any

import pytest

from leanops import safety_net, tasks
from leanops.protocol import RunRecord, TopicRef
from tests.support.worlds import run, start, three_part_topic

STARTED = "2026-11-29T10:00:00.250Z"
STARTED_MS = 1_795_946_400_250


@pytest.fixture
def world(tmp_path):
    return three_part_topic(tmp_path)


def records(world) -> list[RunRecord]:
    return list(world["protocol"].store.run_records.get(TopicRef("t"), {}).values())


def only(world) -> RunRecord:
    (record,) = records(world)
    return record


def test_a_run_that_commits_records_its_outcome_counts_position_and_lag(world):
    done = run(world, "exec-1", started=STARTED)
    record = only(world)
    assert (record.execution, record.outcome, record.batches, record.records) == (
        "exec-1",
        "processed",
        4,
        15,
    )
    assert record.started_at_ms == STARTED_MS and record.ended_at_ms == world["protocol"].clock()
    assert record.position == done["checkpoint"]["position"] and record.fence is not None
    assert record.key.startswith(f"runlog#{STARTED_MS:013d}#")


def test_an_up_to_date_run_records_itself_in_its_release(world):
    run(world, "exec-1")
    requests = world["protocol"].store.requests
    run(world, "exec-2")
    up_to_date = [r for r in records(world) if r.execution == "exec-2"]
    assert [(r.outcome, r.batches) for r in up_to_date] == [("up_to_date", 0)]
    # no request of its own: run key, lock, the late-object look-back (a Query), the release with the record
    assert world["protocol"].store.requests - requests == 4


def test_skipped_and_paused_runs_record_themselves_and_duplicates_do_not(world):
    start(world, "exec-1", scheduled_time="t1")
    assert start(world, "exec-2")["outcome"] == "skipped_locked"
    assert start(world, "exec-3", scheduled_time="t1")["outcome"] == "duplicate"
    world["protocol"].pause(TopicRef("t"), actor="ops", reason="check")
    assert start(world, "exec-4")["outcome"] == "paused"
    assert sorted((r.execution, r.outcome) for r in records(world)) == [
        ("exec-2", "skipped_locked"),
        ("exec-4", "paused"),
    ]


def fail(world, execution: str, state: dict[str, Any]) -> None:
    error = {"Error": "SensorFault", "Cause": "calibration missing"}
    tasks.release_after_failure(
        {"state": {**state, "error": error}, "owner": execution, "started": STARTED}, world["protocol"]
    )


def test_a_failed_run_records_its_error_and_a_retried_release_no_second_record(world):
    state = start(world, "exec-1")
    fail(world, "exec-1", state)
    fail(world, "exec-1", state)  # the release task retried
    record = only(world)
    assert (record.outcome, record.error, record.cause) == ("failed", "SensorFault", "calibration missing")
    assert record.started_at_ms == STARTED_MS and record.fence == state["lease"]["fence"]


def test_a_run_that_failed_in_acquire_is_recorded_from_its_input(world):
    fail(world, "exec-1", {"topic": "t"})
    assert (only(world).outcome, only(world).fence) == ("failed", None)


@pytest.mark.parametrize("status", ["TIMED_OUT", "ABORTED"])
def test_the_safety_net_records_a_run_that_ended_outside_the_state_machine(world, status):
    start(world, "arn:exec-1")
    event = {
        "detail": {
            "executionArn": "arn:exec-1",
            "status": status,
            "input": '{"topic": "t"}',
            "startDate": STARTED_MS,
        }
    }
    safety_net.release_after_execution_end(event, world["protocol"])
    record = only(world)
    assert (record.outcome, record.error, record.started_at_ms) == (status.lower(), status, STARTED_MS)


def test_the_safety_net_keeps_the_record_a_failed_run_wrote(world):
    state = start(world, "arn:exec-1")
    fail(world, "arn:exec-1", state)
    detail = {
        "executionArn": "arn:exec-1",
        "status": "FAILED",
        "input": '{"topic": "t"}',
        "startDate": STARTED_MS,
    }
    event = {"detail": detail}
    safety_net.release_after_execution_end(event, world["protocol"])
    assert (only(world).outcome, only(world).error) == ("failed", "SensorFault")
