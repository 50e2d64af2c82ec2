"""The local stack: one long-lived process serving the AWS APIs leanops uses, with no AWS account (design §5).

``leanops local up`` starts it once per project and leaves it running; every command then talks to it
with boto3, exactly as to AWS (``leanopsctl.target``):

- **DynamoDB** is DynamoDB Local (its own Java process, :mod:`leanopsctl.local.dynamodb_local`).
- **Step Functions, S3** (and the rest of moto's APIs) are moto in server mode on one local port: the real
  ASL of ``template.yaml``, executed by moto's interpreter, one thread per execution.
- **Lambda**: moto's interpreter invokes tasks through boto3; a botocore hook in this process answers each
  ``Invoke`` from warm worker processes, one pool per function (:mod:`leanopsctl.local.pool`), with the
  function's environment from the template, its timeout, INIT bounded apart, and a concurrency limit.
  Handler output goes to ``<home>/logs/functions.log``.
- **EventBridge Scheduler** (``--schedules``): each scheduled topic's ``rate(...)`` fires as Scheduler
  would, an execution named by a fresh execution id, the scheduled time in the input.

``<home>/stack.json`` says where the stack listens; it exists only while the stack serves.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
import zipfile
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import boto3
import botocore.handlers
import psutil
from botocore.config import Config

from leanops.config import TopicsFile, load_topics
from leanops.constants import (
    DEFAULT_STATE_TABLE,
    ENV_CONFIG,
    ENV_DYNAMODB_ENDPOINT,
    ENV_HOME,
    ENV_STATE_TABLE,
)
from leanops.errors import ConfigError, LocalRuntimeError
from leanops.protocol.dynamodb import DynamoDBStore
from leanops.protocol.table import create_table
from leanopsctl import push
from leanopsctl.deploy import schedules
from leanopsctl.deploy.schedules import ScheduleTarget
from leanopsctl.local import dynamodb_local, streams
from leanopsctl.local.pool import DEFAULT_CONCURRENCY, FunctionDefinition, FunctionPool
from leanopsctl.local.runtime import LOCAL_ROLE_ARN, _client_error, _function_name, _invoke_response
from leanopsctl.local.template import LOCAL_REGION, Template, lambda_arn, read_template, render_definition
from leanopsctl.local.worker import ENV_LOCAL_IAM

logger = logging.getLogger("leanops.stack")

STACK_FILE = "stack.json"
LOCK_FILE = "stack.lock"
LOG_DIR = "logs"
FUNCTIONS_LOG = "functions.log"
STACK_LOG = "stack.log"
#: Seconds ``leanops local up`` waits for a new stack to serve (DynamoDB Local's JVM starts first).
START_TIMEOUT_SECONDS = 120.0
STOP_TIMEOUT_SECONDS = 20.0
_HOOK_ID = "leanops-local-stack"
#: What a deployed function's environment never inherits from this process: the project's local routes.
DEPLOYED_UNSET = (
    ENV_CONFIG,
    ENV_HOME,
    ENV_STATE_TABLE,
    ENV_DYNAMODB_ENDPOINT,
    "AWS_ENDPOINT_URL_S3",
    "AWS_PROFILE",
)
#: Credentials every local client uses (nothing leaves the machine).
LOCAL_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "local", "AWS_SECRET_ACCESS_KEY": "local"}


@dataclass(frozen=True)
class StackRecord:
    """What ``stack.json`` says of the running stack."""

    pid: int
    endpoint: str
    dynamodb_endpoint: str
    table: str
    config: str
    template: str
    started_at: str
    state_machines: dict[str, str] = field(default_factory=dict)
    functions_log: str = ""
    schedules: bool = False
    #: The schedule group `leanops topics push` keeps the topics' schedules in, and the role they use.
    schedule_group: str = ""
    scheduler_role_arn: str = ""

    @classmethod
    def read(cls, path: Path) -> StackRecord | None:
        try:
            return cls(**json.loads(path.read_text(encoding="utf-8")))
        except FileNotFoundError:
            return None
        except (OSError, ValueError, TypeError):
            logger.warning("ignoring unreadable %s", path)
            return None

    def write(self, path: Path) -> None:
        temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        temporary.write_text(json.dumps(asdict(self), indent=2) + "\n", encoding="utf-8")
        temporary.replace(path)  # a reader never sees half a file


# ------------------------------------------------------------------------------------------------------------
# Control: up, down, status (run by the CLI)
# ------------------------------------------------------------------------------------------------------------


def stack_file(home: Path) -> Path:
    return home / STACK_FILE


def running_stack(home: Path) -> StackRecord | None:
    """The stack serving ``home``, if its process lives and answers; clears a stale ``stack.json``."""
    record = StackRecord.read(stack_file(home))
    if record is None:
        return None
    if _our_stack_process(record.pid, home) is None:
        stack_file(home).unlink(missing_ok=True)
        return None
    return record if answers(record.endpoint) else None


def answers(endpoint: str, timeout: float = 5.0) -> bool:
    """Whether the moto server at ``endpoint`` answers."""
    try:
        with urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=timeout) as response:
            return bool(response.status == 200)
    except OSError:
        return False


def stack_up(
    home: Path,
    config: Path,
    template: Path,
    *,
    schedules: bool = False,
    concurrency: int = DEFAULT_CONCURRENCY,
    timeout: float = START_TIMEOUT_SECONDS,
) -> tuple[StackRecord, bool]:
    """Start the project's stack unless it runs; return its record and whether this call started it.

    Raises
    ------
    ConfigError
        The running stack serves another topics file (stop it first).
    LocalRuntimeError
        The stack did not start (the last lines of its log say why).
    """
    home.mkdir(parents=True, exist_ok=True)
    with dynamodb_local._exclusive_lock(home / LOCK_FILE, timeout, "another `leanops local up`"):
        record = StackRecord.read(stack_file(home))
        if record is not None and _our_stack_process(record.pid, home) is not None:
            # Alive: never start a second stack beside it, however slow it is to answer.
            if not answers(record.endpoint, timeout=15.0):
                raise LocalRuntimeError(
                    f"the local stack (pid {record.pid}) runs but does not answer at {record.endpoint}: "
                    "`leanops local down`, then `leanops local up`"
                )
            if Path(record.config) != config:
                raise ConfigError(
                    f"the local stack in {home} serves {record.config}, not {config}: stop it first "
                    "(`leanops local down`)"
                )
            return record, False
        # DynamoDB Local first, here: a missing Java or jar is reported as itself, not as a stack's exit.
        dynamodb_local.local_up(home)
        logs = home / LOG_DIR
        logs.mkdir(parents=True, exist_ok=True)
        command = [
            sys.executable,
            "-m",
            "leanopsctl.local.stack",
            "--home",
            str(home),
            "--config",
            str(config),
        ]
        command += ["--template", str(template), "--concurrency", str(concurrency)]
        command += ["--schedules"] if schedules else []
        with (logs / STACK_LOG).open("ab") as log:
            process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                env={**os.environ, ENV_HOME: str(home)},
                start_new_session=True,  # outlives this command and its terminal
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            code = process.poll()
            if code is not None:
                raise LocalRuntimeError(f"the local stack exited ({code}): {_tail(logs / STACK_LOG)}")
            record = StackRecord.read(stack_file(home))
            if record is not None and record.pid == process.pid and answers(record.endpoint, timeout=1.0):
                return record, True
            time.sleep(0.1)
        _terminate(process.pid)
        raise LocalRuntimeError(f"the local stack did not start in {timeout:g} s: {_tail(logs / STACK_LOG)}")


def stack_down(home: Path, timeout: float = STOP_TIMEOUT_SECONDS) -> bool:
    """Stop the project's stack and its DynamoDB Local (their data stays); whether a stack was running."""
    # Every stack of this home, also one that lost its record; signalled first, so that it stops while
    # DynamoDB Local does.
    stacks = [p for p in psutil.process_iter() if _our_stack_process(p.pid, home) is not None]
    for process in stacks:
        with contextlib.suppress(psutil.NoSuchProcess):
            process.terminate()
    dynamodb_local.local_down(home)
    for process in stacks:
        _terminate(process.pid, timeout)
    stack_file(home).unlink(missing_ok=True)
    return bool(stacks)


