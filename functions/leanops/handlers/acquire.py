"""Acquire task: claim the run key and take the topic's lock (owner = the execution)."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from leanops import tasks
from leanops.observability import logger, metrics, tracer


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    protocol = tasks.default_protocol()
    return tasks.acquire(event, protocol, tasks.default_topics(protocol)).to_json()
