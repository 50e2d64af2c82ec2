"""The processor of the chaos harness (bench/chaos.py): a passthrough that can be slowed, and a trace of
what each ``leanops run`` process does to the sink.

``process`` sleeps a seeded random 0..``$LEANOPS_CHAOS_SLEEP_MS`` ms per batch (seeded by
``$LEANOPS_CHAOS_SEED``, the topic, the batch and the fence: the same attempt always sleeps as long), so a
run is often mid-batch when the harness disrupts it, then returns the records unchanged.

When ``$LEANOPS_CHAOS_TRACE_DIR`` and ``$LEANOPS_CHAOS_TRACE_ROOT`` are set, importing this module (the
process task imports it before the run's first sink write or delete) installs an audit hook that appends
one JSON line per file renamed into, or deleted from, a folder under the trace root to
``<trace dir>/<pid>.jsonl``: ``{"t", "pid", "op": "write"|"delete", "path", "stack"}``, where ``stack``
names the leanops functions on the way (``sweep``, ``advance``, ...). Nothing else changes: the hook only
observes. The harness uses it to say which run deleted a committed object.
"""

from __future__ import annotations

import json
import os
import random
import sys
import threading
import time
from typing import Any

ENV_SLEEP_MS = "LEANOPS_CHAOS_SLEEP_MS"
ENV_SEED = "LEANOPS_CHAOS_SEED"
ENV_TRACE_DIR = "LEANOPS_CHAOS_TRACE_DIR"
ENV_TRACE_ROOT = "LEANOPS_CHAOS_TRACE_ROOT"


def process(records: list[dict[str, Any]], ctx: Any) -> list[dict[str, Any]]:
    """Sleep a seeded 0..$LEANOPS_CHAOS_SLEEP_MS ms, then pass the records through."""
    limit_ms = int(os.environ.get(ENV_SLEEP_MS) or 0)
    if limit_ms > 0:
        seed = os.environ.get(ENV_SEED, "0")
        rng = random.Random(f"{seed}:{ctx.topic}:{ctx.batch_id}:{ctx.fence}")
        time.sleep(rng.uniform(0, limit_ms) / 1000)
    return records


# --- the sink trace ------------------------------------------------------------------------------------


def _leanops_stack(limit: int = 8) -> list[str]:
    """``module.function`` of the leanops frames calling the audited operation, innermost first."""
    names: list[str] = []
    frame = sys._getframe(2)
    while frame is not None and len(names) < limit:
        module = frame.f_globals.get("__name__", "")
        if module.startswith("leanops."):
            names.append(f"{module.removeprefix('leanops.')}.{frame.f_code.co_name}")
        frame = frame.f_back  # type: ignore[assignment]
    return names


def _install_trace() -> None:
    directory, root = os.environ.get(ENV_TRACE_DIR), os.environ.get(ENV_TRACE_ROOT)
    if not directory or not root:
        return
    root = os.path.realpath(root) + os.sep
    os.makedirs(directory, exist_ok=True)
    fd = os.open(os.path.join(directory, f"{os.getpid()}.jsonl"), os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    busy = threading.local()

    def record(op: str, path: str) -> None:
        line = {"t": time.time(), "pid": os.getpid(), "op": op, "path": path, "stack": _leanops_stack()}
        os.write(fd, (json.dumps(line) + "\n").encode())

    def hook(event: str, args: tuple[Any, ...]) -> None:
        if event not in ("os.remove", "os.rename") or getattr(busy, "on", False):
            return
        busy.on = True
        try:
            target = os.fsdecode(args[1] if event == "os.rename" else args[0])
            if not isinstance(target, str) or not os.path.realpath(target).startswith(root):
                return
            path = os.path.realpath(target)[len(root) :]
            if os.path.basename(path).startswith("_tmp-"):
                return  # the sink's own temporary files
            if event == "os.rename":
                record("write", path)
            elif os.path.exists(target):  # deletes of names that do not exist change nothing
                record("delete", path)
        except Exception:  # an observer must never break the run it observes
            pass
        finally:
            busy.on = False

    sys.addaudithook(hook)


_install_trace()