def _our_stack_process(pid: int, home: Path) -> psutil.Process | None:
    """The process ``pid`` if it is a live local stack serving ``home`` (never a recycled pid)."""
    try:
        process = psutil.Process(pid)
        if process.status() == psutil.STATUS_ZOMBIE:
            return None
        arguments = process.cmdline()
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return None
    if "leanopsctl.local.stack" not in arguments or str(home) not in arguments:
        return None
    return process


def _terminate(pid: int, timeout: float = STOP_TIMEOUT_SECONDS) -> None:
    with contextlib.suppress(psutil.NoSuchProcess):
        process = psutil.Process(pid)
        process.terminate()
        try:
            process.wait(timeout)
        except psutil.TimeoutExpired:
            process.kill()
            process.wait(timeout)


def _tail(path: Path, lines: int = 5) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace").strip().splitlines()
    except OSError:
        return f"(no log at {path})"
    return " | ".join(text[-lines:]) + f" (log: {path})"


# ------------------------------------------------------------------------------------------------------------
# The server process
# ------------------------------------------------------------------------------------------------------------


class LambdaService:
    """Answers the interpreter's ``lambda:Invoke`` calls from the functions' pools (botocore hook).

    The template's functions are served by their logical id. Functions created through this stack's Lambda
    API (e.g. by a CloudFormation stack made on it: the deploy rehearsal) are served too, from the code
    package they were created with, unpacked under ``<home>/lambda/<name>`` and run as Lambda runs it
    (working directory and first on ``sys.path``), every AWS API at this stack's endpoint.
    """

    def __init__(
        self, pools: dict[str, FunctionPool], watch: CodeWatch, *, home: Path, endpoint: str, concurrency: int
    ) -> None:
        self.pools = pools
        self.watch = watch
        self.home = home
        self.endpoint = endpoint
        self.concurrency = concurrency
        self._deployed: dict[str, FunctionPool] = {}
        self._lock = threading.Lock()

    def pool(self, name: str) -> FunctionPool | None:
        if name in self.pools:
            return self.pools[name]
        with self._lock:
            if name not in self._deployed:
                pool = self._deployed_pool(name)
                if pool is None:
                    return None
                self._deployed[name] = pool
            return self._deployed[name]

    def _deployed_pool(self, name: str) -> FunctionPool | None:
        from moto.awslambda.models import lambda_backends
        from moto.core import DEFAULT_ACCOUNT_ID

        try:
            function = lambda_backends[DEFAULT_ACCOUNT_ID][LOCAL_REGION].get_function(name)
        except Exception:  # moto's UnknownFunctionException and kin: not a function of this stack
            return None
        package = self.home / "lambda" / function.function_name
        shutil.rmtree(package, ignore_errors=True)
        package.mkdir(parents=True)
        with zipfile.ZipFile(io.BytesIO(function.code_bytes)) as archive:
            archive.extractall(package)
        environment = {
            **LOCAL_CREDENTIALS,
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_EC2_METADATA_DISABLED": "true",
            "NO_PROXY": "127.0.0.1,localhost",
            **{k: str(v) for k, v in function.environment_vars.items()},
            "AWS_REGION": LOCAL_REGION,
            "AWS_DEFAULT_REGION": LOCAL_REGION,
            "AWS_LAMBDA_FUNCTION_NAME": function.function_name,
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(function.memory_size),
        }
        definition = FunctionDefinition(
            name=function.function_name,
            arn=function.function_arn,
            handler=str(function.handler),
            timeout=float(function.timeout),
            memory_size=int(function.memory_size),
            environment=environment,
            code_uri=str(package),
            cwd=str(package),
        )
        log = self.home / LOG_DIR / FUNCTIONS_LOG
        return FunctionPool(definition, log=log, concurrency=self.concurrency, unset=DEPLOYED_UNSET)

    def install(self) -> None:
        hooks = (
            ("before-parameter-build.lambda.Invoke", self._stash),
            ("before-call.lambda.Invoke", self._answer),
        )
        for spec in hooks:
            botocore.handlers.BUILTIN_HANDLERS.append(spec)
        if boto3.DEFAULT_SESSION is not None:  # made before now: lacks the builtin handlers added above
            for event, handler in hooks:
                boto3.DEFAULT_SESSION._session.register(event, handler, unique_id=f"{_HOOK_ID}-{event}")

    def _stash(self, params: dict[str, Any], context: dict[str, Any], **_: Any) -> None:
        context[_HOOK_ID] = dict(params)

    def _answer(self, context: dict[str, Any], **_: Any) -> Any:
        params = context.get(_HOOK_ID)
        if params is None:
            return None
        pool = self.pool(_function_name(str(params.get("FunctionName", ""))))
        if pool is None:
            return _client_error(
                404, "ResourceNotFoundException", f"Function not found: {params.get('FunctionName')}"
            )
        self.watch.check()
        payload = params.get("Payload") or b"{}"
        result = pool.invoke(payload if isinstance(payload, bytes) else str(payload).encode())
        return _invoke_response(result.payload, result.request_id, result.function_error)


