"""Processor isolation (decision 0012): a topic's processor runs in a child process of the process task that
holds neither the state table's credentials, name or endpoint, nor the leanops objects that write state.

The parent reads the source, sends the batch's records and the context's data to the child, takes the output
and the rejections back, and writes the sink and (through the advance task) the state itself. The child:

- is started with ``subprocess`` (a fresh interpreter: no fork of a process holding boto3 clients and
  credentials) and an environment scrubbed of AWS credentials, endpoints and leanops' own settings;
- gets, in AWS, temporary credentials of ``ProcessorRole`` narrowed by a session policy built from the
  topic's source and sink (:func:`session_policy`); locally, dummy credentials, the same session policy
  enforced by ``leanopsctl.local.iam`` when it is importable, and no DynamoDB endpoint;
- refuses, through an audit hook it cannot remove, file writes outside its own scratch folder and starting
  processes (a tripwire against mistakes and naive code, not a sandbox: see the decision record);
- stays warm for its topic across batches and invocations (at most :data:`MAX_WARM_CHILDREN` per process),
  and is replaced after it raised, died, hung or returned something that cannot be taken back.

Parent to child is pickle (the child trusts its parent); child to parent is pickle read by an unpickler
that only builds plain data (:class:`_DataUnpickler`): a hostile child cannot make the parent run code.
"""

from __future__ import annotations

import atexit
import builtins
import contextlib
import ctypes
import ctypes.util
import importlib
import io
import json
import logging
import os
import pickle
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from multiprocessing.connection import Connection
from pathlib import Path
from typing import TYPE_CHECKING, Any

from leanops import constants
from leanops import errors as leanops_errors
from leanops.errors import ConfigError, MalformedInput, ProcessorError

if TYPE_CHECKING:
    from leanops.batch import ProcessorContext
    from leanops.config import Endpoint, TopicConfig

#: A topic's ``isolation`` setting: its processor in a child process, or in the process task's own.
ISOLATION_MODES = ("process", "none")
DEFAULT_ISOLATION = "process"
#: The role the child's credentials come from (template.yaml's ProcessorRole).
ENV_PROCESSOR_ROLE_ARN = "LEANOPS_PROCESSOR_ROLE_ARN"
#: Local endpoints: set, there is no STS, and the child gets dummy credentials (design §5).
LOCAL_ENDPOINTS = ("AWS_ENDPOINT_URL_S3", constants.ENV_DYNAMODB_ENDPOINT, "LEANOPS_DYNAMODB_ENDPOINT")
#: AWS variables a child keeps (region, and what Lambda says about the function); every other AWS_* goes.
KEPT_AWS_VARIABLES = frozenset(
    {
        "AWS_REGION",
        "AWS_DEFAULT_REGION",
        "AWS_EXECUTION_ENV",
        "AWS_LAMBDA_FUNCTION_NAME",
        "AWS_LAMBDA_FUNCTION_VERSION",
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE",
        "AWS_LAMBDA_LOG_GROUP_NAME",
        "AWS_LAMBDA_LOG_STREAM_NAME",
    }
)
#: Children kept warm per process (one per topic; the least recently used is stopped).
MAX_WARM_CHILDREN = 4
#: Credentials are renewed when less than this is left (AssumeRole from a role's session lasts 1 h at most).
CREDENTIALS_MARGIN_SECONDS = 300
CREDENTIALS_SECONDS = 3600
#: The parent stops waiting for the processor this long before the Lambda deadline, to stop it and report
#: the overrun; but waits at least MIN_WAIT_MS (a task started late still makes progress, as in-process).
DEADLINE_MARGIN_MS = 1000
MIN_WAIT_MS = 1000
#: Seconds a starting child has to import leanops and the processor and say it is ready.
START_SECONDS = 60.0
#: Locally there is no STS: the child signs with these (refused by AWS; the local stack checks policies).
LOCAL_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "leanops-processor", "AWS_SECRET_ACCESS_KEY": "leanops-processor"}
LOCAL_ACCOUNT_ID = "123456789012"
_CHILD_MAIN = (
    "import sys; from leanops.isolation import child_main; child_main(int(sys.argv[1]), int(sys.argv[2]))"
)


