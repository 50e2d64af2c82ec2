"""The processor of the chaos harness (bench/chaos.py): a passthrough that can be slowed; a record of which
Lambda execution environment (worker process) is in which execution's task; and a trace of what each
process does to the sink.

``process`` sleeps a seeded random 0..``$LEANOPS_CHAOS_SLEEP_MS`` ms per batch (seeded by
``$LEANOPS_CHAOS_SEED``, the topic, the batch and the fence: the same attempt always sleeps as long), so a
worker is often mid-batch when the harness disrupts it, then returns the records unchanged.

When ``$LEANOPS_CHAOS_TRACE_DIR`` and ``$LEANOPS_CHAOS_TRACE_ROOT`` are set, importing this module installs
(once per process) an audit hook that observes two things:

- **Which worker is in which task.** In a worker of the process or advance function
  (``$AWS_LAMBDA_FUNCTION_NAME``), each ``leanops.task`` audit event (the task raises it at its start,
  its run state at hand) replaces ``<trace dir>/workers/<pid>.json``
  with ``{"pid", "function", "execution", "topic", "fence", "batch", "batches", "t"}``: this worker is in
  that function's task of that execution (its owner ARN), on the batch after ``batch`` (the checkpoint's
  position; ``origin`` at the start), the run's ``batches``-th batch (0: its first), since ``t`` at the
  latest. ``process`` writes it again before its sleep, with its context's batch and fence (also where the
  task's event is not seen). The harness freezes the worker, checks in the execution's history that this
  function's task is running and began before ``t``, and only then strikes (bench/chaos.py).
- **What happens to the sink.** One JSON line per file renamed into, or deleted from, a folder under the
  trace root, appended to ``<trace dir>/<pid>.jsonl``:
  ``{"t", "pid", "op": "write"|"delete", "path", "stack", "execution"}``, where ``stack`` names the leanops
  functions on the way (``sweep``, ``advance``, ...) and ``execution`` the owner ARN of the run state or
  lease they work for (``None`` outside a run: ``leanops gc``).

The process task imports this module with its processor, in its own worker (the harness's topics set
``isolation: none``: an isolated child could read neither the worker's frames nor write the trace, and its
pid is not the worker's); ``tests/support/chaos_site/sitecustomize.py``
loads it in every other process the harness's environment reaches (the stack's other workers: the advance
task's deletes; the CLI: ``gc``). Nothing else changes: the hook and the records only observe (frames'
locals are read, never written).
"""

from __future__ import annotations

import json
import os
import random
import sys
import threading
import time
from types import FrameType
from typing import Any

ENV_SLEEP_MS = "LEANOPS_CHAOS_SLEEP_MS"
ENV_SEED = "LEANOPS_CHAOS_SEED"
ENV_TRACE_DIR = "LEANOPS_CHAOS_TRACE_DIR"
ENV_TRACE_ROOT = "LEANOPS_CHAOS_TRACE_ROOT"
#: leanops.tasks.TASK_AUDIT_EVENT (not imported: this module loads in processes without leanops too).
TASK_AUDIT_EVENT = "leanops.task"
#: The functions whose workers record which execution's task they are in.
MARKED_FUNCTIONS = ("ProcessFunction", "AdvanceFunction")
#: Under the trace dir: one ``<pid>.json`` per worker, its latest processor call.
WORKERS_DIR = "workers"
#: Set on the ``sys`` module once the hook is installed (this file may be loaded twice in one process: by
#: ``sitecustomize`` under another name, and as the topics' processor).
_INSTALLED = "_leanops_chaos_trace_installed"