def _drop_no_value_from_lists() -> None:
    """CloudFormation removes a list element that is ``AWS::NoValue`` (e.g. ``!If [Cond, x, !Ref
    AWS::NoValue]``: the template's data-root slots and statements); moto leaves ``None`` in its place,
    which IAM then refuses. Drop them, as CloudFormation does, for stacks made on the local stack."""
    from moto.cloudformation import parsing

    original = parsing.clean_json

    def clean_json(resource_json: Any, resources_map: Any) -> Any:
        if isinstance(resource_json, list):
            return [v for v in (clean_json(x, resources_map) for x in resource_json) if v is not None]
        return original(resource_json, resources_map)

    parsing.clean_json = clean_json  # moto's own recursion looks the name up in the module


def _schedule_groups_in_cloudformation() -> None:
    """moto's CloudFormation has no AWS::Scheduler::ScheduleGroup (its Scheduler API has groups): teach it
    one, so a stack made on the local stack (the deploy rehearsal) has its group and the output naming it."""
    from moto.core.common_models import CloudFormationModel
    from moto.scheduler.models import scheduler_backends

    class ScheduleGroupModel(CloudFormationModel):
        __module__ = "moto.scheduler.leanops"  # moto's model registry files a model by its module's service

        def __init__(self, name: str) -> None:
            self.name = name

        @property
        def physical_resource_id(self) -> str:
            return self.name

        @staticmethod
        def cloudformation_name_type() -> str:
            return "Name"

        @staticmethod
        def cloudformation_type() -> str:
            return "AWS::Scheduler::ScheduleGroup"

        @classmethod
        def has_cfn_attr(cls, attr: str) -> bool:
            return attr in ("Arn",)

        @classmethod
        def create_from_cloudformation_json(
            cls,
            resource_name: str,
            cloudformation_json: dict[str, Any],
            account_id: str,
            region_name: str,
            **_: Any,
        ) -> ScheduleGroupModel:
            name = (cloudformation_json.get("Properties") or {}).get("Name") or resource_name
            scheduler_backends[account_id][region_name].create_schedule_group(name=name, tags=[])
            return cls(name)