def validate_mode(value: object, where: str) -> str:
    """The ``isolation`` setting, or a :class:`ConfigError` naming ``where``."""
    if value not in ISOLATION_MODES:
        raise ConfigError(f"{where}: isolation {value!r} must be one of: {', '.join(ISOLATION_MODES)}")
    return str(value)


# --- what the child may reach ---------------------------------------------------------------------------


def session_policy(topic: TopicConfig, *, partition: str, region: str, account: str) -> dict[str, Any]:
    """The IAM session policy of ``topic``'s processor: read its source, read and write under its sink,
    nothing else (local folders are no IAM resources: they add nothing). Plain ARNs, no wildcard but the
    object keys under a prefix."""
    statements: list[dict[str, Any]] = []
    for sid, endpoint, actions in (
        ("Source", topic.source, ["s3:GetObject"]),
        ("Sink", topic.sink, ["s3:GetObject", "s3:PutObject"]),
    ):
        statements += _endpoint_statements(sid, endpoint, actions, partition, region, account)
    if not statements:  # a session policy needs a statement: this one allows nothing
        statements.append({"Sid": "NoData", "Effect": "Deny", "Action": "*", "Resource": "*"})
    return {"Version": "2012-10-17", "Statement": statements}


def _endpoint_statements(
    sid: str, endpoint: Endpoint, actions: list[str], partition: str, region: str, account: str
) -> list[dict[str, Any]]:
    if endpoint.type == "dynamodb":
        table = f"arn:{partition}:dynamodb:{region}:{account}:table/{endpoint.table}"
        return [{"Sid": f"Read{sid}", "Effect": "Allow", "Action": ["dynamodb:Query"], "Resource": table}]
    if not endpoint.is_s3:
        return []
    bucket, _, prefix = endpoint.uri.removeprefix("s3://").partition("/")
    prefix = prefix.strip("/")
    objects = f"arn:{partition}:s3:::{bucket}/{prefix}/*" if prefix else f"arn:{partition}:s3:::{bucket}/*"
    listed = [f"{prefix}/*", prefix] if prefix else ["*"]
    return [
        {"Sid": f"Objects{sid}", "Effect": "Allow", "Action": actions, "Resource": objects},
        {
            "Sid": f"List{sid}",
            "Effect": "Allow",
            "Action": "s3:ListBucket",
            "Resource": f"arn:{partition}:s3:::{bucket}",
            "Condition": {"StringLike": {"s3:prefix": listed}},
        },
    ]


def is_local() -> bool:
    """The local stack (or a test) points the handlers at local endpoints: there is no STS."""
    return any(os.environ.get(name) for name in LOCAL_ENDPOINTS)


def policy_for(topic: TopicConfig) -> dict[str, Any]:
    """:func:`session_policy` with the partition and account of ProcessorRole (locally, the local stack's)."""
    role = os.environ.get(ENV_PROCESSOR_ROLE_ARN, "")
    parts = role.split(":")
    partition, account = (parts[1], parts[4]) if len(parts) > 4 else ("aws", LOCAL_ACCOUNT_ID)
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
    return session_policy(topic, partition=partition, region=region, account=account)


#: Temporary credentials by topic: (credentials as environment variables, expiry in epoch seconds).
_credentials: dict[str, tuple[dict[str, str], float]] = {}


