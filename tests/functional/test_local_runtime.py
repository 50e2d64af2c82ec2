"""The local runtime: template reading, moto's ASL interpreter with in-process Lambda, DynamoDB Local.

Toy state machine and handlers: ``fixtures/template.yaml``, ``fixtures/toy.asl.json``, ``toy_handlers.py``.
"""

from __future__ import annotations

import io
import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from leanopsctl.executions import EXECUTION_NAME_TTL_SECONDS, claim_execution_name
from leanopsctl.local.runtime import ExecutionStatus, LambdaServiceError, LocalRuntime
from leanopsctl.local.template import (
    FunctionSpec,
    load_yaml,
    read_template,
    render_definition,
    resolve,
)

from leanops.errors import ConfigError, LocalRuntimeError
from tests.conftest import StateTable
from tests.functional.toy_handlers import ToyError

REPO = Path(__file__).resolve().parents[2]
FIXTURES = Path(__file__).resolve().parent / "fixtures"
TOY_TEMPLATE = FIXTURES / "template.yaml"
TOY_MACHINE = "ToyStateMachine"


def wait_until(condition: Any, timeout: float = 20.0) -> None:
    """Poll ``condition`` until it holds (bounded): synchronise on what the test observes, not on time."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.01)


def _name(prefix: str = "t") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def log_file(tmp_path: Path) -> Path:
    return tmp_path / "logs" / "functions.log"


@pytest.fixture
def runtime(state_table: StateTable, log_file: Path) -> Iterator[LocalRuntime]:
    """The toy template's runtime on the test's state table; Retry sleeps shortened 100 times."""
    with LocalRuntime(
        TOY_TEMPLATE, table_name=state_table.name, log_to=log_file, retry_delay_scale=0.01
    ) as running:
        yield running


# ------------------------------------------------------------------------------------------------------------
# template.yaml
# ------------------------------------------------------------------------------------------------------------


def test_reads_functions_and_state_machines_of_the_real_template() -> None:
    # GIVEN the project's template.yaml
    # WHEN it is read
    template = read_template(REPO / "template.yaml")

    # THEN every function has its handler, and Globals.Function supplies what it does not set itself
    assert set(template.functions) >= {
        "AcquireFunction",
        "ProcessFunction",
        "AdvanceFunction",
        "ReleaseFunction",
    }
    acquire = template.functions["AcquireFunction"]
    assert acquire.handler == "leanops.handlers.acquire.handler"
    assert acquire.module_and_attribute == ("leanops.handlers.acquire", "handler")
    assert acquire.timeout == 10
    assert acquire.memory_size == 256
    assert acquire.environment["LEANOPS_STATE_TABLE"] == {"Ref": "StateTable"}
    assert acquire.environment["POWERTOOLS_SERVICE_NAME"] == "leanops"
    assert acquire.code_uri == REPO / "functions"
    process = template.functions["ProcessFunction"]
    assert (process.timeout, process.memory_size) == (120, 1024)

    # AND the state machine's definition and substitutions resolve to local ARNs
    machine = template.state_machines["TopicRunStateMachine"]
    assert machine.definition_path == REPO / "statemachines" / "topic_run.asl.json"
    assert machine.substitutions["AcquireFunctionArn"] == {"Ref": "AcquireFunction.Version"}
    refs = template.local_refs({"StateTable": "local-table"})
    # locally one version runs, the latest
    assert {name: resolve(value, refs) for name, value in machine.substitutions.items()} == {
        f"{fn}FunctionArn": f"arn:aws:lambda:us-east-1:123456789012:function:{fn}Function:$LATEST"
        for fn in ("Acquire", "Process", "Advance", "Release")
    }
    assert resolve(acquire.environment["LEANOPS_STATE_TABLE"], refs) == "local-table"


def test_short_tags_and_intrinsics_resolve_locally(tmp_path: Path) -> None:
    # GIVEN a template using CloudFormation short tags
    path = tmp_path / "template.yaml"
    path.write_text(
        "Resources:\n"
        "  T: {Type: AWS::DynamoDB::Table}\n"
        "  F: {Type: AWS::Serverless::Function, Properties: {Handler: m.f}}\n"
        "Outputs:\n"
        "  A: {Value: !Sub '${AWS::Region}/${T}/${F.Arn}/${!Literal}'}\n"
        "  B: {Value: !Join [':', [a, !Ref T, !GetAtt T.Arn]]}\n"
        "  C: {Value: !Select [1, !Split [',', 'x,y,z']]}\n"
        "  D: {Value: !If [IsProd, a, b]}\n"
    )

    # WHEN it is loaded and its values resolved
    data = load_yaml(path)
    refs = read_template(path).local_refs({"T": "tbl"})
    outputs = data["Outputs"]

    # THEN tags become their long forms and evaluate to local values
    assert outputs["B"]["Value"] == {"Fn::Join": [":", ["a", {"Ref": "T"}, {"Fn::GetAtt": ["T", "Arn"]}]]}
    assert resolve(outputs["A"]["Value"], refs) == (
        "us-east-1/tbl/arn:aws:lambda:us-east-1:123456789012:function:F/${Literal}"
    )
    assert resolve(outputs["B"]["Value"], refs) == "a:tbl:arn:aws:dynamodb:us-east-1:123456789012:table/tbl"
    assert resolve(outputs["C"]["Value"], refs) == "y"
    assert resolve({"Fn::GetAtt": ["AcquireFunction", "Arn"]}, {}) == (
        "arn:aws:lambda:us-east-1:123456789012:function:AcquireFunction"
    )
    # AND what cannot be evaluated locally is a clear error
    with pytest.raises(ConfigError, match="Fn::If is not supported"):
        resolve(outputs["D"]["Value"], refs)
    with pytest.raises(ConfigError, match="Ref 'Nope' has no local value"):
        resolve({"Ref": "Nope"}, refs)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("Resources: {}\n", r"Resources is missing or empty"),
        (
            "Resources:\n  F: {Type: AWS::Serverless::Function, Properties: {}}\n",
            r"Resources\.F\.Properties\.Handler",
        ),
        (
            "Resources:\n  F: {Type: AWS::Serverless::Function, Properties: {Handler: m.f, Timeout: -1}}\n",
            r"Resources\.F\.Properties\.Timeout must be a positive integer",
        ),
        (
            "Resources:\n  S: {Type: AWS::Serverless::StateMachine}\n",
            r"Resources\.S\.Properties\.DefinitionUri",
        ),
        ("Resources: [1\n", r"not valid YAML"),
    ],
)
def test_a_template_lacking_what_is_needed_is_a_config_error(tmp_path: Path, body: str, message: str) -> None:
    # GIVEN a template without what the local runtime needs
    path = tmp_path / "broken.yaml"
    path.write_text(body)

    # WHEN it is read / THEN the error names the file and the key
    with pytest.raises(ConfigError, match=message) as raised:
        read_template(path)
    assert str(path) in str(raised.value)


def test_a_placeholder_without_substitution_is_a_config_error(tmp_path: Path) -> None:
    # GIVEN an ASL using a ${...} the template does not define
    (tmp_path / "m.asl.json").write_text(
        '{"StartAt": "A", "States": {"A": {"Type": "Task", "Resource": "${Nope}"}}}'
    )
    (tmp_path / "template.yaml").write_text(
        "Resources:\n  S: {Type: AWS::Serverless::StateMachine, Properties: {DefinitionUri: m.asl.json}}\n"
    )
    spec = read_template(tmp_path / "template.yaml").state_machines["S"]

    # WHEN it is rendered / THEN the error names the placeholder and the state machine
    with pytest.raises(ConfigError, match=r"uses \$\{Nope\}, which DefinitionSubstitutions of S"):
        render_definition(spec, {})


def test_handler_forms() -> None:
    # GIVEN SAM's dotted form and the module:function form / THEN both name a module and a function
    spec = FunctionSpec("F", "a.b.c", 3, 128)
    assert spec.module_and_attribute == ("a.b", "c")
    assert FunctionSpec("F", "a.b:c", 3, 128).module_and_attribute == ("a.b", "c")
    with pytest.raises(ConfigError, match=r"module\.function"):
        _ = FunctionSpec("F", "handler", 3, 128).module_and_attribute


# ------------------------------------------------------------------------------------------------------------
# Executions
# ------------------------------------------------------------------------------------------------------------


def test_handler_writes_to_dynamodb_local_and_sees_its_environment(
    runtime: LocalRuntime, state_table: StateTable
) -> None:
    # GIVEN a toy state machine whose task writes through the handler's own boto3 client
    name = _name("write")

    # WHEN an execution runs
    result = runtime.run(TOY_MACHINE, {"case": "write", "key": name}, name=name)

    # THEN it succeeded and the item is in DynamoDB Local (passthrough), written by this execution
    assert result.status is ExecutionStatus.SUCCEEDED
    assert result.succeeded and result.error is None and result.cause is None
    item = state_table.client.get_item(
        TableName=state_table.name, Key={"pk": {"S": f"toy#{name}"}, "sk": {"S": "item"}}
    )
    assert item["Item"]["execution"]["S"] == result.execution_arn
    assert result.execution_arn == f"arn:aws:states:us-east-1:123456789012:execution:{TOY_MACHINE}:{name}"
    # AND the handler saw the template's environment (function over Globals) and a Lambda context
    written = result.output["written"]
    assert written["table"] == state_table.name
    assert state_table.name in written["tables"]
    assert (written["greeting"], written["region"]) == ("bonjour", "us-east-1-toy")
    assert written["function_name"] == "WriteFunction"
    assert written["arn"] == "arn:aws:lambda:us-east-1:123456789012:function:WriteFunction"
    assert written["memory"] == 256
    # AND Choice + Task + Succeed: three states entered
    assert result.states_entered == 3


def test_custom_error_is_caught_by_class_name(runtime: LocalRuntime) -> None:
    # GIVEN a task whose handler raises ToyError, caught by the ASL with ResultPath $.error
    # WHEN an execution runs
    result = runtime.run(TOY_MACHINE, {"case": "catch", "key": "k"}, name=_name())

    # THEN the Catch matched the class name and the error landed under $.error
    assert result.status is ExecutionStatus.SUCCEEDED
    error = result.output["error"]
    assert error["Error"] == "ToyError"
    cause = json.loads(error["Cause"])
    assert cause["errorType"] == "ToyError"
    assert cause["errorMessage"] == "toy failure for k"
    assert cause["stackTrace"] and "toy_handlers.py" in cause["stackTrace"][-1]
    assert result.output["case"] == "catch"  # ResultPath kept the input


def test_fail_state_reports_error_and_cause_paths(runtime: LocalRuntime) -> None:
    # GIVEN a caught ToyError handed to a Fail state with ErrorPath and CausePath
    # WHEN an execution runs
    result = runtime.run(TOY_MACHINE, {"case": "fail", "key": "k2"}, name=_name())

    # THEN the execution FAILED with the error and cause those paths select
    assert result.status is ExecutionStatus.FAILED
    assert not result.succeeded
    assert result.output is None
    assert result.error == "ToyError"
    assert result.cause is not None and json.loads(result.cause)["errorMessage"] == "toy failure for k2"
    types = [event["type"] for event in result.history]
    assert types[-2:] == ["FailStateEntered", "ExecutionFailed"]
    assert "LambdaFunctionFailed" in types


def test_retry_then_success(runtime: LocalRuntime) -> None:
    # GIVEN a handler failing twice with TransientError, retried up to 3 times (MaxDelaySeconds, FULL jitter)
    key = _name("flaky")

    # WHEN an execution runs
    result = runtime.run(TOY_MACHINE, {"case": "flaky", "key": key, "failures": 2}, name=key)

    # THEN the third attempt succeeded
    assert result.status is ExecutionStatus.SUCCEEDED
    assert result.output == {"attempts": 3}
    assert runtime.invocations("FlakyFunction") == 3
    assert [event["type"] for event in result.history].count("LambdaFunctionFailed") == 2


def test_uncaught_error_fails_the_execution_with_class_name(runtime: LocalRuntime) -> None:
    # GIVEN an injected ToyError on a task without Retry or Catch
    runtime.inject("EchoFunction", ToyError("injected"))

    # WHEN an execution runs
    result = runtime.run(TOY_MACHINE, {"case": "echo"}, name=_name())

    # THEN it FAILED with the class name; the handler never ran
    assert result.status is ExecutionStatus.FAILED
    assert result.error == "ToyError"
    assert json.loads(result.cause or "{}")["errorMessage"] == "injected"
    # AND the fault was used up: the next execution succeeds
    assert runtime.run(TOY_MACHINE, {"case": "echo"}, name=_name()).succeeded
    assert runtime.invocations("EchoFunction") == 2


def test_injected_service_error_is_retried_as_lambda_service_exception(runtime: LocalRuntime) -> None:
    # GIVEN one Lambda service failure on the lambda:invoke integration, which retries Lambda.ServiceException
    runtime.inject("EchoFunction", LambdaServiceError())

    # WHEN an execution runs
    result = runtime.run(TOY_MACHINE, {"case": "service", "n": 1}, name=_name())

    # THEN the retry succeeded, after a failure named Lambda.ServiceException
    assert result.status is ExecutionStatus.SUCCEEDED
    assert result.output["event"] == {"case": "service", "n": 1}
    failed = [e for e in result.history if e["type"] == "TaskFailed"]
    assert [e["taskFailedEventDetails"]["error"] for e in failed] == ["Lambda.ServiceException"]


def test_service_error_on_a_function_arn_task_and_callable_faults(runtime: LocalRuntime) -> None:
    # GIVEN two faults queued on a direct function-ARN task: a callable that lets the handler run, then a
    # service error
    seen: list[Any] = []
    runtime.inject("EchoFunction", lambda event, context: seen.append((event, context.function_name)))
    runtime.inject("EchoFunction", LambdaServiceError("TooManyRequestsException"))

    # WHEN two executions run
    first = runtime.run(TOY_MACHINE, {"case": "echo", "n": 1}, name=_name())
    second = runtime.run(TOY_MACHINE, {"case": "echo", "n": 2}, name=_name())

    # THEN the callable ran before the handler, and the service error has Step Functions' Lambda.* name
    assert first.succeeded and seen == [({"case": "echo", "n": 1}, "EchoFunction")]
    assert (second.status, second.error) == (ExecutionStatus.FAILED, "Lambda.TooManyRequestsException")


def test_context_counts_down_from_the_function_timeout(runtime: LocalRuntime) -> None:
    # GIVEN the echo function's timeout overridden to 1.5 s (2 s in the template)
    assert runtime.timeout("EchoFunction") == 2.0
    runtime.set_timeout("EchoFunction", 1.5)

    # WHEN it is invoked with a pause of 0.1 s
    result = runtime.invoke("EchoFunction", {"sleep": 0.1})

    # THEN the remaining time started at most at the timeout and went down during the call
    assert 1_300 < result["remaining_before"] <= 1_500
    assert result["remaining_after"] <= result["remaining_before"] - 90


def test_a_handler_running_past_its_timeout_is_reported_timed_out(runtime: LocalRuntime) -> None:
    # GIVEN a 50 ms timeout for a handler that sleeps 150 ms
    runtime.set_timeout("EchoFunction", 0.05)

    # WHEN an execution runs it
    result = runtime.run(TOY_MACHINE, {"case": "echo", "sleep": 0.15}, name=_name())

    # THEN the task failed as Lambda reports a timeout
    assert (result.status, result.error) == (ExecutionStatus.FAILED, "Sandbox.Timedout")
    assert "Task timed out after 0.05 seconds" in (result.cause or "")


def test_handler_stdout_goes_to_the_log_not_to_stdout(
    runtime: LocalRuntime, log_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # GIVEN handlers that print and log with Powertools (both write to stdout on Lambda)
    name = _name("quiet")

    # WHEN executions run them, one failing
    runtime.run(TOY_MACHINE, {"case": "write", "key": name}, name=name)
    runtime.run(TOY_MACHINE, {"case": "fail"}, name=_name())

    # THEN nothing reached stdout; the log file has the output, the error and the interpreter's log
    captured = capsys.readouterr()
    assert captured.out == ""
    log = log_file.read_text()
    assert f"toy stdout from write_item {name}" in log
    assert "toy logger line" in log
    assert "toy stdout before failing" in log
    assert "[ERROR] ToyError: toy failure for no key" in log
    assert "START RequestId:" in log and "REPORT RequestId:" in log
    assert "toy" not in captured.err


def test_handler_stdout_can_go_to_a_stream(
    state_table: StateTable, capsys: pytest.CaptureFixture[str]
) -> None:
    # GIVEN a runtime logging to a stream the caller chose
    stream = io.StringIO()
    with LocalRuntime(TOY_TEMPLATE, table_name=state_table.name, log_to=stream) as runtime:
        # WHEN a handler prints
        result = runtime.run(TOY_MACHINE, {"case": "echo"}, name=_name())

    # THEN its output is in that stream, not on stdout
    assert result.succeeded
    assert "toy stdout from echo" in stream.getvalue()
    assert capsys.readouterr().out == ""


def test_stopped_and_timed_out_executions(runtime: LocalRuntime) -> None:
    # GIVEN an execution whose task pauses 0.5 s, and one of a machine that times out after 1 s
    stopped = runtime.start(TOY_MACHINE, {"case": "echo", "sleep": 0.5}, name=_name())
    timed_out = runtime.start("TimeoutStateMachine", {"sleep": 1.5}, name=_name())

    # WHEN the first is stopped (once its task runs) and both are waited for
    wait_until(lambda: runtime.invocations("EchoFunction") >= 1)
    runtime.stop(stopped, error="Stopped", cause="by the test")
    aborted = runtime.wait(stopped, timeout=10)
    late = runtime.wait(timed_out, timeout=10)

    # THEN their statuses say so, with no output
    assert (aborted.status, aborted.output) == (ExecutionStatus.ABORTED, None)
    assert aborted.history[-1]["type"] == "ExecutionAborted"
    assert (late.status, late.output) == (ExecutionStatus.TIMED_OUT, None)


def test_leaving_the_runtime_aborts_running_executions_and_keeps_late_output_off_stdout(
    state_table: StateTable, log_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # GIVEN an execution whose handler is still running when the runtime ends
    with LocalRuntime(TOY_TEMPLATE, table_name=state_table.name, log_to=log_file) as runtime:
        runtime.start(TOY_MACHINE, {"case": "echo", "sleep": 0.3}, name=_name("late"))
        wait_until(lambda: runtime.invocations("EchoFunction") >= 1)

    # WHEN the handler finishes afterwards
    wait_until(lambda: log_file.exists() and "toy stdout from echo" in log_file.read_text())

    # THEN its output went to the log, once, and not to stdout
    assert capsys.readouterr().out == ""
    assert log_file.read_text().count("toy stdout from echo") == 1


def test_events_arrive_in_order_while_the_execution_runs(runtime: LocalRuntime) -> None:
    # GIVEN a callback collecting events
    events: list[dict[str, Any]] = []
    arn = runtime.start(TOY_MACHINE, {"case": "echo", "sleep": 0.2}, name=_name())

    # WHEN waiting with it
    result = runtime.wait(arn, on_event=events.append)

    # THEN it saw every history event once, in order, states entered then exited
    assert [e["id"] for e in events] == [e["id"] for e in result.history] == list(range(1, len(events) + 1))
    states = [
        (e["type"], (e.get("stateEnteredEventDetails") or e.get("stateExitedEventDetails") or {}).get("name"))
        for e in events
        if e["type"].endswith(("StateEntered", "StateExited"))
    ]
    assert states == [
        ("ChoiceStateEntered", "Route"),
        ("ChoiceStateExited", "Route"),
        ("TaskStateEntered", "Echo"),
        ("TaskStateExited", "Echo"),
        ("SucceedStateEntered", "Done"),
        ("SucceedStateExited", "Done"),
    ]
    assert events[0]["type"] == "ExecutionStarted" and events[-1]["type"] == "ExecutionSucceeded"


def test_events_are_delivered_before_the_execution_ends(runtime: LocalRuntime) -> None:
    # GIVEN an execution whose task pauses 0.3 s
    arn = runtime.start(TOY_MACHINE, {"case": "echo", "sleep": 0.3}, name=_name())
    arrivals: list[tuple[str, float]] = []

    # WHEN waiting with a callback that timestamps events
    runtime.wait(arn, on_event=lambda e: arrivals.append((e["type"], time.monotonic())))

    # THEN the task's entry was reported well before the end
    times = dict(arrivals)
    assert times["ExecutionSucceeded"] - times["TaskStateEntered"] > 0.2


def test_execution_name_reuse_is_refused(
    runtime: LocalRuntime, state_table: StateTable, log_file: Path
) -> None:
    # GIVEN an execution that used a name
    name = _name("dup")
    assert runtime.run(TOY_MACHINE, {"case": "echo"}, name=name).succeeded

    # WHEN the same runtime starts another with that name / THEN it is refused as AWS would
    with pytest.raises(
        ConfigError,
        match=f"execution name '{name}' is already used by another execution of "
        f"{TOY_MACHINE}; choose another --name",
    ):
        runtime.start(TOY_MACHINE, {"case": "echo"}, name=name)

    # AND WHEN another runtime (another process: its own moto, same DynamoDB Local table) tries it / THEN too
    with LocalRuntime(TOY_TEMPLATE, table_name=state_table.name, log_to=log_file) as other:
        with pytest.raises(ConfigError, match="already used"):
            other.start(TOY_MACHINE, {"case": "echo"}, name=name)
        assert other.run(TOY_MACHINE, {"case": "echo"}, name=_name("fresh")).succeeded

    # AND the claim is an item with a 90-day TTL
    item = state_table.client.get_item(
        TableName=state_table.name, Key={"pk": {"S": f"execution#{TOY_MACHINE}"}, "sk": {"S": name}}
    )["Item"]
    assert abs(int(item["expires_at"]["N"]) - (time.time() + EXECUTION_NAME_TTL_SECONDS)) < 60


def test_claim_is_atomic_per_state_machine(state_table: StateTable) -> None:
    # GIVEN a name claimed for one state machine
    claim_execution_name(state_table.client, state_table.name, "A", "n1")

    # WHEN it is claimed for another machine, then again for the first
    claim_execution_name(state_table.client, state_table.name, "B", "n1")

    # THEN only the second claim on the same machine fails
    with pytest.raises(ConfigError, match="'n1' is already used by another execution of A"):
        claim_execution_name(state_table.client, state_table.name, "A", "n1")


@pytest.mark.parametrize("name", ["", "has space", "a/b", "x" * 81])
def test_invalid_execution_names_are_refused(runtime: LocalRuntime, name: str) -> None:
    # GIVEN a name Step Functions refuses / WHEN starting / THEN a usage error
    with pytest.raises(ConfigError, match="invalid execution name"):
        runtime.start(TOY_MACHINE, {}, name=name)


def test_needs_the_dynamodb_endpoint(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # GIVEN no AWS_ENDPOINT_URL_DYNAMODB
    monkeypatch.delenv("AWS_ENDPOINT_URL_DYNAMODB", raising=False)

    # WHEN the runtime starts / THEN it refuses rather than send DynamoDB requests to AWS
    with (
        pytest.raises(LocalRuntimeError, match="AWS_ENDPOINT_URL_DYNAMODB is not set"),
        LocalRuntime(TOY_TEMPLATE, table_name="x", log_to=tmp_path / "log"),
    ):
        pass


def test_real_state_machines_load_into_the_interpreter(state_table: StateTable, log_file: Path) -> None:
    # GIVEN the project's template and its rendered ASL (written by `make asl`)
    template = read_template(REPO / "template.yaml")
    missing = [
        spec.definition_path
        for spec in template.state_machines.values()
        if not spec.definition_path.is_file()
    ]
    if missing:
        pytest.skip(f"not rendered yet: {', '.join(map(str, missing))}")

    # WHEN the runtime starts / THEN moto parsed every definition and the machines exist
    with LocalRuntime(template, table_name=state_table.name, log_to=log_file) as runtime:
        for logical_id in template.state_machines:
            assert runtime.state_machine_arn(logical_id).endswith(f":stateMachine:{logical_id}")
