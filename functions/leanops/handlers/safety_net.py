"""Safety net (Standard only): an execution ended FAILED, TIMED_OUT or ABORTED; free the lock it holds."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from leanops import safety_net, tasks
from leanops.observability import logger, metrics, tracer


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return safety_net.release_after_execution_end(event, tasks.default_protocol())