def credentials_for(topic: TopicConfig, policy: dict[str, Any]) -> dict[str, str]:
    """Environment variables with the child's credentials: ProcessorRole's, narrowed by ``policy``
    (cached until near expiry); locally dummy ones; none without a ProcessorRole."""
    if is_local():
        return dict(LOCAL_CREDENTIALS)
    role = os.environ.get(ENV_PROCESSOR_ROLE_ARN)
    if not role:  # nothing to sign with: the processor cannot call AWS at all
        return {}
    cached = _credentials.get(topic.name)
    if cached and cached[1] - time.time() > CREDENTIALS_MARGIN_SECONDS:
        return cached[0]
    import boto3  # only the parent, and only in AWS

    answer = boto3.client("sts").assume_role(
        RoleArn=role,
        RoleSessionName=f"leanops-{topic.name}"[:64],
        Policy=json.dumps(policy, separators=(",", ":")),
        DurationSeconds=CREDENTIALS_SECONDS,
    )["Credentials"]
    env = {
        "AWS_ACCESS_KEY_ID": answer["AccessKeyId"],
        "AWS_SECRET_ACCESS_KEY": answer["SecretAccessKey"],
        "AWS_SESSION_TOKEN": answer["SessionToken"],
    }
    _credentials[topic.name] = (env, answer["Expiration"].timestamp())
    return env


def child_environment(scratch: str) -> dict[str, str]:
    """The parent's environment without credentials, endpoints (but a local S3's) and leanops' settings."""
    own = {v for k, v in vars(constants).items() if k.startswith("ENV_")}
    own |= {ENV_PROCESSOR_ROLE_ARN, "LEANOPS_DYNAMODB_ENDPOINT"}
    local_s3 = is_local() and os.environ.get("AWS_ENDPOINT_URL_S3")
    env = {
        name: value
        for name, value in os.environ.items()
        if name not in own and (not name.startswith("AWS_") or name in KEPT_AWS_VARIABLES)
    }
    if local_s3:  # the local stack's S3, policed by the local IAM hook; never DynamoDB (the state)
        env["AWS_ENDPOINT_URL_S3"] = local_s3
    env.update(
        PYTHONPATH=os.pathsep.join(p for p in sys.path if p),
        PYTHONDONTWRITEBYTECODE="1",
        TMPDIR=scratch,
        # Nothing on disk to sign with either (a developer's profile), nor instance metadata.
        AWS_SHARED_CREDENTIALS_FILE=os.devnull,
        AWS_CONFIG_FILE=os.devnull,
        AWS_EC2_METADATA_DISABLED="true",
    )
    return env


def _hide_from_same_user() -> None:
    """Make this process non-dumpable (Linux): another process of the same user, the child, can then read
    neither its /proc files (environ: the function's credentials) nor its memory, nor ptrace it."""
    libc_name = ctypes.util.find_library("c")
    if sys.platform.startswith("linux") and libc_name:
        pr_set_dumpable = 4
        ctypes.CDLL(libc_name, use_errno=True).prctl(pr_set_dumpable, 0, 0, 0, 0)


# --- the parent's side ------------------------------------------------------------------------------------


class _DataUnpickler(pickle.Unpickler):
    """Builds plain data only: containers, numbers, strings, bytes and these classes. Any other global (a
    function, a class of the processor's, ``os.system``) is refused, so unpickling runs no code of theirs."""

    ALLOWED = frozenset(
        {
            ("datetime", "datetime"),
            ("datetime", "date"),
            ("datetime", "time"),
            ("datetime", "timedelta"),
            ("datetime", "timezone"),
            ("decimal", "Decimal"),
            ("builtins", "set"),
            ("builtins", "frozenset"),
            ("builtins", "bytearray"),
            ("builtins", "complex"),
        }
    )

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"{module}.{name} is not plain data")


def _dumps(message: Any) -> bytes:
    """Pickle without the memo (``fast``): several times quicker for a batch of records. Shared objects are
    copied, and a cycle fails (RecursionError), as records from JSON never have."""
    buffer = io.BytesIO()
    pickler = pickle.Pickler(buffer, protocol=pickle.HIGHEST_PROTOCOL)
    pickler.fast = True
    pickler.dump(message)
    return buffer.getvalue()


def _loads(data: bytes) -> Any:
    return _DataUnpickler(io.BytesIO(data)).load()


class _ChildGone(Exception):
    """The child ended, or sent what cannot be read: it is replaced."""


class _TooLate(Exception):
    """The child did not answer before the deadline."""