def _page_execution_history() -> None:
    """Make moto's ``GetExecutionHistory`` page its answer (``maxResults``, ``nextToken``, ``reverseOrder``)
    as AWS does, so that a follower reads each event once instead of the whole history every poll."""
    from moto.core.responses import ActionResult
    from moto.stepfunctions.responses import StepFunctionResponse

    def paged(self: Any) -> ActionResult:
        events = list(
            self.stepfunction_backend.get_execution_history(self._get_param("executionArn"))["events"]
        )
        if self._get_param("reverseOrder"):
            events.reverse()
        size = int(self._get_param("maxResults") or 1000)
        start = int(self._get_param("nextToken") or 0)
        page: dict[str, Any] = {"events": events[start : start + size]}
        if start + size < len(events):
            page["nextToken"] = str(start + size)
        return ActionResult(page)

    StepFunctionResponse.get_execution_history = paged  # type: ignore[method-assign]


def _pools(
    template: Template,
    refs: dict[str, str],
    table: str,
    base_env: dict[str, str],
    log: Path,
    concurrency: int,
) -> dict[str, FunctionPool]:
    pools = {}
    for logical_id, spec in template.functions.items():
        # The local values win over the template's: this project's topics file, the local endpoints.
        env = {**template.function_environment(spec, refs, table), **base_env}
        env.update(AWS_LAMBDA_FUNCTION_NAME=logical_id, AWS_LAMBDA_FUNCTION_MEMORY_SIZE=str(spec.memory_size))
        env[ENV_LOCAL_IAM] = "1"  # its recorded grants are enforced (leanopsctl.local.worker)
        definition = FunctionDefinition(
            name=logical_id,
            arn=lambda_arn(logical_id),
            handler=spec.handler,
            timeout=float(spec.timeout),
            memory_size=spec.memory_size,
            environment=env,
            code_uri=None if spec.code_uri is None else str(spec.code_uri),
        )
        pools[logical_id] = FunctionPool(definition, log=log, concurrency=concurrency)
    return pools


