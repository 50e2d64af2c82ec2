"""Logger, Tracer and Metrics, created once (Powertools). Handlers decorate with them; nothing else imports
Powertools, so the protocol stays free of Lambda concerns."""

from __future__ import annotations

import warnings

from aws_lambda_powertools import Logger, Metrics, Tracer

# A task that fails before measuring anything has no metrics to flush; that is not worth a warning.
warnings.filterwarnings("ignore", message="No application metrics to publish")

logger = Logger(service="leanops")
tracer = Tracer(service="leanops")
metrics = Metrics(namespace="leanops", service="leanops")
