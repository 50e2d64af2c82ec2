"""Handlers for the worker-pool tests: each behaves as named; INIT may be slow (``POOL_TEST_INIT_SLEEP``)."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

#: A slow import, as pyarrow and Powertools are on a loaded machine: INIT is not the handler's time.
time.sleep(float(os.environ.get("POOL_TEST_INIT_SLEEP", "0")))
INIT_PID = os.getpid()


def echo(event: Any, context: Any) -> dict[str, Any]:
    return {"event": event, "pid": os.getpid(), "remaining_ms": context.get_remaining_time_in_millis()}


def sleep(event: dict[str, Any], context: Any) -> dict[str, Any]:
    time.sleep(float(event["seconds"]))
    return {"slept": event["seconds"]}


def exit_hard(event: Any, context: Any) -> None:
    os._exit(3)  # the process dies mid-invocation, as a crashed runtime


def hold(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """Mark ``<dir>/<id>.running`` while running until ``<dir>/release`` exists (no sleep as a stand-in:
    the test decides when each invocation may end)."""
    folder = Path(event["dir"])
    (folder / f"{event['id']}.running").write_text(str(os.getpid()))
    while not (folder / "release").exists():
        time.sleep(0.01)
    (folder / f"{event['id']}.running").unlink()
    return {"id": event["id"]}


def kill_self(event: Any, context: Any) -> None:
    import signal

    os.kill(os.getpid(), signal.SIGKILL)  # killed as the kernel or an operator would: not a timeout
