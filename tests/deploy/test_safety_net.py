"""The safety net releases the lock of an execution that ended badly, and only that execution's lock.

Unit level (the in-memory store has the same owner conditions as DynamoDB), on the sample EventBridge events
in ``tests/events/``.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from typing import Any

import pytest

from leanops import safety_net, tasks
from leanops.handlers import safety_net as safety_net_handler
from leanops.protocol import Acquired, LockStatus, Protocol, TopicRef
from leanops.protocol.memory import InMemoryStore
from tests.deploy.conftest import EVENTS

TIMED_OUT = EVENTS / "stepfunctions_execution_timed_out.json"
ABORTED_WITHOUT_INPUT = EVENTS / "stepfunctions_execution_aborted_input_not_included.json"


def load_event(path: Any) -> dict[str, Any]:
    event: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return event


@pytest.fixture
def protocol() -> Protocol:
    return Protocol(InMemoryStore())


@pytest.fixture
def event() -> dict[str, Any]:
    return load_event(TIMED_OUT)


def hold(protocol: Protocol, topic: TopicRef, owner: str) -> None:
    assert isinstance(protocol.acquire(topic, owner, lease_seconds=120), Acquired)


def test_a_timed_out_execution_that_holds_the_lock_gets_it_released(
    protocol: Protocol, event: dict[str, Any]
) -> None:
    # GIVEN the execution of the event holds the topic named in its input
    topic, execution = TopicRef("vehicle_telemetry"), event["detail"]["executionArn"]
    hold(protocol, topic, execution)
    # WHEN the safety net gets the TIMED_OUT event
    result = safety_net.release_after_execution_end(event, protocol)
    # THEN the topic is free
    assert result == {
        "execution": execution,
        "topic": "vehicle_telemetry",
        "partition": None,
        "status": "TIMED_OUT",
        "released": True,
    }
    assert protocol.status(topic).lock_status is LockStatus.FREE


def test_another_runs_lock_is_never_released(protocol: Protocol, event: dict[str, Any]) -> None:
    # GIVEN the lock was taken over by another execution (the failed one's lease had expired)
    topic = TopicRef("vehicle_telemetry")
    other = event["detail"]["executionArn"].replace("d32c5kddcf5bb8c3", "next-run")
    hold(protocol, topic, other)
    # WHEN the safety net handles the failed execution's event
    result = safety_net.release_after_execution_end(event, protocol)
    # THEN the other run still holds it (owner-checked, I6)
    assert result["released"] is False
    lock = protocol.status(topic).lock
    assert lock is not None and lock.owner == other


def test_a_lock_already_released_in_the_state_machine_is_a_no_op(
    protocol: Protocol, event: dict[str, Any]
) -> None:
    topic = TopicRef("vehicle_telemetry")
    failed = copy.deepcopy(event)
    failed["detail"]["status"] = "FAILED"  # ReleaseAfterFailure ran before the execution failed
    assert safety_net.release_after_execution_end(failed, protocol)["released"] is False
    assert protocol.status(topic).lock_status is LockStatus.FREE


def test_a_partition_lock_is_released_by_the_partition_in_the_input(
    protocol: Protocol, event: dict[str, Any]
) -> None:
    topic, execution = TopicRef("vehicle_telemetry", "eu"), event["detail"]["executionArn"]
    hold(protocol, topic, execution)
    hold(protocol, TopicRef("vehicle_telemetry"), execution)
    partitioned = copy.deepcopy(event)
    partitioned["detail"]["input"] = json.dumps({"topic": "vehicle_telemetry", "partition": "eu"})
    assert safety_net.release_after_execution_end(partitioned, protocol)["released"] is True
    assert protocol.status(topic).lock_status is LockStatus.FREE
    assert protocol.status(TopicRef("vehicle_telemetry")).lock_status is LockStatus.HELD


@pytest.mark.parametrize(
    ("change", "why"),
    [
        ({"status": "SUCCEEDED"}, "not a bad end"),
        ({"input": None}, "input left out (above 256 KB)"),
        ({"input": "{not json"}, "input not JSON"),
        ({"input": json.dumps(["vehicle_telemetry"])}, "input not an object"),
        ({"input": json.dumps({"topic": "no spaces allowed"})}, "invalid topic name"),
        ({"input": json.dumps({})}, "no topic"),
        ({"executionArn": None}, "no execution"),
    ],
)
def test_an_event_it_cannot_use_releases_nothing_and_does_not_raise(
    protocol: Protocol, event: dict[str, Any], change: dict[str, Any], why: str
) -> None:
    # GIVEN the execution holds the lock, and an event that is unusable for the given reason
    hold(protocol, TopicRef("vehicle_telemetry"), event["detail"]["executionArn"])
    assert isinstance(protocol.store, InMemoryStore)
    requests = protocol.store.requests
    broken = copy.deepcopy(event)
    broken["detail"].update(change)
    # WHEN the safety net handles it, THEN it releases nothing and sends no request (a retry cannot help)
    assert safety_net.release_after_execution_end(broken, protocol)["released"] is False, why
    assert protocol.store.requests == requests, why


def test_the_sample_aborted_event_without_input_is_reported_not_raised(protocol: Protocol) -> None:
    result = safety_net.release_after_execution_end(load_event(ABORTED_WITHOUT_INPUT), protocol)
    assert (result["status"], result["released"]) == ("ABORTED", False)


@dataclass
class FakeContext:
    function_name: str = "SafetyNetFunction"
    memory_limit_in_mb: int = 256
    invoked_function_arn: str = "arn:aws:lambda:us-east-1:123456789012:function:SafetyNetFunction"
    aws_request_id: str = "c6af9ac6-7b61-11e6-9a41-93e8deadbeef"


def test_the_handler_releases_through_the_default_protocol(
    protocol: Protocol, event: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN the handler's protocol is the in-memory one, and the execution holds the lock
    monkeypatch.setattr(tasks, "default_protocol", lambda: protocol)
    hold(protocol, TopicRef("vehicle_telemetry"), event["detail"]["executionArn"])
    # WHEN Lambda calls the handler with the EventBridge event
    result = safety_net_handler.handler(event, FakeContext())  # type: ignore[arg-type]
    # THEN it returned a plain dict and the lock is free
    assert result["released"] is True
    assert protocol.status(TopicRef("vehicle_telemetry")).lock_status is LockStatus.FREE
