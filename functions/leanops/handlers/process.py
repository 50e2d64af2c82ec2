"""Process task: the next batch after the checkpoint, source -> processor -> sink, before the deadline."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from leanops import tasks
from leanops.observability import logger, metrics, tracer


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    state = tasks.RunState.from_json(event)
    protocol = tasks.default_protocol()
    topics = tasks.default_topics(protocol)
    batch = tasks.process(state, protocol, topics, context.get_remaining_time_in_millis)
    return batch.to_json()
