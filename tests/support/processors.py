"""Processors used by tests (imported by topics files that the tests write)."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any


class SensorFault(Exception):
    """A processor's own error: its class name must surface as the Step Functions error."""


def fail(records: list[dict[str, Any]], ctx: Any) -> list[dict[str, Any]]:
    raise SensorFault("sensor calibration missing")


def block_when_armed(records: list[dict[str, Any]], ctx: Any) -> list[dict[str, Any]]:
    """While ``$LEANOPS_TEST_ARM`` names an existing file: announce the batch, then hang (to be killed)."""
    armed = os.environ.get("LEANOPS_TEST_ARM")
    if armed and Path(armed).exists():
        Path(armed + ".started").write_text(ctx.batch_id)
        while True:  # stands for a processor busy for ever; the test kills this process
            time.sleep(0.05)
    return records