class _Child:
    """One warm child process for one topic's processor."""

    def __init__(self, topic: TopicConfig, folder: Path, policy: dict[str, Any]) -> None:
        _hide_from_same_user()
        self.scratch = tempfile.mkdtemp(prefix="leanops-processor-")
        ours, theirs = socket.socketpair()
        lifeline_read, self._lifeline = os.pipe()  # the child exits when this end closes (we died)
        try:
            self.process = subprocess.Popen(
                [sys.executable, "-c", _CHILD_MAIN, str(theirs.fileno()), str(lifeline_read)],
                env=child_environment(self.scratch),
                pass_fds=(theirs.fileno(), lifeline_read),
                stdin=subprocess.DEVNULL,
                cwd=self.scratch,
            )
        finally:
            theirs.close()
            os.close(lifeline_read)
        self.connection = Connection(ours.detach())
        self.topic = topic.name
        setup = {
            "spec": topic.processor,
            "folder": str(folder),
            "policy": policy,
            "local_iam": is_local(),
            "scratch": self.scratch,
        }
        try:
            self.connection.send_bytes(_dumps(("init", setup)))
            reply = self.receive(time.monotonic() + START_SECONDS, logging.getLogger(__name__))
        except BaseException:
            self.stop()
            raise
        if reply[0] != "ready":
            self.stop()
            raise _error_from(reply, topic.name, "origin")

    def alive(self) -> bool:
        return self.process.poll() is None

    def receive(self, deadline: float | None, logger: Any) -> tuple[Any, ...]:
        """The child's next answer; its log lines on the way go to ``logger``."""
        while True:
            wait = None if deadline is None else max(0.0, deadline - time.monotonic())
            try:
                if not self.connection.poll(wait):
                    raise _TooLate
                message = _loads(self.connection.recv_bytes())
            except (EOFError, OSError) as exc:
                raise _ChildGone(f"its process ended (exit code {self._exit_code()})") from exc
            except (pickle.UnpicklingError, ValueError, TypeError, AttributeError, IndexError) as exc:
                raise _ChildGone(f"it sent what leanops cannot take back ({exc})") from exc
            if not isinstance(message, tuple) or not message or not isinstance(message[0], str):
                raise _ChildGone("it sent an answer of the wrong shape")
            if message[0] != "log":
                return message
            _emit(logger, message)

    def _exit_code(self) -> int | None:
        """The child's exit code once it is gone (it closed its end: it is ending, or is made to)."""
        try:
            return self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait()

    def stop(self) -> None:
        """Kill the child (it may be hostile or stuck: no polite request) and remove its scratch folder."""
        with contextlib.suppress(OSError):
            self.process.kill()
        self.process.wait()
        for closing in (self.connection.close, lambda: os.close(self._lifeline)):
            with contextlib.suppress(OSError):
                closing()
        shutil.rmtree(self.scratch, ignore_errors=True)


def _emit(logger: Any, message: tuple[Any, ...]) -> None:
    """A log line of the processor, through the task's logger (same format and destination as in-process)."""
    try:
        _, level, text, extra = message
        emit = getattr(logger, logging.getLevelName(int(level)).lower(), None) or logger.info
        emit(str(text), extra=dict(extra) if isinstance(extra, dict) else None)
    except (TypeError, ValueError):
        logger.warning("the processor sent a malformed log line", extra={"line": repr(message)[:500]})


#: Warm children by topic (and what they were started for), least recently used first.
_children: OrderedDict[str, tuple[tuple[Any, ...], _Child]] = OrderedDict()
_children_lock = threading.Lock()


def _child_for(topic: TopicConfig, folder: Path, policy: dict[str, Any]) -> _Child:
    """The topic's warm child, started (again) if there is none, it died, or the topic changed."""
    identity = (topic.processor, str(folder), json.dumps(policy, sort_keys=True), tuple(sys.path))
    with _children_lock:
        known = _children.pop(topic.name, None)
        if known is not None and known[0] == identity and known[1].alive():
            _children[topic.name] = known
            return known[1]
        if known is not None:
            known[1].stop()
        while len(_children) >= MAX_WARM_CHILDREN:
            _children.popitem(last=False)[1][1].stop()
        child = _Child(topic, folder, policy)
        _children[topic.name] = (identity, child)
        return child


