"""A warm Lambda execution environment of the local stack: one process, one function, one invocation at a
time (design §5).

The pool (:mod:`leanopsctl.local.pool`) starts it with the function's environment and ``LEANOPS_WORKER``
(JSON: handler, code folder, name, memory, the answer pipe's fd, and optionally ``policies``: the
function's IAM policy documents, enforced by :mod:`leanopsctl.local.iam`).
INIT imports the handler once and reports
``ready`` (or the import error); then each request line on stdin is one invocation, answered by one line.
Handler output (stdout, stderr: Powertools logs and EMF metrics) goes wherever the pool pointed them: the
function log. A handler that overruns is not stopped here: the pool kills the whole process, as Lambda does.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from leanopsctl.local import iam
from leanopsctl.local.invocation import HandlerUnavailable, LambdaContext, call_handler, load_handler

#: The environment variable carrying the worker's specification.
ENV_WORKER = "LEANOPS_WORKER"
#: Set by the local stack for the template's functions: enforce the function's recorded grants.
ENV_LOCAL_IAM = "LEANOPS_LOCAL_IAM"
#: A grants file to enforce instead of the recorded one (tests).
ENV_LOCAL_GRANTS = "LEANOPS_LOCAL_GRANTS"


def local_policies(function: str) -> list[dict[str, Any]]:
    """The function's recorded grants (leanopsctl.deploy.grants) on the local state table and the topics
    file's data (:func:`leanopsctl.local.iam.local_policies`); a topics file that does not load adds no
    data (the run fails on it anyway, saying why)."""
    from leanops.config import load_topics
    from leanops.constants import ENV_STATE_TABLE
    from leanops.errors import ConfigError
    from leanopsctl.deploy.grants import committed

    try:
        topics = list(load_topics().topics.values())
    except ConfigError:
        topics = []
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
    table = iam.table_arn(os.environ[ENV_STATE_TABLE], region)
    own = os.environ.get(ENV_LOCAL_GRANTS)  # another grants file: a test taking a grant away
    grants = json.loads(Path(own).read_text(encoding="utf-8")) if own else committed()
    return iam.local_policies(grants.get(function, {}), table, topics)


def _send(channel: Any, message: dict[str, Any]) -> None:
    channel.write(json.dumps(message) + "\n")
    channel.flush()


def _die_with_the_stack(stack: int) -> None:
    """An environment never outlives its stack (stopped, or killed -9): once this process is reparented, the
    stack is gone, and so goes this process. (Not PR_SET_PDEATHSIG: it fires when the *thread* that
    started us ends, and the stack starts environments from short-lived execution threads.)"""

    def watch() -> None:
        while os.getppid() == stack:
            time.sleep(1.0)
        os._exit(1)

    threading.Thread(target=watch, name="stack-watch", daemon=True).start()


def main() -> int:
    spec = json.loads(os.environ[ENV_WORKER])
    _die_with_the_stack(int(spec["stack_pid"]))
    channel = os.fdopen(int(spec["channel_fd"]), "w", encoding="utf-8")
    started = time.monotonic()
    policies = spec.get("policies")
    if policies is None and os.environ.get(ENV_LOCAL_IAM):
        policies = local_policies(spec["function_name"])
    if policies is not None:
        # The function's IAM policies (plain ARNs), enforced on its S3 and DynamoDB calls as on AWS; before
        # the handler's import makes its clients (leanopsctl.local.iam).
        iam.install(policies)
    try:
        handler = load_handler(spec["handler"], spec.get("code_uri"))
    except HandlerUnavailable as exc:
        _send(channel, {"init_error": exc.payload.decode()})
        return 1
    _send(channel, {"ready": True, "init_ms": round((time.monotonic() - started) * 1000, 1)})
    name = spec["function_name"]
    stream = f"{datetime.now(UTC):%Y/%m/%d}/[$LATEST]{os.getpid():x}{int(started * 1e6) & 0xFFFFFF:06x}"
    for line in sys.stdin:
        request = json.loads(line)
        request_id = request["request_id"]
        begun = time.monotonic()
        context = LambdaContext(
            function_name=name,
            function_version="$LATEST",
            invoked_function_arn=spec["function_arn"],
            memory_limit_in_mb=int(spec["memory_size"]),
            aws_request_id=request_id,
            log_group_name=f"/aws/lambda/{name}",
            log_stream_name=stream,
            deadline=begun + float(request["timeout"]),
        )
        print(f"START RequestId: {request_id} Version: $LATEST", flush=True)
        payload, function_error = call_handler(handler, request["payload"], context)
        took = (time.monotonic() - begun) * 1000
        print(f"END RequestId: {request_id}", flush=True)
        print(
            f"REPORT RequestId: {request_id}\tDuration: {took:.2f} ms\tMemory Size: {spec['memory_size']} MB",
            flush=True,
        )
        _send(
            channel, {"request_id": request_id, "payload": payload.decode(), "function_error": function_error}
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
