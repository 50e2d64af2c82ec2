"""Warm worker pools: the local stack's Lambda execution environments, one pool per function (design §5).

As on Lambda:
- an environment runs one invocation at a time and stays warm for the next;
- INIT (importing the handler) is bounded on its own (:data:`INIT_TIMEOUT_SECONDS`), never counted in the
  handler's timeout;
- an invocation that overruns its function's timeout is reported as ``Sandbox.Timedout`` and its
  environment is destroyed (the process is killed, so a stuck handler cannot linger or write late);
- a function runs at most ``concurrency`` invocations at once. Beyond that an invocation waits for an
  environment (Lambda would throttle and Step Functions retry; waiting is the same outcome, without a
  retry's delay), up to :data:`QUEUE_TIMEOUT_SECONDS`, then fails with ``Lambda.TooManyRequestsException``.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from leanopsctl.local.invocation import error_payload, timed_out_payload
from leanopsctl.local.worker import ENV_WORKER

#: Seconds an environment may take to import its handler (Lambda allows 10 s; a loaded 2-core machine
#: importing pyarrow and Powertools needs more).
INIT_TIMEOUT_SECONDS = 120.0
#: Seconds an invocation may wait for a free environment of its function.
QUEUE_TIMEOUT_SECONDS = 600.0
#: Environments per function when the stack does not say.
DEFAULT_CONCURRENCY = 4


@dataclass(frozen=True)
class Invocation:
    """What one invocation returned: the payload, and the function error (``None`` when it succeeded)."""

    payload: bytes
    function_error: str | None
    request_id: str


@dataclass(frozen=True)
class FunctionDefinition:
    """What a pool needs of a function: its handler, code, environment, timeout and memory."""

    name: str
    arn: str
    handler: str
    timeout: float
    memory_size: int
    environment: Mapping[str, str]
    code_uri: str | None = None
    #: The working directory of its environments (Lambda's is the package, ``/var/task``).
    cwd: str | None = None


class _Environment:
    """One worker process, INIT done."""

    def __init__(self, process: subprocess.Popen[bytes], answers: IO[bytes], generation: int) -> None:
        self.process = process
        self.answers = answers
        self.generation = generation

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            self.process.kill()
        self.process.wait()
        self.answers.close()
        if self.process.stdin is not None:
            with contextlib.suppress(OSError):
                self.process.stdin.close()


class FunctionPool:
    """The warm environments of one function. Thread-safe: every Step Functions task thread calls
    :meth:`invoke`."""

    def __init__(
        self,
        function: FunctionDefinition,
        *,
        log: Path,
        concurrency: int = DEFAULT_CONCURRENCY,
        unset: tuple[str, ...] = (),
    ) -> None:
        if concurrency < 1:
            raise ValueError(f"concurrency must be at least 1, not {concurrency}")
        self.function = function
        self.log = log
        #: Variables of this process that its environments must not inherit.
        self.unset = unset
        self.concurrency = concurrency
        self._idle: list[_Environment] = []
        self._busy = 0
        self._generation = 0
        self._closed = False
        self._changed = threading.Condition()
        self.cold_starts = 0

    def recycle(self) -> None:
        """Retire every environment (idle ones now, busy ones when they finish): the next invocations
        INIT again, e.g. with an edited topics file or processor."""
        with self._changed:
            self._generation += 1
            retired, self._idle = self._idle, []
        for environment in retired:
            environment.kill()

    def close(self) -> None:
        with self._changed:
            self._closed = True
            retired, self._idle = self._idle, []
            self._changed.notify_all()
        for environment in retired:
            environment.kill()

    def invoke(self, payload: bytes) -> Invocation:
        request_id = str(uuid.uuid4())
        environment = self._take(request_id)
        if isinstance(environment, Invocation):
            return environment
        keep = False
        try:
            result, keep = self._run(environment, request_id, payload)
            return result
        finally:
            self._give_back(environment if keep else None, environment)

    # -- environments ------------------------------------------------------------------------------------

    def _take(self, request_id: str) -> _Environment | Invocation:
        deadline = time.monotonic() + QUEUE_TIMEOUT_SECONDS
        with self._changed:
            while not self._closed and not self._idle and self._busy >= self.concurrency:
                if not self._changed.wait(timeout=deadline - time.monotonic()):
                    message = f"{self.function.name}: no free environment in {QUEUE_TIMEOUT_SECONDS:g} s"
                    return Invocation(
                        error_payload("Lambda.TooManyRequestsException", message), "Unhandled", request_id
                    )
            if self._closed:
                return Invocation(
                    error_payload("Lambda.ServiceException", "the local stack is stopping"),
                    "Unhandled",
                    request_id,
                )
            self._busy += 1
            dead = []
            while self._idle:
                environment = self._idle.pop()
                if environment.process.poll() is None:
                    break
                dead.append(environment)  # died while idle (killed from outside): never hand it out
            else:
                environment = None
            generation = self._generation
        for gone in dead:
            gone.kill()
        if environment is not None:
            return environment
        try:
            started = self._start(generation)
        except BaseException:
            self._give_back(None, None)
            raise
        if isinstance(started, bytes):
            self._give_back(None, None)
            return Invocation(started, "Unhandled", request_id)
        return started

    def _give_back(self, keep: _Environment | None, used: _Environment | None) -> None:
        with self._changed:
            self._busy -= 1
            stale = keep is not None and (keep.generation != self._generation or self._closed)
            if keep is not None and not stale:
                self._idle.append(keep)
            self._changed.notify()
        if used is not None and (keep is None or stale):
            used.kill()

    def _start(self, generation: int) -> _Environment | bytes:
        """A new environment, INIT done; or the error payload of a failed INIT."""
        spec = {
            "handler": self.function.handler,
            "code_uri": self.function.code_uri,
            "function_name": self.function.name,
            "function_arn": self.function.arn,
            "memory_size": self.function.memory_size,
            "stack_pid": os.getpid(),
        }
        read_end, write_end = os.pipe()
        spec["channel_fd"] = write_end  # kept open, at the same number, in the worker (pass_fds)
        env = {
            **{k: v for k, v in os.environ.items() if k not in self.unset},
            **self.function.environment,
            ENV_WORKER: json.dumps(spec),
            "PYTHONUNBUFFERED": "1",
        }
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with self.log.open("ab") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", "leanopsctl.local.worker"],
                stdin=subprocess.PIPE,
                stdout=log,
                stderr=log,
                env=env,
                cwd=self.function.cwd,
                pass_fds=(write_end,),
            )
        os.close(write_end)
        answers = os.fdopen(read_end, "rb")
        environment = _Environment(process, answers, generation)
        self.cold_starts += 1
        message = _read_line(answers, INIT_TIMEOUT_SECONDS)
        if message is None or message is EXITED or not message.get("ready"):
            environment.kill()
            if message is not None and "init_error" in message:
                return str(message["init_error"]).encode()
            reason = "timed out" if message is None else f"exited ({process.returncode})"
            text = f"{self.function.name}: INIT {reason} (limit {INIT_TIMEOUT_SECONDS:g} s; see {self.log})"
            return error_payload("Runtime.InitError", text)
        return environment

    def _run(self, environment: _Environment, request_id: str, payload: bytes) -> tuple[Invocation, bool]:
        """One invocation; also whether the environment may serve the next one."""
        request = {"request_id": request_id, "payload": payload.decode(), "timeout": self.function.timeout}
        assert environment.process.stdin is not None
        try:
            environment.process.stdin.write((json.dumps(request) + "\n").encode())
            environment.process.stdin.flush()
        except (BrokenPipeError, OSError):
            message = f"RequestId: {request_id} Error: Runtime exited before the invocation"
            return Invocation(error_payload("Runtime.ExitError", message), "Unhandled", request_id), False
        answer = _read_line(environment.answers, self.function.timeout)
        if answer is None or answer is EXITED:
            environment.kill()  # overran, or died: as Lambda, the environment goes with it
        if answer is None:
            payload = timed_out_payload(request_id, self.function.timeout)
            return Invocation(payload, "Unhandled", request_id), False
        if answer is EXITED:
            code = environment.process.returncode
            how = f"signal {-code}" if code is not None and code < 0 else f"exit status {code}"
            message = f"RequestId: {request_id} Error: Runtime exited with error: {how}"
            return Invocation(error_payload("Runtime.ExitError", message), "Unhandled", request_id), False
        error = answer.get("function_error")
        return Invocation(str(answer["payload"]).encode(), error, request_id), True


#: What :func:`_read_line` returns when the worker is gone (end of its answer pipe).
EXITED: dict[str, Any] = {"exited": True}


def _read_line(stream: IO[bytes], timeout: float) -> dict[str, Any] | None:
    """The next JSON line of ``stream`` within ``timeout`` seconds: ``None`` on timeout, :data:`EXITED` at the
    end of the stream (the worker died)."""
    ready, _, _ = select.select([stream], [], [], max(0.0, timeout))
    if not ready:
        return None
    line = stream.readline()
    if not line:
        return EXITED
    message: dict[str, Any] = json.loads(line)
    return message