def _discard(topic: str) -> None:
    with _children_lock:
        known = _children.pop(topic, None)
    if known is not None:
        known[1].stop()


@atexit.register
def stop_children() -> None:
    """Stop every warm child, removing their scratch folders (at exit; a parent killed: each child follows
    it and removes its own)."""
    with _children_lock:
        children = [child for _, child in _children.values()]
        _children.clear()
    for child in children:
        child.stop()


class IsolatedProcessor:
    """The topic's processor, called like one (``processor(records, context)``) but run in its child."""

    def __init__(
        self, topic: TopicConfig, folder: Path, remaining_ms: Callable[[], int] | None = None
    ) -> None:
        self.topic, self.folder, self.remaining_ms = topic, folder, remaining_ms

    def __call__(self, records: list[dict[str, Any]], context: ProcessorContext) -> list[dict[str, Any]]:
        from leanops.data.source import Reject

        policy = policy_for(self.topic)
        batch = {
            "topic": context.topic,
            "batch_id": context.batch_id,
            "fence": context.fence,
            "fail_on_reject": context.fail_on_reject,
            "credentials": credentials_for(self.topic, policy),
            "records": records,
        }
        began, deadline = time.monotonic(), None
        try:
            child = _child_for(self.topic, self.folder, policy)
            if self.remaining_ms is not None:  # what the task has left, less a margin to report the overrun
                left = self.remaining_ms()
                deadline = time.monotonic() + max(left - DEADLINE_MARGIN_MS, MIN_WAIT_MS) / 1000
            child.connection.send_bytes(_dumps(("batch", batch)))
            reply = child.receive(deadline, context.logger)
        except _TooLate:
            _discard(self.topic.name)
            raise ProcessorError(
                f"batch {context.batch_id}: the processor of topic {self.topic.name} did not return within "
                f"{time.monotonic() - began:.1f} s, before the task's deadline; its process was stopped"
            ) from None
        except (_ChildGone, OSError) as exc:
            _discard(self.topic.name)
            raise ProcessorError(
                f"batch {context.batch_id}: the processor of topic {self.topic.name} failed: {exc}"
            ) from None
        if reply[0] == "ok":
            try:
                _, output, rejects, inputs = reply
                if not isinstance(output, list):
                    raise TypeError(f"output is {type(output).__name__}")
                taken = [
                    Reject(context.origin(i) if 0 <= i < len(records) else {}, str(reason), record)
                    for i, reason, record in rejects
                ]
                context.taken_back(output, inputs)
            except (TypeError, ValueError) as exc:  # a hostile or broken child's answer
                _discard(self.topic.name)
                raise ProcessorError(
                    f"batch {context.batch_id}: the processor of topic {self.topic.name} sent an answer "
                    f"leanops cannot take back ({exc})"
                ) from None
            context.rejects.extend(taken)
            return list(output)
        _discard(self.topic.name)  # it raised: a fresh child for the next batch
        if reply[0] == "reject_fail" and len(reply) == 3 and isinstance(reply[1], int):
            index = reply[1]
            context.reject(records[index] if 0 <= index < len(records) else {}, str(reply[2]))
        raise _error_from(reply, self.topic.name, context.batch_id)


def _error_from(reply: tuple[Any, ...], topic: str, batch_id: str) -> BaseException:
    """The exception the child reported, rebuilt with its class name (the Step Functions error): leanops'
    own, a built-in one, or a class of that name; ``ConfigError`` for a processor that returned no list."""
    if reply[0] == "not_list":
        return ConfigError(f"processor of {topic} returned {reply[1]}; expected a list of dicts")
    if reply[0] != "error" or len(reply) != 4:
        return ProcessorError(f"batch {batch_id}: the processor of topic {topic} sent an unexpected answer")
    _, name, args, ours = reply
    name = name if isinstance(name, str) and name.isidentifier() else "ProcessorError"
    args = tuple(args) if isinstance(args, (list, tuple)) else (str(args),)
    known = getattr(leanops_errors, name, None) if ours else getattr(builtins, name, None)
    cls = known if isinstance(known, type) and issubclass(known, Exception) else None
    if cls is not None:
        try:
            return cls(*args)
        except TypeError:  # a constructor that wants other arguments (UnicodeDecodeError...)
            pass
    base = leanops_errors.LeanopsError if ours else Exception
    return type(name, (base,), {"__module__": "leanops.processor"})(*args)