def process(records: list[dict[str, Any]], ctx: Any) -> list[dict[str, Any]]:
    """Record which execution's batch this worker processes, sleep a seeded 0..$LEANOPS_CHAOS_SLEEP_MS ms,
    then pass the records through."""
    directory = os.environ.get(ENV_TRACE_DIR)
    if directory:
        run = _run_of(sys._getframe(1))
        _record_worker(directory, {**run, "topic": ctx.topic, "fence": ctx.fence, "batch": ctx.batch_id})
    limit_ms = int(os.environ.get(ENV_SLEEP_MS) or 0)
    if limit_ms > 0:
        seed = os.environ.get(ENV_SEED, "0")
        rng = random.Random(f"{seed}:{ctx.topic}:{ctx.batch_id}:{ctx.fence}")
        time.sleep(rng.uniform(0, limit_ms) / 1000)
    return records


def _record_worker(directory: str, run: dict[str, Any]) -> None:
    """Replace this worker's record (see the module docstring)."""
    try:
        line = {
            "pid": os.getpid(),
            "function": os.environ.get("AWS_LAMBDA_FUNCTION_NAME"),
            **run,
            "t": time.time(),
        }
        folder = os.path.join(directory, WORKERS_DIR)
        os.makedirs(folder, exist_ok=True)
        temporary = os.path.join(folder, f".{os.getpid()}.tmp")
        with open(temporary, "w") as out:
            out.write(json.dumps(line))
        os.replace(temporary, os.path.join(folder, f"{os.getpid()}.json"))
    except Exception:  # an observer must never break the run it observes
        pass


def _run_of(frame: FrameType | None, limit: int = 40) -> dict[str, Any]:
    """What the leanops frames from ``frame`` outwards work for: ``execution`` (owner ARN), and from a run
    state (``state``, with its lease) ``topic``, ``fence``, ``batch`` (the checkpoint's position, ``origin``
    at the start) and ``batches``; else from a ``lease`` or an ``owner`` ARN. Read only."""
    found: dict[str, Any] = {"execution": None}
    while frame is not None and limit > 0:
        limit -= 1
        if frame.f_globals.get("__name__", "").startswith("leanops.") and {
            "state",
            "lease",
            "owner",
        } & set(frame.f_code.co_varnames):
            local = frame.f_locals
            state = local.get("state")
            lease = getattr(state, "lease", None) or local.get("lease")
            owner = getattr(lease, "owner", None) or local.get("owner")
            if found["execution"] is None and isinstance(owner, str) and ":execution:" in owner:
                found["execution"] = owner
            batches = getattr(state, "batches", None)
            if isinstance(batches, int) and lease is not None:
                return {
                    "execution": getattr(lease, "owner", None),
                    "topic": getattr(getattr(state, "topic", None), "topic", None),
                    "fence": getattr(lease, "fence", None),
                    "batch": getattr(getattr(state, "checkpoint", None), "position", None) or "origin",
                    "batches": batches,
                }
        frame = frame.f_back
    return found


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
    if not directory or not root or getattr(sys, _INSTALLED, False):
        return
    setattr(sys, _INSTALLED, True)
    root = os.path.realpath(root) + os.sep
    os.makedirs(directory, exist_ok=True)
    fd = os.open(os.path.join(directory, f"{os.getpid()}.jsonl"), os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    busy = threading.local()

    def record(op: str, path: str) -> None:
        line = {
            "t": time.time(),
            "pid": os.getpid(),
            "op": op,
            "path": path,
            "stack": _leanops_stack(),
            "execution": _run_of(sys._getframe(2))["execution"],
        }
        os.write(fd, (json.dumps(line) + "\n").encode())

    function = os.environ.get("AWS_LAMBDA_FUNCTION_NAME")

    def hook(event: str, args: tuple[Any, ...]) -> None:
        if event == TASK_AUDIT_EVENT and function in MARKED_FUNCTIONS and not getattr(busy, "on", False):
            # A process or advance task has its run state in hand (leanops.tasks raises it).
            busy.on = True
            try:
                run = _run_of(sys._getframe(1))
                if run["execution"] is not None:
                    _record_worker(directory, run)
            except Exception:  # an observer must never break the run it observes
                pass
            finally:
                busy.on = False
            return
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