class CodeWatch:
    """Tells when the topics file or a processor's code changed, so that the next invocation INITs anew
    (as a deploy would) and sees the file's settings pushed (as ``leanops topics push`` would). Checked
    before every invocation: a run started right after an edit sees it."""

    def __init__(
        self, config: Path, pools: dict[str, FunctionPool], on_change: Callable[[], None] | None = None
    ) -> None:
        self.config = config
        self.pools = pools
        self.on_change = on_change
        self._lock = threading.Lock()
        self._parsed_text: bytes | None = None
        self._code_files: list[tuple[Path, list[Path]]] = []
        self._last = self._fingerprint()

    def check(self) -> None:
        current = self._fingerprint()
        with self._lock:  # invocations arriving meanwhile wait for the push
            if current == self._last:
                return
            logger.info("%s or a processor changed: new invocations INIT again", self.config)
            for pool in self.pools.values():
                pool.recycle()
            if self.on_change is not None:
                self.on_change()  # raises: not seen, so the next invocation pushes again
            self._last = current

    def _fingerprint(self) -> str:
        """The topics file's bytes, and the size and time of each file of its processors' packages. (The
        topics file is parsed again only when its bytes change: this runs before every invocation.)"""
        digest = hashlib.sha256()
        try:
            text = self.config.read_bytes()
        except OSError as exc:
            return hashlib.sha256(str(exc).encode()).hexdigest()
        digest.update(text)
        if text != self._parsed_text:
            self._parsed_text, self._code_files = text, self._processor_files()
        for root, files in self._code_files:
            for path in files if files else sorted(root.rglob("*.py")):
                with contextlib.suppress(OSError):
                    stat = path.stat()
                    digest.update(f"{path}:{stat.st_mtime_ns}:{stat.st_size}".encode())
        return digest.hexdigest()

    def _processor_files(self) -> list[tuple[Path, list[Path]]]:
        """Each processor's package folder (its ``.py`` files listed at each check: a new module counts), or
        its single module."""
        try:
            topics = load_topics(self.config)
        except ConfigError:
            return []  # the run will fail on it, saying why; nothing to watch until it is fixed
        found = []
        for package in sorted(
            {t.processor.split(":")[0].split(".")[0] for t in topics.topics.values() if t.processor}
        ):  # (a topic without a processor has no code: the passthrough is leanops')
            root = topics.folder / package
            found.append((root, []) if root.is_dir() else (root, [root.with_suffix(".py")]))
        return found


#: The local stack's schedule group (a deployed stack's is its ScheduleGroup resource).
LOCAL_SCHEDULE_GROUP = "leanops"