# --- the child's side -------------------------------------------------------------------------------------


def import_processor(spec: str, folder: Path) -> Callable[..., Any]:
    """Import ``package.module:function``, with the topics file's ``folder`` on ``sys.path``."""
    module_name, _, function_name = spec.partition(":")
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(f"processor {spec!r}: cannot import {module_name!r} ({exc})") from exc
    function = getattr(module, function_name, None)
    if not callable(function):
        raise ConfigError(f"processor {spec!r}: {module_name} has no function {function_name!r}")
    return function


class _RejectedToFail(MalformedInput):
    """``reject`` with ``on_malformed: fail``: the parent names the record's origin in the error."""

    def __init__(self, index: int, reason: str) -> None:
        super().__init__(f"rejected by the processor: {reason}")
        self.index, self.reason = index, reason


class ChildContext:
    """What a processor may know about its batch (as ``leanops.batch.ProcessorContext``), in the child."""

    def __init__(self, batch: dict[str, Any], logger: logging.Logger) -> None:
        self.topic: str = batch["topic"]
        self.batch_id: str = batch["batch_id"]
        self.fence: int = batch["fence"]
        self.logger = logger
        self.records: list[dict[str, Any]] = batch["records"]
        self.fail_on_reject: bool = batch["fail_on_reject"]
        self.rejects: list[tuple[int, str, Any]] = []
        self._index: dict[int, int] | None = None

    def index_of(self, record: Any) -> int:
        if self._index is None:
            self._index = {id(r): i for i, r in enumerate(self.records)}
        return self._index.get(id(record), -1)

    def reject(self, record: dict[str, Any], reason: str) -> None:
        """Quarantine ``record`` with ``reason`` (with ``on_malformed: fail``, fail the batch)."""
        index = self.index_of(record)
        if self.fail_on_reject:
            raise _RejectedToFail(index, reason)
        self.rejects.append((index, reason, record))


class _Forward(logging.Handler):
    """Sends the processor's log lines to the parent, which logs them with the task's logger."""

    STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}

    def __init__(self, send: Callable[[tuple[Any, ...]], None]) -> None:
        super().__init__()
        self.send = send

    def emit(self, record: logging.LogRecord) -> None:
        extra = {k: v for k, v in vars(record).items() if k not in self.STANDARD}
        self.send(("log", record.levelno, record.getMessage(), json.loads(json.dumps(extra, default=repr))))


#: Audit events that write, create or delete a path (the indexes of their path arguments).
_PATH_EVENTS = {
    "os.rename": (0, 1),
    "os.remove": (0,),
    "os.rmdir": (0,),
    "os.mkdir": (0,),
    "os.truncate": (0,),
    "os.symlink": (1,),
    "os.link": (1,),
    "os.chmod": (0,),
    "os.chown": (0,),
    "os.utime": (0,),
    "os.setxattr": (0,),
    "os.removexattr": (0,),
    "shutil.rmtree": (0,),
}
_PROCESS_EVENTS = frozenset(
    {
        "subprocess.Popen",
        "os.system",
        "os.exec",
        "os.posix_spawn",
        "os.spawn",
        "os.fork",
        "os.forkpty",
        "pty.spawn",
    }
)
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND


def install_write_guard(allowed: list[str]) -> None:
    """An audit hook (never removable) refusing writes, creations and deletes of paths outside ``allowed``
    folders, and starting processes (whose code no hook would see)."""
    roots = [os.path.realpath(a) for a in allowed]

    def permitted(path: Any) -> bool:
        if isinstance(path, int):  # an open descriptor: it was checked when opened
            return True
        real = os.path.realpath(os.fsdecode(path))
        return real == os.devnull or any(real == r or real.startswith(r + os.sep) for r in roots)

    def hook(event: str, args: tuple[Any, ...]) -> None:
        if event == "open":
            path, _, flags = args
            if flags & _WRITE_FLAGS and not permitted(path):
                raise PermissionError(
                    f"leanops isolation: the processor may not write {path} (only {roots[0]})"
                )
        elif event in _PATH_EVENTS:
            for i in _PATH_EVENTS[event]:
                if len(args) > i and args[i] is not None and not permitted(args[i]):
                    raise PermissionError(f"leanops isolation: the processor may not change {args[i]}")
        elif event in _PROCESS_EVENTS:
            raise PermissionError(f"leanops isolation: the processor may not start processes ({event})")

    sys.addaudithook(hook)


def _watch_parent(lifeline: int) -> None:
    """Exit as soon as the parent is gone (its end of the lifeline closes), whatever the processor does,
    removing the scratch folder first: a parent killed (a worker past its timeout) cannot."""

    def watch() -> None:
        with contextlib.suppress(OSError):
            os.read(lifeline, 1)
        scratch = os.environ.get("TMPDIR")
        if scratch and os.path.basename(scratch).startswith("leanops-processor-"):
            shutil.rmtree(scratch, ignore_errors=True)
        os._exit(70)

    threading.Thread(target=watch, name="leanops-lifeline", daemon=True).start()


def child_main(fd: int, lifeline: int) -> None:
    """The child: set up once (hooks, the processor), then one answer per batch until told to stop."""
    _watch_parent(lifeline)
    connection = Connection(fd)
    send_lock = threading.Lock()

    def send(message: tuple[Any, ...]) -> None:
        data = _dumps(message)
        with send_lock:
            connection.send_bytes(data)

    try:
        _, setup = pickle.loads(connection.recv_bytes())
        logger = logging.getLogger("leanops.processor")
        logger.propagate, logger.level = False, logging.DEBUG
        logger.addHandler(_Forward(send))
        if setup["local_iam"]:
            with contextlib.suppress(ImportError):
                from leanopsctl.local import iam

                iam.install([setup["policy"]])
        install_write_guard([setup["scratch"]])
        spec = setup["spec"]
        processor = import_processor(spec, Path(setup["folder"])) if spec else _passthrough
    except BaseException as exc:  # reported to the parent, which raises it
        send(_error_reply(exc))
        return
    send(("ready",))
    while True:
        try:
            _, batch = pickle.loads(connection.recv_bytes())
        except EOFError:
            return
        os.environ.update(batch.pop("credentials"))
        context = ChildContext(batch, logger)
        try:
            output = processor(context.records, context) if context.records else []
        except _RejectedToFail as exc:
            send(("reject_fail", exc.index, exc.reason))
            return
        except BaseException as exc:  # reported to the parent, which raises it
            send(_error_reply(exc))
            return
        if not isinstance(output, list):
            send(("not_list", type(output).__name__))
            return
        inputs = [context.index_of(r) for r in output]
        try:
            send(("ok", output, context.rejects, inputs))
        except (pickle.PicklingError, TypeError, AttributeError, RecursionError) as exc:
            send(("error", "ProcessorError", (f"its output cannot be sent to leanops: {exc}",), True))
            return


def _passthrough(records: list[dict[str, Any]], ctx: Any) -> list[dict[str, Any]]:
    return records


def _error_reply(exc: BaseException) -> tuple[Any, ...]:
    """An exception as the parent rebuilds it: class name, arguments (as text if not plain), leanops' own."""
    args: tuple[Any, ...] = exc.args
    try:
        _loads(_dumps(args))
    except Exception:  # arguments that are not plain data travel as their text
        args = (str(exc),)
    ours = isinstance(exc, leanops_errors.LeanopsError) and type(exc).__module__ == leanops_errors.__name__
    return ("error", type(exc).__name__, args, ours)
