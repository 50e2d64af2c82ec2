"""Release task: after a failure, free the lock this execution holds (owner-checked; else a no-op)."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from leanops import tasks
from leanops.observability import logger, metrics, tracer


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return tasks.release_after_failure(event, tasks.default_protocol())
