"""One Lambda invocation of a Python handler, as the Python runtime performs it: the context object, the
handler's import (INIT), the call, and the error payloads Lambda reports. Shared by the in-process test
runtime (:mod:`leanopsctl.local.runtime`) and the local stack's workers (:mod:`leanopsctl.local.worker`)."""

from __future__ import annotations

import importlib
import json
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, cast

Handler = Callable[[Any, "LambdaContext"], Any]


@dataclass
class LambdaContext:
    """The context object a Python Lambda handler receives (the attributes Powertools reads)."""

    function_name: str
    function_version: str
    invoked_function_arn: str
    memory_limit_in_mb: int
    aws_request_id: str
    log_group_name: str
    log_stream_name: str
    #: ``time.monotonic()`` at which the invocation times out.
    deadline: float = field(repr=False)
    identity: Any = None
    client_context: Any = None

    def get_remaining_time_in_millis(self) -> int:
        """Milliseconds left before Lambda would stop this invocation (never negative)."""
        return max(0, int((self.deadline - time.monotonic()) * 1000))


class HandlerUnavailable(Exception):
    """The handler could not be loaded; ``payload`` is the error Lambda's runtime reports for it."""

    def __init__(self, payload: bytes) -> None:
        super().__init__(payload.decode())
        self.payload = payload


def error_payload(
    error_type: str, message: str, stack: list[str] | None = None, request_id: str = ""
) -> bytes:
    """The payload of a function error, shaped as the Python runtime reports one."""
    body = {
        "errorMessage": message,
        "errorType": error_type,
        "requestId": request_id,
        "stackTrace": stack or [],
    }
    return json.dumps(body).encode()


def stack_trace(exc: BaseException, *, skip: tuple[str, ...] = ()) -> list[str]:
    """The handler's frames, as Lambda's ``stackTrace`` lists them (frames of ``skip`` files left out)."""
    skipped = {__file__, *skip}
    frames = [frame for frame in traceback.extract_tb(exc.__traceback__) if frame.filename not in skipped]
    return [line.rstrip("\n") for line in traceback.format_list(frames)]


def load_handler(handler: str, code_uri: str | None = None) -> Handler:
    """Import ``module.function`` (or ``module:function``) from ``code_uri`` (put on ``sys.path``).

    Raises
    ------
    HandlerUnavailable
        With ``Runtime.ImportModuleError`` or ``Runtime.HandlerNotFound``, as Lambda reports them.
    """
    module_name, sep, attribute = handler.partition(":")
    if not sep:
        module_name, _sep, attribute = handler.rpartition(".")
    if code_uri is not None and code_uri not in sys.path:
        sys.path.insert(0, code_uri)  # first, as Lambda puts /var/task first
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        message = f"Unable to import module '{module_name}': {exc}"
        raise HandlerUnavailable(
            error_payload("Runtime.ImportModuleError", message, stack_trace(exc))
        ) from exc
    function = getattr(module, attribute, None)
    if not callable(function):
        message = f"Handler '{attribute}' missing on module '{module_name}'"
        raise HandlerUnavailable(error_payload("Runtime.HandlerNotFound", message))
    return cast(Handler, function)


def call_handler(
    handler: Handler, payload: bytes | str | None, context: LambdaContext, log: Any = None
) -> tuple[bytes, str | None]:
    """Call ``handler`` with the JSON ``payload``; return the response payload and the function error
    (``None`` on success, else ``"Unhandled"`` with the error payload). ``log`` gets the traceback."""
    try:
        event = json.loads(payload) if payload not in (None, b"", "") else {}
    except (TypeError, ValueError) as exc:
        return error_payload("Runtime.UnmarshalError", f"Unable to unmarshal input: {exc}"), "Unhandled"
    try:
        result = handler(event, context)
    except SystemExit as exc:  # sys.exit() in a handler: the runtime process exits
        message = f"RequestId: {context.aws_request_id} Error: Runtime exited with exit status {exc.code}"
        return error_payload("Runtime.ExitError", message), "Unhandled"
    except Exception as exc:  # an unhandled error, reported as the Python runtime does
        stack = stack_trace(exc)
        print(f"[ERROR] {type(exc).__name__}: {exc}", file=log or sys.stdout)
        print("Traceback (most recent call last):", *stack, sep="\n", file=log or sys.stdout)
        return error_payload(type(exc).__name__, str(exc), stack, context.aws_request_id), "Unhandled"
    try:
        return json.dumps(result).encode(), None
    except (TypeError, ValueError) as exc:
        return error_payload("Runtime.MarshalError", f"Unable to marshal response: {exc}"), "Unhandled"


def timed_out_payload(request_id: str, timeout: float) -> bytes:
    """What Lambda reports for an invocation that ran past its function's timeout."""
    message = f"RequestId: {request_id} Error: Task timed out after {timeout:.2f} seconds"
    return error_payload("Sandbox.Timedout", message)
