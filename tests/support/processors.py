"""Processors used by tests (imported by topics files that the tests write)."""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any


class SensorFault(Exception):
    """A processor's own error: its class name must surface as the Step Functions error."""


def fail(records: list[dict[str, Any]], ctx: Any) -> list[dict[str, Any]]:
    raise SensorFault("sensor calibration missing")


#: What an armed processor logs when it is inside its batch. A log line, not a file: an isolated processor
#: (decision 0012) may write no file outside its scratch folder, and its log lines reach the function log.
STARTED = "test processor armed: inside batch"


def _announce(ctx: Any) -> None:
    ctx.logger.info(f"{STARTED} {ctx.batch_id}")


def block_when_armed(records: list[dict[str, Any]], ctx: Any) -> list[dict[str, Any]]:
    """While ``$LEANOPS_TEST_ARM`` names an existing file: announce the batch (:data:`STARTED`), then hang
    (to be killed)."""
    armed = os.environ.get("LEANOPS_TEST_ARM")
    if armed and Path(armed).exists():
        _announce(ctx)
        while True:  # stands for a processor busy for ever; the test kills it
            time.sleep(0.05)
    return records


def hold_while_armed(records: list[dict[str, Any]], ctx: Any) -> list[dict[str, Any]]:
    """While ``$LEANOPS_TEST_ARM`` names an existing file: announce the batch (:data:`STARTED`), then wait
    until the test removes the file, and go on (a slow batch whose run an operator may fence out)."""
    armed = os.environ.get("LEANOPS_TEST_ARM")
    if armed and Path(armed).exists():
        _announce(ctx)
        while Path(armed).exists():
            time.sleep(0.05)
    return records


# --- stopping a run at an exact point between its sink write and its commit ----------------------------
#
# An audit hook sees the sink's rename (``os.rename``, raised by os.replace) and the HTTP request of the
# commit (``http.client.send`` carrying ``TransactWriteItems``), so a test can stop or kill the run's
# process exactly there, with no hook in leanops itself. Armed once per process by ``$LEANOPS_TEST_ARM``.

_hook_installed = False


def stop_here() -> None:
    """SIGSTOP this process from the calling thread, effective before the call returns. (``os.kill`` on our
    own pid leaves the signal pending for any thread, and the caller may run on for a moment.)"""
    signal.pthread_kill(threading.get_ident(), signal.SIGSTOP)


def _armed() -> Path | None:
    """The arm file, if armed; then ``<arm>.pid`` names this process (the Lambda worker that the test
    stops, continues or sees killed: the handler runs in the local stack's worker, not in `leanops run`)."""
    armed = os.environ.get("LEANOPS_TEST_ARM")
    if not (armed and Path(armed).exists()):
        return None
    Path(armed + ".pid").write_text(str(os.getpid()))
    return Path(armed)


def _install(on_event: Any) -> None:
    global _hook_installed
    if not _hook_installed:
        sys.addaudithook(on_event)
        _hook_installed = True


def stop_before_sink_rename(records: list[dict[str, Any]], ctx: Any) -> list[dict[str, Any]]:
    """Armed: SIGSTOP this process just before the sink object's rename (after the lease check passed):
    the worst moment for a zombie. Writes ``<arm>.stopped`` first."""
    arm = _armed()
    if arm is not None:
        arm.unlink()

        def on_event(event: str, args: tuple[Any, ...]) -> None:
            if event != "os.rename":
                return
            target = Path(str(args[1]))
            if target.suffix == ".jsonl" and target.parent.name != "_quarantine":
                Path(str(arm) + ".stopped").write_text(str(args[1]))
                stop_here()

        _install(on_event)
    return records


def kill_after_sink_write(records: list[dict[str, Any]], ctx: Any) -> list[dict[str, Any]]:
    """Armed: SIGKILL this process (the process task's worker) at the first audited event after its sink
    object's rename: the object is in place, and no commit will ever name it."""
    arm = _armed()
    if arm is not None:
        arm.unlink()
        renamer: int | None = None

        def on_event(event: str, args: tuple[Any, ...]) -> None:
            nonlocal renamer
            if event in ("os.kill", "signal.pthread_kill"):  # audited too: must not recurse
                return
            if renamer is not None and threading.get_ident() == renamer:
                os.kill(os.getpid(), signal.SIGKILL)
            elif event == "os.rename" and renamer is None and Path(str(args[1])).suffix == ".jsonl":
                renamer = threading.get_ident()

        _install(on_event)
    return records


def reject_bad(records: list[dict[str, Any]], ctx: Any) -> list[dict[str, Any]]:
    """Quarantines records with ``bad`` set; passes the others."""
    out = []
    for record in records:
        if record.get("bad"):
            ctx.reject(record, "bad flag set")
        else:
            out.append(record)
    return out


def stop_in_first_batch(records: list[dict[str, Any]], ctx: Any) -> list[dict[str, Any]]:
    """Armed: write ``<arm>.stopped`` and SIGSTOP this process inside the processor of its first batch,
    before anything of the batch is written (once per arming)."""
    arm = _armed()
    if arm is not None:
        arm.unlink()
        Path(str(arm) + ".stopped").write_text(ctx.batch_id)
        stop_here()
    return records


def install_commit_hooks() -> None:
    """In every Lambda worker of an armed test (tests/support/worker_hooks/sitecustomize.py): once the test
    asks for it (``<arm>.lose-commit-response``), the next commit (TransactWriteItems) lands, then that
    worker stops (``<arm>.landed``, ``<arm>.pid``, SIGSTOP); once continued, the commit's caller hears a read
    timeout instead of the answer, so the state machine retries it. Only once (``<arm>.landed``)."""
    import botocore.handlers
    from botocore.exceptions import ReadTimeoutError

    armed = os.environ["LEANOPS_TEST_ARM"]

    def lose(http_response: Any, **_: Any) -> None:
        asked, landed = Path(armed + ".lose-commit-response"), Path(armed + ".landed")
        if not asked.exists() or landed.exists():
            return
        Path(armed + ".pid").write_text(str(os.getpid()))
        landed.write_text("")
        stop_here()
        raise ReadTimeoutError(endpoint_url="dynamodb (response lost by the test)")

    botocore.handlers.BUILTIN_HANDLERS.append(("after-call.dynamodb.TransactWriteItems", lose))


def stop_before_rename_then_die_after(records: list[dict[str, Any]], ctx: Any) -> list[dict[str, Any]]:
    """Armed: SIGSTOP just before the sink object's rename (``<arm>.stopped``); once continued, the rename
    happens and the process is killed (SIGKILL) at the next audited event of the renaming thread (the
    scratch file's clean-up): a writer that leaves its object and never commits or cleans up."""
    arm = _armed()
    if arm is not None:
        arm.unlink()
        renamer: int | None = None

        def on_event(event: str, args: tuple[Any, ...]) -> None:
            nonlocal renamer
            if event in ("os.kill", "signal.pthread_kill"):  # audited too: must not recurse
                return
            if renamer is not None and threading.get_ident() == renamer:
                os.kill(os.getpid(), signal.SIGKILL)  # the first event after the rename, in its thread
            elif event == "os.rename" and renamer is None and Path(str(args[1])).suffix == ".jsonl":
                Path(str(arm) + ".stopped").write_text(str(args[1]))
                stop_here()
                renamer = threading.get_ident()

        _install(on_event)
    return records
