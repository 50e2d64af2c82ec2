"""The safety net of Standard workflows: free the lock of an execution that ended badly.

The state machine releases the lock itself after a caught task failure (``ReleaseAfterFailure``). An
execution that TIMED_OUT or was ABORTED runs no more states, and a FAILED one may have failed in that
release; each would leave the topic locked until its lease expires. EventBridge reports every such end
("Step Functions Execution Status Change"), and this releases the lock the execution still holds —
owner-checked (design §3 I6), so it can never free another run's lock, and a no-op when the in-machine
release already ran.

Express workflows emit no status-change events: there, the lease is the only net.
"""

from __future__ import annotations

import json
from typing import Any

from aws_lambda_powertools.metrics import MetricUnit

from leanops import health
from leanops.errors import InvalidInput
from leanops.observability import logger, metrics
from leanops.protocol import Checkpoint, Protocol, Release, TopicRef
from leanops.tasks import RunState, observe_run, run_record, started_at_ms

#: Execution statuses that leave no state to release the lock in.
ENDED_BADLY = frozenset({"FAILED", "TIMED_OUT", "ABORTED"})


def release_after_execution_end(event: dict[str, Any], protocol: Protocol) -> dict[str, Any]:
    """Release the lock that the execution of a status-change ``event`` holds, if it still holds it.

    The owner is the execution ARN (the state machine's ``$$.Execution.Id``); the topic comes from the
    execution's input (``detail.input``: ``{"topic": ..., "partition": ...}``). Never raises for an event
    it cannot use (another status, an input that is missing, too large to be included, or not a start
    of a topic): it logs why and releases nothing, since retrying cannot help.
    """
    detail = event.get("detail") or {}
    execution, status = detail.get("executionArn"), detail.get("status")
    try:
        if status not in ENDED_BADLY:
            raise InvalidInput(f"status {status!r} is not one of {sorted(ENDED_BADLY)}")
        if not isinstance(execution, str) or not execution:
            raise InvalidInput("the event names no executionArn")
        start = _execution_input(detail)
        topic = TopicRef.from_input(start)
    except InvalidInput as exc:
        logger.warning("safety net: nothing to release", extra={"reason": str(exc), "execution": execution})
        return {"execution": execution, "status": status, "released": False}
    observe_run(topic, execution)
    result = protocol.release_owned_by(topic, execution)
    cause = str(detail.get("cause") or f"execution {status}")
    ended = RunState(
        topic, "failed", None, Checkpoint(), started_at_ms=started_at_ms(detail.get("startDate"), protocol)
    )
    run = run_record(ended, status.lower(), protocol, execution=execution, error=status, cause=cause)
    if status != "FAILED":
        protocol.record_failure(topic, execution, status, cause, run=run)
        health.report_outcome(topic, failed=True)
    else:  # ReleaseAfterFailure recorded and reported the failure, unless that release itself failed
        protocol.record_run(topic, run)
    if result is Release.RELEASED:
        metrics.add_metric(name="SafetyNetReleases", unit=MetricUnit.Count, value=1)
    logger.info(
        "safety net: execution ended without releasing its lock"
        if result is Release.RELEASED
        else "safety net: the execution holds no lock (released in the state machine, or taken over)",
        extra={"status": status, "result": result.value, "error": detail.get("error")},
    )
    return {
        "execution": execution,
        "topic": topic.topic,
        "partition": topic.partition,
        "status": status,
        "released": result is Release.RELEASED,
    }


def _execution_input(detail: dict[str, Any]) -> dict[str, Any]:
    """The execution's input object; EventBridge leaves it out above 256 KB (``inputDetails.included``)."""
    raw = detail.get("input")
    if raw is None:
        raise InvalidInput("the event does not include the execution's input")
    try:
        start = json.loads(raw) if isinstance(raw, str) else raw
    except ValueError as exc:
        raise InvalidInput(f"the execution's input is not JSON: {exc}") from exc
    if not isinstance(start, dict):
        raise InvalidInput(f"the execution's input is not an object: {type(start).__name__}")
    return start
