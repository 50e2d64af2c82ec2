"""The local runtime: the real ASL and the real handlers, with no AWS account (design §5).

- **Step Functions** is moto's ASL interpreter (``mock_aws`` with ``execute_state_machine``). Each state
  machine of ``template.yaml`` is created from its ``DefinitionUri``, with ``DefinitionSubstitutions``
  resolved to local values (:mod:`leanopsctl.local.template`).
- **Lambda** runs in-process. For a Task, moto's interpreter builds a boto3 Lambda client
  (``asl/utils/boto_client.py``) and calls ``Invoke`` (``state_task/lambda_eval_utils.py``), both for a
  function-ARN ``Resource`` and for ``arn:aws:states:::lambda:invoke``. A ``before-call.lambda.Invoke``
  handler, registered on botocore's event system for every new session
  (``botocore.handlers.BUILTIN_HANDLERS``; ``mock_aws`` resets boto3's default session, so the interpreter's
  clients carry it), answers the call itself: it imports the handler the template names, sets the
  function's environment, calls it with a Lambda context and returns its JSON result, or
  ``FunctionError: Unhandled`` with ``errorType`` = the exception's class name, which Retry and Catch match
  as on AWS.
- **DynamoDB** calls pass through moto (``core.passthrough.services``) to DynamoDB Local, at the standard
  ``AWS_ENDPOINT_URL_DYNAMODB``: handlers have no local-mode branches.
- **Names**: every execution is named, and a name is claimed in the state table with a conditional write
  before the execution starts, so that two processes cannot run one execution id (design §5).
- **Output**: what handlers write to stdout (Powertools logs and EMF metrics) goes to a log file under
  ``$LEANOPS_HOME/logs`` or to a stream the caller picks, never to the process's stdout.

Examples
--------
>>> with LocalRuntime("template.yaml", table_name="leanops-state") as runtime:
...     arn = runtime.start("TopicRunStateMachine", {"topic": "vehicle_telemetry"}, name="run-1")
...     result = runtime.wait(arn, on_event=lambda event: print(event["type"], file=sys.stderr))
>>> result.status
'SUCCEEDED'
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, TextIO, cast

import boto3
import botocore.handlers
from botocore.awsrequest import AWSResponse
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError
from botocore.response import StreamingBody

from leanops.config import load_topics
from leanops.constants import DEFAULT_STATE_TABLE, ENV_CONFIG, ENV_DYNAMODB_ENDPOINT, ENV_STATE_TABLE
from leanops.errors import ConfigError, LocalRuntimeError
from leanops.protocol.dynamodb import DynamoDBStore
from leanopsctl.executions import (
    claim_execution_name,
    validate_execution_name,
)
from leanopsctl.local.dynamodb_local import resolve_home
from leanopsctl.local.invocation import (
    HandlerUnavailable,
    LambdaContext,
    call_handler,
    error_payload,
    load_handler,
    stack_trace,
)
from leanopsctl.local.template import (
    LOCAL_ACCOUNT_ID,
    LOCAL_REGION,
    FunctionSpec,
    Template,
    lambda_arn,
    read_template,
    render_definition,
)

if TYPE_CHECKING:
    from moto.core.config import DefaultConfig

logger = logging.getLogger(__name__)

#: The ``mock_aws`` configuration: run executions, let DynamoDB requests through to DynamoDB Local.
MOTO_CONFIG: DefaultConfig = {
    "stepfunctions": {"execute_state_machine": True},
    "core": {"passthrough": {"services": ["dynamodb"]}},
}
#: The role every local state machine runs as; moto only checks its shape.
LOCAL_ROLE_ARN = f"arn:aws:iam::{LOCAL_ACCOUNT_ID}:role/leanops-local-state-machine"
#: Where handler output goes by default: ``$LEANOPS_HOME/logs/<LOG_FILE_NAME>``.
LOG_DIR_NAME = "logs"
LOG_FILE_NAME = "functions.log"
POLL_INTERVAL_SECONDS = 0.05

_HOOK_ID = "leanops-local-lambda"


class ExecutionStatus(StrEnum):
    """Status of a Step Functions execution, as ``DescribeExecution`` reports it."""

    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    TIMED_OUT = "TIMED_OUT"
    ABORTED = "ABORTED"


@dataclass(frozen=True)
class ExecutionResult:
    """How an execution ended, with its full history."""

    execution_arn: str
    status: ExecutionStatus
    #: The execution's output, parsed from JSON; ``None`` unless it SUCCEEDED.
    output: Any
    error: str | None
    cause: str | None
    #: Every history event, as ``GetExecutionHistory`` returns them (oldest first).
    history: list[dict[str, Any]]
    #: Number of ``*StateEntered`` events: the state transitions a Standard workflow is billed for.
    states_entered: int

    @property
    def succeeded(self) -> bool:
        """Whether the execution SUCCEEDED."""
        return self.status is ExecutionStatus.SUCCEEDED


class LambdaServiceError(Exception):
    """A fault to :meth:`LocalRuntime.inject`: the Lambda *service* failed, so the handler never ran.

    The state machine sees the error ``Lambda.<code>`` (default ``Lambda.ServiceException``), the name a
    Retry on Lambda's transient errors lists.
    """

    def __init__(self, code: str = "ServiceException", message: str | None = None) -> None:
        super().__init__(message or f"Lambda service error ({code}), injected by the local runtime")
        self.code = code

    @property
    def error_type(self) -> str:
        """The error name Step Functions reports: ``Lambda.<code>``."""
        return f"Lambda.{self.code}"


#: A fault for :meth:`LocalRuntime.inject`: an exception (instance or class) raised instead of calling the
#: handler, or a callable run with ``(event, context)`` before the handler (raise to fail the invocation).
Fault = BaseException | type[BaseException] | Callable[[Any, LambdaContext], object]


# ------------------------------------------------------------------------------------------------------------
# Execution names
# ------------------------------------------------------------------------------------------------------------


# ------------------------------------------------------------------------------------------------------------
# Process-wide plumbing: the botocore hook, stdout routing, environment overlay
# ------------------------------------------------------------------------------------------------------------

_plumbing_lock = threading.RLock()
#: Runtimes inside their ``with`` block, innermost last; the innermost that knows a function serves it.
_active: list[LocalRuntime] = []
_thread_state = threading.local()


def _stash_invoke_params(params: dict[str, Any], context: dict[str, Any], **_: Any) -> None:
    """``before-parameter-build.lambda.Invoke``: keep the API parameters for :func:`_answer_invoke`."""
    context[_HOOK_ID] = dict(params)


def _answer_invoke(context: dict[str, Any], **_: Any) -> tuple[AWSResponse, dict[str, Any]] | None:
    """``before-call.lambda.Invoke``: answer the call in-process instead of sending it."""
    params = context.get(_HOOK_ID)
    if params is None:
        return None
    function_name = _function_name(str(params.get("FunctionName", "")))
    with _plumbing_lock:
        runtimes = list(reversed(_active))
    for runtime in runtimes:
        if function_name in runtime.template.functions:
            return runtime._dispatch(function_name, params.get("Payload"))
    if runtimes:
        return _client_error(
            404, "ResourceNotFoundException", f"Function not found: {params.get('FunctionName')}"
        )
    # A client made while a runtime was active, used after it ended (e.g. by an execution still running):
    # answer with an error rather than let the request leave for AWS.
    return _client_error(503, "ServiceException", "the local runtime serving Lambda has exited")


def _function_name(function: str) -> str:
    """The function name in a name, a partial ARN (``123456789012:function:Name``) or a full ARN."""
    parts = function.split(":")
    if function.startswith("arn:") and len(parts) >= 7:
        return parts[6]
    if len(parts) >= 3 and parts[1] == "function":
        return parts[2]
    return parts[0]


def _install_hook() -> None:
    hooks = (
        ("before-parameter-build.lambda.Invoke", _stash_invoke_params),
        ("before-call.lambda.Invoke", _answer_invoke),
    )
    for spec in hooks:
        if spec not in botocore.handlers.BUILTIN_HANDLERS:
            botocore.handlers.BUILTIN_HANDLERS.append(spec)
    # A default session made before now lacks the builtin handlers added above.
    session = boto3.DEFAULT_SESSION
    if session is not None:
        for event, handler in hooks:
            session._session.register(event, handler, unique_id=f"{_HOOK_ID}-{event}")


def _uninstall_hook() -> None:
    for spec in (
        ("before-parameter-build.lambda.Invoke", _stash_invoke_params),
        ("before-call.lambda.Invoke", _answer_invoke),
    ):
        with contextlib.suppress(ValueError):
            botocore.handlers.BUILTIN_HANDLERS.remove(spec)


class _StdoutRouter:
    """``sys.stdout`` while a runtime is active: keeps handler output off the process's stdout.

    A write goes to the invoking runtime's log when it comes from a handler (a thread-local mark), or from
    any thread other than the main thread and the thread that entered the runtime (moto runs tasks on
    threads of its own, and handlers may start threads, e.g. a lease heartbeat). Everything else goes to
    the stdout that was in place. Loggers created during an invocation keep a reference to this object;
    once no runtime is active it forwards to the current ``sys.stdout``.
    """

    def __init__(self) -> None:
        #: ``sys.stdout`` when the first runtime became active; put back when the last one ends.
        self.original: TextIO | None = None
        #: The stream most recently displaced (``original``, or one set later, e.g. by pytest's ``capsys``).
        self.displaced: TextIO | None = None

    def _target(self) -> TextIO:
        sink: TextIO | None = getattr(_thread_state, "sink", None)
        if sink is not None:
            return sink
        with _plumbing_lock:
            innermost = _active[-1] if _active else None
        current = threading.current_thread()
        if (
            innermost is not None
            and current is not threading.main_thread()
            and current is not innermost._owner_thread
        ):
            return innermost._sink
        if sys.stdout is not self:
            return sys.stdout
        for stream in (self.displaced, self.original, sys.__stdout__):
            if stream is not None and not getattr(stream, "closed", False):
                return stream
        return io.StringIO()  # nowhere left to write: drop it

    def write(self, text: str) -> int:
        return self._target().write(text)

    def writelines(self, lines: Any) -> None:
        self._target().writelines(lines)

    def flush(self) -> None:
        with contextlib.suppress(ValueError):  # a closed capture stream
            self._target().flush()

    def isatty(self) -> bool:
        return False

    def __getattr__(self, name: str) -> Any:
        return getattr(self._target(), name)


_ROUTER = _StdoutRouter()


_in_flight = 0


def _begin_invocation() -> None:
    """Count a running invocation, and make :data:`_ROUTER` ``sys.stdout`` again if it was replaced.

    Something may have set ``sys.stdout`` after the runtime started (e.g. pytest's ``capsys``).
    """
    global _in_flight
    with _plumbing_lock:
        _in_flight += 1
        if sys.stdout is not _ROUTER:
            if _ROUTER.original is None:
                _ROUTER.original = sys.stdout
            _ROUTER.displaced = sys.stdout
            sys.stdout = _ROUTER


def _end_invocation() -> None:
    global _in_flight
    with _plumbing_lock:
        _in_flight -= 1
    _restore_stdout_if_idle()


def _restore_stdout_if_idle() -> None:
    """Put the original ``sys.stdout`` back once no runtime is active and no handler still runs.

    A handler can outlive its runtime (a task that timed out runs on, as on Lambda): until it returns, its
    output must still be kept off stdout.
    """
    with _plumbing_lock:
        if _active or _in_flight:
            return
        if sys.stdout is _ROUTER:
            sys.stdout = _ROUTER.original or sys.__stdout__
        _ROUTER.original = _ROUTER.displaced = None


class _EnvironmentOverlay:
    """Set environment variables for overlapping invocations; restore the originals when the last ends.

    ``os.environ`` is process-wide, and invocations may overlap (concurrent executions, Map states): a key
    keeps the value of the most recent invocation still running, then its original value.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._layers: dict[int, dict[str, str]] = {}
        self._originals: dict[str, str | None] = {}
        self._next = 0

    def push(self, variables: Mapping[str, str]) -> int:
        with self._lock:
            self._next += 1
            for key in variables:
                if not any(key in layer for layer in self._layers.values()):
                    self._originals[key] = os.environ.get(key)
            self._layers[self._next] = dict(variables)
            os.environ.update(variables)
            return self._next

    def pop(self, token: int) -> None:
        with self._lock:
            layer = self._layers.pop(token, {})
            for key in layer:
                remaining = [values[key] for _, values in sorted(self._layers.items()) if key in values]
                if remaining:
                    os.environ[key] = remaining[-1]
                    continue
                original = self._originals.pop(key, None)
                if original is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = original


_ENVIRONMENT = _EnvironmentOverlay()


class _FileSink:
    """The function log file, appended to line by line.

    A handler can outlive its runtime (a task that timed out runs on, as on Lambda); once the runtime has
    closed the file, its late lines still reach the file, which is opened for each of them.
    """

    encoding = "utf-8"

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._file: TextIO | None = path.open("a", buffering=1, encoding="utf-8")

    def write(self, text: str) -> int:
        with self._lock:
            if self._file is not None:
                return self._file.write(text)
            with self.path.open("a", encoding="utf-8") as late:
                return late.write(text)

    def writelines(self, lines: Any) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        with self._lock:
            if self._file is not None:
                self._file.flush()

    def isatty(self) -> bool:
        return False

    def close(self) -> None:
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None


@contextlib.contextmanager
def _scaled_retry_sleeps(scale: float) -> Iterator[None]:
    """Scale the real sleeps of moto's Retry (``retrier_decl.time.sleep``) by ``scale`` (tests only)."""
    if scale == 1.0:
        yield
        return
    from moto.stepfunctions.parser.asl.component.common.retry import retrier_decl

    class _ScaledTime:
        def __getattr__(self, name: str) -> Any:
            return getattr(time, name)

        @staticmethod
        def sleep(seconds: float) -> None:
            time.sleep(seconds * scale)

    original = retrier_decl.time
    retrier_decl.time = _ScaledTime()  # type: ignore[assignment]
    try:
        yield
    finally:
        retrier_decl.time = original


def _client_error(status: int, code: str, message: str) -> tuple[AWSResponse, dict[str, Any]]:
    """A Lambda API error response: botocore raises it as a ``ClientError``."""
    parsed = {
        "Error": {"Code": code, "Message": message},
        "ResponseMetadata": {"HTTPStatusCode": status, "RequestId": str(uuid.uuid4())},
    }
    return AWSResponse("https://lambda.local/", status, {}, None), parsed


def _invoke_response(
    payload: bytes, request_id: str, function_error: str | None
) -> tuple[AWSResponse, dict[str, Any]]:
    """A successful ``Invoke`` response (HTTP 200), carrying a function error or not, as Lambda answers."""
    headers = {"x-amzn-RequestId": request_id, "X-Amz-Executed-Version": "$LATEST"}
    parsed: dict[str, Any] = {
        "StatusCode": 200,
        "ExecutedVersion": "$LATEST",
        "Payload": StreamingBody(io.BytesIO(payload), len(payload)),
        "ResponseMetadata": {"HTTPStatusCode": 200, "RequestId": request_id, "HTTPHeaders": headers},
    }
    if function_error is not None:
        parsed["FunctionError"] = function_error
    return AWSResponse("https://lambda.local/", 200, headers, None), parsed


# ------------------------------------------------------------------------------------------------------------
# The runtime
# ------------------------------------------------------------------------------------------------------------


@dataclass
class _PendingFault:
    fault: Fault
    remaining: int


class LocalRuntime:
    """Run the template's state machines locally: moto's interpreter, in-process Lambda, DynamoDB Local.

    Parameters
    ----------
    template
        The SAM template (path or :class:`~leanopsctl.local.template.Template`).
    table_name
        Local name of the state table: the value of ``LEANOPS_STATE_TABLE`` in the functions' environment
        (the table it references resolves to it) and where execution names are claimed. Default:
        ``$LEANOPS_STATE_TABLE``, else ``leanops-state``.
    log_to
        Where handlers' stdout (and the interpreter's log) goes: a file path (appended to; its folder is
        created), or a text stream such as ``sys.stderr``. Default: ``$LEANOPS_HOME/logs/functions.log``.
    timeouts
        Function timeouts in seconds overriding the template's, by logical id (tests of deadlines).
    refs
        Local values for other ``Ref``/``Fn::GetAtt`` keys (see :meth:`Template.local_refs`).
    environment
        Extra environment variables for every function, over the template's.
    dynamodb_endpoint
        DynamoDB Local's URL; default ``$AWS_ENDPOINT_URL_DYNAMODB``, which must then be set (the runtime
        never lets a DynamoDB request leave for AWS).
    retry_delay_scale
        Multiplies the real sleeps of Retry (``IntervalSeconds``, backoff); e.g. ``0.01`` in tests.
    enforce_timeouts
        Report an invocation that ran longer than its function's timeout as Lambda does
        (``Sandbox.Timedout``), whatever it returned. The handler cannot be stopped in-process; it runs on.
    """

    def __init__(
        self,
        template: Path | str | Template = "template.yaml",
        *,
        table_name: str | None = None,
        log_to: Path | str | TextIO | None = None,
        timeouts: Mapping[str, float] | None = None,
        refs: Mapping[str, str] | None = None,
        environment: Mapping[str, str] | None = None,
        dynamodb_endpoint: str | None = None,
        retry_delay_scale: float = 1.0,
        enforce_timeouts: bool = True,
    ) -> None:
        self.template = template if isinstance(template, Template) else read_template(template)
        self.table_name = table_name or os.environ.get(ENV_STATE_TABLE) or DEFAULT_STATE_TABLE
        self._log_to = log_to
        self._timeouts: dict[str, float] = {}
        for logical_id, seconds in (timeouts or {}).items():
            self.set_timeout(logical_id, seconds)
        self._extra_env = dict(environment or {})
        self._dynamodb_endpoint = dynamodb_endpoint
        self._retry_delay_scale = retry_delay_scale
        self._enforce_timeouts = enforce_timeouts

        self.refs = self.template.local_refs(
            {**self.template.table_refs(self.table_name), **dict(refs or {})}
        )
        self._faults: dict[str, list[_PendingFault]] = {}
        self._invocations: dict[str, int] = {}
        self._lock = threading.Lock()
        self._state_machine_arns: dict[str, str] = {}
        self._variants: dict[str, str] = {}
        self._started: list[str] = []
        self._exit_stack: contextlib.ExitStack | None = None
        self._sink: TextIO = sys.stderr
        self._owner_thread: threading.Thread | None = None
        self._sfn: Any = None
        self._ddb: Any = None
        self._pushed_text: bytes | None = None

    # -- lifecycle ---------------------------------------------------------------------------------------

    def __enter__(self) -> LocalRuntime:
        if self._exit_stack is not None:
            raise LocalRuntimeError("this LocalRuntime is already running")
        stack = contextlib.ExitStack()
        try:
            self._enter(stack)
        except BaseException:
            stack.close()
            raise
        self._exit_stack = stack
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        stack, self._exit_stack = self._exit_stack, None
        if stack is None:
            return
        with stack:
            self._stop_running_executions()

    def _stop_running_executions(self) -> None:
        """Abort executions still running, so that none goes on once moto and the Lambda hook are gone."""
        for execution_arn in self._started:
            with contextlib.suppress(ClientError, BotoCoreError):
                if self._sfn.describe_execution(executionArn=execution_arn)["status"] == "RUNNING":
                    self._sfn.stop_execution(
                        executionArn=execution_arn,
                        error="LocalRuntimeExited",
                        cause="the local runtime ended",
                    )

    def _enter(self, stack: contextlib.ExitStack) -> None:
        from moto import mock_aws  # a dependency of the local runtime only, never of the Lambda functions

        stack.enter_context(_patched_environ(self._process_environment()))
        self._sink = self._open_sink(stack)
        stack.enter_context(_interpreter_log_to(self._sink))
        stack.enter_context(mock_aws(config=MOTO_CONFIG))
        stack.enter_context(_scaled_retry_sleeps(self._retry_delay_scale))
        self._owner_thread = threading.current_thread()
        stack.enter_context(self._activated())

        session = boto3.session.Session(region_name=LOCAL_REGION)
        config = Config(retries={"total_max_attempts": 1}, proxies={})
        # An explicit AWS endpoint: a stray AWS_ENDPOINT_URL must not send these calls past moto.
        self._sfn = session.client(
            "stepfunctions", endpoint_url=f"https://states.{LOCAL_REGION}.amazonaws.com", config=config
        )
        self._ddb = session.client(
            "dynamodb", config=Config(connect_timeout=2, read_timeout=10, retries={"total_max_attempts": 3})
        )
        for spec in self.template.state_machines.values():
            self._state_machine_arns[spec.logical_id] = self._create_state_machine(
                spec.logical_id, render_definition(spec, self.refs)
            )
        self._push_topics()

    def _process_environment(self) -> dict[str, str | None]:
        """Variables set while the runtime is active: dummy credentials when none, no proxy for 127.0.0.1."""
        endpoint = self._dynamodb_endpoint or os.environ.get(ENV_DYNAMODB_ENDPOINT)
        if not endpoint:
            raise LocalRuntimeError(
                f"{ENV_DYNAMODB_ENDPOINT} is not set: the local runtime needs DynamoDB Local "
                "(start it with `leanops local up`) and never sends DynamoDB requests to AWS"
            )
        env: dict[str, str | None] = {ENV_DYNAMODB_ENDPOINT: endpoint, "AWS_EC2_METADATA_DISABLED": "true"}
        if not (os.environ.get("AWS_ACCESS_KEY_ID") and os.environ.get("AWS_SECRET_ACCESS_KEY")):
            env.update(AWS_ACCESS_KEY_ID="test", AWS_SECRET_ACCESS_KEY="test", AWS_SESSION_TOKEN=None)
        if not (os.environ.get("AWS_DEFAULT_REGION") or os.environ.get("AWS_REGION")):
            env.update(AWS_DEFAULT_REGION=LOCAL_REGION, AWS_REGION=LOCAL_REGION)
        for key in ("NO_PROXY", "no_proxy"):
            hosts = [host for host in os.environ.get(key, "").split(",") if host]
            env[key] = ",".join([*hosts, *(h for h in ("127.0.0.1", "localhost") if h not in hosts)])
        return env

    def _open_sink(self, stack: contextlib.ExitStack) -> TextIO:
        log_to = self._log_to
        if log_to is None:
            log_to = resolve_home() / LOG_DIR_NAME / LOG_FILE_NAME
        if isinstance(log_to, str | Path):
            path = Path(log_to)
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                sink = _FileSink(path)
            except OSError as exc:
                raise LocalRuntimeError(
                    f"cannot open the function log {path}: {exc.strerror or exc}"
                ) from exc
            stack.callback(sink.close)
            return cast(TextIO, sink)
        return log_to

    @contextlib.contextmanager
    def _activated(self) -> Iterator[None]:
        with _plumbing_lock:
            if not _active:
                _install_hook()
            if sys.stdout is not _ROUTER:
                _ROUTER.original = _ROUTER.original or sys.stdout
                _ROUTER.displaced = sys.stdout
                sys.stdout = _ROUTER
            _active.append(self)
        try:
            yield
        finally:
            with _plumbing_lock:
                _active.remove(self)
                if not _active:
                    _uninstall_hook()
            _restore_stdout_if_idle()

    def _create_state_machine(self, name: str, definition: str) -> str:
        try:
            arn: str = self._sfn.create_state_machine(
                name=name, definition=definition, roleArn=LOCAL_ROLE_ARN
            )["stateMachineArn"]
            # moto returns an existing machine of that name unchanged (another runtime in this process).
            if self._sfn.describe_state_machine(stateMachineArn=arn)["definition"] != definition:
                self._sfn.update_state_machine(stateMachineArn=arn, definition=definition)
        except ClientError as exc:
            message = exc.response.get("Error", {}).get("Message", str(exc))
            raise ConfigError(f"the definition of {name} is not valid ASL: {message}") from exc
        return arn

    def _require_running(self) -> None:
        if self._exit_stack is None:
            raise LocalRuntimeError("the LocalRuntime is not running: use it in a `with` block")

    # -- configuration -----------------------------------------------------------------------------------

    def state_machine_arn(self, logical_id: str) -> str:
        """The local ARN of the template's state machine ``logical_id`` (or of one :meth:`add_state_machine`
        created)."""
        if logical_id in self._variants:
            return self._variants[logical_id]
        self.template.state_machine(logical_id)
        return self._state_machine_arns.get(logical_id) or self.refs[logical_id]

    def definition(self, logical_id: str) -> dict[str, Any]:
        """The ASL of the template's state machine ``logical_id`` as this runtime runs it (its
        ``DefinitionSubstitutions`` resolved to local ARNs)."""
        return dict(json.loads(render_definition(self.template.state_machine(logical_id), self.refs)))

    def add_state_machine(self, name: str, definition: Mapping[str, Any]) -> str:
        """Create a state machine that the template does not hold (a variant to measure, e.g. built around
        :meth:`definition`); :meth:`start` and :meth:`run` then take ``name``. Returns its ARN."""
        self._require_running()
        self._variants[name] = self._create_state_machine(name, json.dumps(definition))
        return self._variants[name]

    def function_arn(self, logical_id: str) -> str:
        """The local ARN of the template's function ``logical_id``."""
        self.template.function(logical_id)
        return lambda_arn(logical_id)

    def set_timeout(self, function_logical_id: str, seconds: float) -> None:
        """Override the timeout (seconds) of a function: its context's deadline, and the timeout enforced."""
        self.template.function(function_logical_id)
        if seconds <= 0:
            raise ConfigError(f"timeout of {function_logical_id} must be positive, not {seconds!r}")
        self._timeouts[function_logical_id] = float(seconds)

    def timeout(self, function_logical_id: str) -> float:
        """The timeout in seconds that invocations of ``function_logical_id`` get."""
        spec = self.template.function(function_logical_id)
        return self._timeouts.get(function_logical_id, float(spec.timeout))

    def inject(self, function_logical_id: str, fault: Fault, times: int = 1) -> None:
        """Make the next ``times`` invocations of a function fail (or first run ``fault``).

        ``fault`` is an exception (instance or class), raised instead of calling the handler, so the state
        machine sees its class name as the error (a :class:`LambdaServiceError` shows as
        ``Lambda.ServiceException``); or a callable run with ``(event, context)`` before the handler: if it
        raises, the invocation fails with that exception, otherwise the handler then runs (e.g. to stall or
        to change the table first). Faults queue up in the order injected.
        """
        self.template.function(function_logical_id)
        if times < 1:
            raise ConfigError(f"times must be at least 1, not {times}")
        with self._lock:
            self._faults.setdefault(function_logical_id, []).append(_PendingFault(fault, times))

    def invocations(self, function_logical_id: str) -> int:
        """How many times ``function_logical_id`` was invoked through this runtime (faults included)."""
        with self._lock:
            return self._invocations.get(function_logical_id, 0)

    # -- executions --------------------------------------------------------------------------------------

    def start(self, state_machine_logical_id: str, input: Mapping[str, Any], name: str) -> str:
        """Start an execution named ``name`` and return its ARN; it runs on a background thread.

        The name is claimed first in the state table (:func:`claim_execution_name`), across processes.

        Raises
        ------
        ConfigError
            Unknown state machine, invalid name, or a name already used by an execution of that machine.
        """
        self._require_running()
        arn = self.state_machine_arn(state_machine_logical_id)
        validate_execution_name(name)
        try:
            payload = json.dumps(input)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"the execution input is not JSON: {exc}") from exc
        execution_arn = arn.replace(":stateMachine:", ":execution:", 1) + f":{name}"
        self._push_topics()
        claim_execution_name(
            self._ddb, self.table_name, state_machine_logical_id, name, execution_arn=execution_arn
        )
        try:
            response = self._sfn.start_execution(stateMachineArn=arn, name=name, input=payload)
        except ClientError as exc:
            raise LocalRuntimeError(
                f"could not start execution {name!r} of {state_machine_logical_id}: {exc}"
            ) from exc
        started = str(response["executionArn"])
        self._started.append(started)
        return started

    def _push_topics(self) -> None:
        """The functions' topics file (their ``LEANOPS_CONFIG``), pushed to the table as the local stack
        pushes its project's (decision 0013): the file as it is now is what the execution runs by."""
        config = self._extra_env.get(ENV_CONFIG) or os.environ.get(ENV_CONFIG)
        if not config or not Path(config).is_file():
            return
        text = Path(config).read_bytes()
        if text == self._pushed_text:  # pushed as it is: no request (benchmarks count a run's requests)
            return
        from leanopsctl import push  # the control plane's, imported when a runtime starts an execution

        store = DynamoDBStore(self.table_name, self._ddb)
        with push.push_lease(store, push.local_actor()):
            push.apply(push.plan(load_topics(config), store), store, actor=push.local_actor(), prune=True)
        self._pushed_text = text

    def wait(
        self,
        execution_arn: str,
        on_event: Callable[[dict[str, Any]], object] | None = None,
        *,
        timeout: float | None = None,
    ) -> ExecutionResult:
        """Wait until the execution ends; pass each new history event to ``on_event`` as it appears.

        Polls the history every 50 ms. ``timeout`` (seconds) bounds the wait, not the execution.

        Raises
        ------
        LocalRuntimeError
            ``timeout`` passed while the execution was still running.
        """
        self._require_running()
        deadline = None if timeout is None else time.monotonic() + timeout
        seen = 0
        while True:
            # Status first: once it is terminal, the history read after it is complete.
            described = self._sfn.describe_execution(executionArn=execution_arn)
            status = ExecutionStatus(described["status"])
            history = self._history(execution_arn)
            if on_event is not None:
                for event in history[seen:]:
                    on_event(event)
            seen = len(history)
            if status is not ExecutionStatus.RUNNING:
                break
            if deadline is not None and time.monotonic() >= deadline:
                raise LocalRuntimeError(f"execution {execution_arn} still running after {timeout:g} s")
            time.sleep(POLL_INTERVAL_SECONDS)
        output = described.get("output")
        return ExecutionResult(
            execution_arn=execution_arn,
            status=status,
            output=json.loads(output) if output is not None else None,
            error=described.get("error"),
            cause=described.get("cause"),
            history=history,
            states_entered=sum(1 for event in history if str(event["type"]).endswith("StateEntered")),
        )

    def run(
        self,
        state_machine_logical_id: str,
        input: Mapping[str, Any],
        name: str,
        on_event: Callable[[dict[str, Any]], object] | None = None,
        *,
        timeout: float | None = None,
    ) -> ExecutionResult:
        """:meth:`start` then :meth:`wait`."""
        return self.wait(self.start(state_machine_logical_id, input, name), on_event, timeout=timeout)

    def stop(self, execution_arn: str, error: str | None = None, cause: str | None = None) -> None:
        """Abort a running execution (its status becomes ABORTED)."""
        self._require_running()
        arguments = {"executionArn": execution_arn}
        arguments.update({k: v for k, v in (("error", error), ("cause", cause)) if v is not None})
        self._sfn.stop_execution(**arguments)

    def _history(self, execution_arn: str) -> list[dict[str, Any]]:
        events: list[dict[str, Any]] = []
        arguments: dict[str, Any] = {"executionArn": execution_arn}
        while True:
            page = self._sfn.get_execution_history(**arguments)
            events.extend(page["events"])
            if not page.get("nextToken"):
                return events
            arguments["nextToken"] = page["nextToken"]

    # -- Lambda, in-process ------------------------------------------------------------------------------

    def invoke(self, function_logical_id: str, event: Any) -> Any:
        """Invoke a function directly, as a Task would, and return its JSON result.

        Raises
        ------
        LocalRuntimeError
            The invocation ended in a function error; the message is ``<errorType>: <errorMessage>``.
        """
        self._require_running()
        _http, parsed = self._dispatch(function_logical_id, json.dumps(event).encode())
        body = json.loads(parsed["Payload"].read())
        if parsed.get("FunctionError"):
            raise LocalRuntimeError(f"{body.get('errorType')}: {body.get('errorMessage')}")
        return body

    def _dispatch(self, logical_id: str, payload: Any) -> tuple[AWSResponse, dict[str, Any]]:
        """Run one invocation of ``logical_id`` and build the ``Invoke`` response."""
        spec = self.template.function(logical_id)
        request_id = str(uuid.uuid4())
        timeout = self.timeout(logical_id)
        started = time.monotonic()
        context = LambdaContext(
            function_name=logical_id,
            function_version="$LATEST",
            invoked_function_arn=lambda_arn(logical_id),
            memory_limit_in_mb=spec.memory_size,
            aws_request_id=request_id,
            log_group_name=f"/aws/lambda/{logical_id}",
            log_stream_name=f"{datetime.now(UTC):%Y/%m/%d}/[$LATEST]{uuid.uuid4().hex}",
            deadline=started + timeout,
        )
        with self._lock:
            self._invocations[logical_id] = self._invocations.get(logical_id, 0) + 1
            fault = self._next_fault(logical_id)

        sink = self._sink
        environment = self._function_environment(spec)
        previous_sink = getattr(_thread_state, "sink", None)
        _begin_invocation()
        try:
            _thread_state.sink = sink
            token = _ENVIRONMENT.push(environment)
            try:
                print(f"START RequestId: {request_id} Function: {logical_id} Version: $LATEST", file=sink)
                result_payload, function_error = self._call(spec, payload, context, fault)
            finally:
                _ENVIRONMENT.pop(token)
        finally:
            _thread_state.sink = previous_sink
            _end_invocation()
        elapsed = time.monotonic() - started
        if self._enforce_timeouts and elapsed > timeout:
            message = f"RequestId: {request_id} Error: Task timed out after {timeout:.2f} seconds"
            result_payload, function_error = error_payload("Sandbox.Timedout", message), "Unhandled"
        print(f"END RequestId: {request_id}", file=sink)
        print(
            f"REPORT RequestId: {request_id}\tDuration: {elapsed * 1000:.2f} ms\t"
            f"Memory Size: {spec.memory_size} MB\tStatus: {'error' if function_error else 'ok'}",
            file=sink,
        )
        return _invoke_response(result_payload, request_id, function_error)

    def _next_fault(self, logical_id: str) -> Fault | None:
        queue = self._faults.get(logical_id)
        if not queue:
            return None
        pending = queue[0]
        pending.remaining -= 1
        if pending.remaining <= 0:
            queue.pop(0)
        return pending.fault

    def _function_environment(self, spec: FunctionSpec) -> dict[str, str]:
        env = self.template.function_environment(spec, self.refs, self.table_name)
        env.update(self._extra_env)
        env.update(AWS_REGION=LOCAL_REGION, AWS_DEFAULT_REGION=LOCAL_REGION)
        return env

    def _call(
        self, spec: FunctionSpec, payload: Any, context: LambdaContext, fault: Fault | None
    ) -> tuple[bytes, str | None]:
        """Run the injected fault, if any, then the handler; return the response payload and the function
        error (``None`` on success)."""
        if isinstance(fault, LambdaServiceError):
            # The service failed before any code ran: no stack, Step Functions' Lambda.* name.
            return error_payload(fault.error_type, str(fault)), "Unhandled"
        if fault is not None:
            try:
                if isinstance(fault, BaseException) or (
                    isinstance(fault, type) and issubclass(fault, BaseException)
                ):
                    raise fault
                event = json.loads(payload) if payload not in (None, b"", "") else {}
                cast(Callable[[Any, LambdaContext], object], fault)(event, context)
            except LambdaServiceError as exc:
                return error_payload(exc.error_type, str(exc)), "Unhandled"
            except Exception as exc:
                stack = stack_trace(exc, skip=(__file__,))
                return error_payload(type(exc).__name__, str(exc), stack, context.aws_request_id), "Unhandled"
        try:
            handler = load_handler(spec.handler, None if spec.code_uri is None else str(spec.code_uri))
        except HandlerUnavailable as exc:
            return exc.payload, "Unhandled"
        return call_handler(handler, payload, context, log=self._sink)


@contextlib.contextmanager
def _patched_environ(values: Mapping[str, str | None]) -> Iterator[None]:
    """Set (or, for ``None``, remove) environment variables, and restore them afterwards."""
    saved = {key: os.environ.get(key) for key in values}
    try:
        for key, value in values.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        yield
    finally:
        for key, old in saved.items():
            if old is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = old


@contextlib.contextmanager
def _interpreter_log_to(sink: TextIO) -> Iterator[None]:
    """Send moto's interpreter log (it logs every caught task failure at ERROR) to the function log."""
    interpreter = logging.getLogger("moto.stepfunctions.parser")
    handler = logging.StreamHandler(sink)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    propagate = interpreter.propagate
    interpreter.addHandler(handler)
    interpreter.propagate = False
    try:
        yield
    finally:
        interpreter.removeHandler(handler)
        interpreter.propagate = propagate