class TopicSync:
    """What ``leanops topics push`` does, done by the local stack for its project's topics file: at start
    and whenever the file changes, its topics are pushed to the local state table (topics gone from the
    file are removed: locally, the file is the whole truth) and the local Scheduler's group is synced."""

    def __init__(self, config: Path, store: DynamoDBStore, scheduler: Any, target: ScheduleTarget) -> None:
        self.config = config
        self.store = store
        self.scheduler = scheduler
        self.target = target

    def __call__(self) -> None:
        try:
            topics = load_topics(self.config)
        except ConfigError as exc:  # runs keep the last pushed settings; the CLI shows the error
            logger.warning("topics file not pushed: %s", exc)
            return
        actor = push.local_actor()
        with push.push_lease(self.store, actor):
            plan = push.plan(topics, self.store)
            try:
                push.apply(plan, self.store, actor=actor, prune=True)
            finally:  # what was written is scheduled, even when a topic failed
                changes = push.sync_schedules(self.scheduler, self.target, self.store)
        if plan.writes or changes.created or changes.updated or changes.deleted:
            logger.info(
                "pushed %s: %s; schedules %s",
                self.config,
                plan.to_json(),
                {k: len(v) for k, v in vars(changes).items()},
            )


def fire_schedules(
    scheduler: Any,
    sfn: Any,
    group: str,
    stop: threading.Event,
    tick: float = 1.0,
    clock: Callable[[], float] = time.time,
    starters: int = 16,
) -> None:
    """EventBridge Scheduler, for the schedules in ``group``: each ``rate(...)`` schedule fires every period
    from when it was first seen (or its expression last changed), starting the execution its target names
    (a fresh execution id as the name, ``scheduled_time`` in the input), as Scheduler's universal target
    would. The group is listed every ``tick`` (a push takes effect at once); a schedule is read again only
    when it was modified; due starts go out ``starters`` at a time, as Scheduler's do, not one by one."""
    due: dict[str, float] = {}
    read: dict[str, tuple[Any, dict[str, Any]]] = {}  # name -> (its LastModificationDate, GetSchedule)
    warned: set[str] = set()
    starting: set[str] = set()  # schedules whose last start is not done: their next tick is skipped
    guard = threading.Lock()

    def start(schedule: dict[str, Any], scheduled: str) -> None:
        try:
            _start_scheduled(sfn, schedule, scheduled)
        finally:
            with guard:
                starting.discard(schedule["Name"])

    with ThreadPoolExecutor(max_workers=starters, thread_name_prefix="scheduler-start") as pool:
        while not stop.wait(tick):
            try:
                listed = [
                    schedule
                    for page in scheduler.get_paginator("list_schedules").paginate(GroupName=group)
                    for schedule in page.get("Schedules", [])
                    if schedule.get("State") == "ENABLED"
                ]
            except Exception as exc:  # the stack is stopping, or moto hiccuped: try again next tick
                logger.warning("schedules: cannot list %s: %s", group, exc)
                continue
            names = {schedule["Name"] for schedule in listed}
            for gone in set(read) - names:
                read.pop(gone, None)
                due.pop(gone, None)
            for summary in listed:
                name, modified = summary["Name"], summary.get("LastModificationDate")
                if name not in read or read[name][0] != modified:
                    try:
                        read[name] = (modified, scheduler.get_schedule(Name=name, GroupName=group))
                    except Exception as exc:  # deleted meanwhile
                        logger.debug("schedules: %s: %s", name, exc)
                        continue
                    due.pop(name, None)  # new, or changed: its period counts from now
                schedule = read[name][1]
                period = schedules.period_seconds(schedule.get("ScheduleExpression"))
                if period is None:
                    if name not in warned:
                        warned.add(name)
                        logger.warning(
                            "schedule %s: the local stack fires rate(...) schedules only, not %r",
                            name,
                            schedule.get("ScheduleExpression"),
                        )
                    continue
                now = clock()
                due.setdefault(name, now + period)
                if due[name] > now:
                    continue
                scheduled = datetime.fromtimestamp(due[name], UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
                due[name] = max(due[name] + period, now)
                with guard:  # a start still queued is not queued twice: the backlog stays one per schedule
                    if name in starting:
                        logger.warning(
                            "schedule %s at %s: skipped, its last start is not done", name, scheduled
                        )
                        continue
                    starting.add(name)
                pool.submit(start, schedule, scheduled)


def _start_scheduled(sfn: Any, schedule: dict[str, Any], scheduled: str) -> None:
    started = schedules.run_input(schedule)
    if started is None:
        logger.warning("schedule %s: its target is not a topic run; skipped", schedule.get("Name"))
        return
    request = json.loads(schedule["Target"]["Input"])
    started["scheduled_time"] = scheduled
    execution = str(uuid.uuid4())
    try:
        sfn.start_execution(
            stateMachineArn=request["StateMachineArn"], name=execution, input=json.dumps(started)
        )
        logger.info("schedule: topic %s at %s: execution %s", started["topic"], scheduled, execution)
    except Exception as exc:  # Scheduler retries and dead-letters; locally, log and go on
        logger.warning("schedule: topic %s at %s: %s", started["topic"], scheduled, exc)


@contextlib.contextmanager
def _moto_server(port: int) -> Iterator[str]:
    from moto.core.config import default_user_config
    from moto.server import ThreadedMotoServer

    default_user_config["stepfunctions"] = {"execute_state_machine": True}
    _page_execution_history()
    _drop_no_value_from_lists()
    _schedule_groups_in_cloudformation()
    # With executions on, moto's API serves state machines from its interpreter's backend; CloudFormation
    # (the deploy rehearsal) must create them there too, or the API would not find them.
    import moto.stepfunctions.models as classic
    from moto.stepfunctions.parser.models import stepfunctions_parser_backends

    classic.stepfunctions_backends = stepfunctions_parser_backends  # type: ignore[assignment]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


def serve(home: Path, config: Path, template_path: Path, *, schedules: bool, concurrency: int) -> None:
    """Serve until SIGTERM or SIGINT; ``stack.json`` exists while serving."""
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    os.environ[ENV_HOME] = str(home)
    topics = load_topics(config)
    template = read_template(template_path)
    dynamodb_endpoint = dynamodb_local.local_up(home)
    table = os.environ.get(ENV_STATE_TABLE) or DEFAULT_STATE_TABLE
    create_table(dynamodb_local.local_client(dynamodb_endpoint), table)
    port = dynamodb_local.free_port()
    endpoint = f"http://127.0.0.1:{port}"
    # The interpreter's own clients (moto's boto_client_for) find this server by MOTO_PORT.
    os.environ.update(
        MOTO_PORT=str(port),
        AWS_DEFAULT_REGION=LOCAL_REGION,
        AWS_EC2_METADATA_DISABLED="true",
        **LOCAL_CREDENTIALS,
    )
    refs = template.local_refs(template.table_refs(table))
    function_env = {
        **LOCAL_CREDENTIALS,
        ENV_CONFIG: str(config),
        ENV_HOME: str(home),
        ENV_DYNAMODB_ENDPOINT: dynamodb_endpoint,
        "AWS_ENDPOINT_URL_S3": endpoint,
        "AWS_ENDPOINT_URL_STEPFUNCTIONS": endpoint,
        "AWS_EC2_METADATA_DISABLED": "true",
        "NO_PROXY": "127.0.0.1,localhost",
        **streams.local_environment(home),  # the archive: <home>/archive, not the stack's S3 bucket
    }
    functions_log = home / LOG_DIR / FUNCTIONS_LOG
    pools = _pools(template, refs, table, function_env, functions_log, concurrency)
    threads: list[threading.Thread] = []
    with _moto_server(port):
        session = boto3.session.Session(
            region_name=LOCAL_REGION, aws_access_key_id="local", aws_secret_access_key="local"
        )
        config_ = Config(retries={"total_max_attempts": 2})
        sfn = session.client("stepfunctions", endpoint_url=endpoint, config=config_)
        s3 = session.client("s3", endpoint_url=endpoint, config=config_)
        machines = {}
        for logical_id, spec in template.state_machines.items():
            machines[logical_id] = sfn.create_state_machine(
                name=logical_id,
                definition=render_definition(spec, refs),
                roleArn=LOCAL_ROLE_ARN,
            )["stateMachineArn"]
        for bucket in sorted(_buckets(topics)):
            with contextlib.suppress(s3.exceptions.BucketAlreadyOwnedByYou):
                s3.create_bucket(Bucket=bucket)
        scheduler = session.client("scheduler", endpoint_url=endpoint, config=config_)
        scheduler.create_schedule_group(Name=LOCAL_SCHEDULE_GROUP)
        sync = None
        if "TopicRunStateMachine" in machines:
            sync = TopicSync(
                config,
                DynamoDBStore(table, dynamodb_local.local_client(dynamodb_endpoint)),
                scheduler,
                ScheduleTarget(LOCAL_SCHEDULE_GROUP, machines["TopicRunStateMachine"], LOCAL_ROLE_ARN),
            )
            sync()
        service = LambdaService(
            pools, CodeWatch(config, pools, sync), home=home, endpoint=endpoint, concurrency=concurrency
        )
        service.install()
        if schedules:
            threads.append(
                threading.Thread(
                    target=fire_schedules,
                    args=(scheduler, sfn, LOCAL_SCHEDULE_GROUP, stop),
                    daemon=True,
                    name="scheduler",
                )
            )
        for thread in threads:
            thread.start()
        # The table's stream to its functions (the archive), as Lambda's event source mappings would.
        invokers = {name: pool.invoke for name, pool in pools.items()}
        mappings = streams.stream_mappings(
            template, refs, invokers, dynamodb_endpoint=dynamodb_endpoint, home=home
        )
        pollers = streams.start_pollers(mappings, stop)
        record = StackRecord(
            pid=os.getpid(),
            endpoint=endpoint,
            dynamodb_endpoint=dynamodb_endpoint,
            table=table,
            config=str(config),
            template=str(template_path),
            started_at=datetime.now(UTC).isoformat(timespec="seconds"),
            state_machines=machines,
            functions_log=str(functions_log),
            schedules=schedules,
            schedule_group=LOCAL_SCHEDULE_GROUP,
            scheduler_role_arn=LOCAL_ROLE_ARN,
        )
        record.write(stack_file(home))
        logger.info(
            "serving at %s (DynamoDB Local %s, table %s, %s)", endpoint, dynamodb_endpoint, table, config
        )
        try:
            stop.wait()
        finally:
            logger.info("stopping")
            if StackRecord.read(stack_file(home)) == record:
                stack_file(home).unlink(missing_ok=True)
            for pool in pools.values():
                pool.close()
            for poller in pollers:  # its invocation in flight ends; its next sees the stack stopping
                poller.join(timeout=STOP_TIMEOUT_SECONDS / 2)


def _buckets(topics: TopicsFile) -> set[str]:
    """The S3 buckets the topics name: created in the local S3, so ``s3://`` topics run locally."""
    buckets = set()
    for topic in topics.topics.values():
        for endpoint in (topic.source, topic.sink):
            if endpoint.type == "files" and endpoint.is_s3:
                buckets.add(endpoint.uri.removeprefix("s3://").split("/", 1)[0])
    return buckets


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m leanopsctl.local.stack", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--home", required=True, type=Path)
    parser.add_argument("--config", required=True, type=Path)
    parser.add_argument("--template", required=True, type=Path)
    parser.add_argument("--schedules", action="store_true")
    parser.add_argument("--concurrency", type=int, default=DEFAULT_CONCURRENCY)
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    try:
        serve(args.home, args.config, args.template, schedules=args.schedules, concurrency=args.concurrency)
    except (ConfigError, LocalRuntimeError) as exc:
        logger.error("%s", exc)
        return 2 if isinstance(exc, ConfigError) else 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
