"""Static checks of the topic-run state machine: its Python source, its committed ASL and the SAM template.

moto's ASL interpreter accepts dangling transitions and knows nothing of Lambda timeouts (design §6), so
what can be checked without running is checked here, on the committed file that deploys.
"""

from __future__ import annotations

import inspect
import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from leanops import errors
from tests.workflows.cfn_yaml import load_template
from workflows import __main__ as render_cli
from workflows import topic_run

REPO = Path(__file__).resolve().parents[2]
ASL_PATH = REPO / "statemachines" / f"{topic_run.NAME}.asl.json"
TEMPLATE_PATH = REPO / "template.yaml"
ASL_VALIDATOR = REPO / "node_modules" / ".bin" / "asl-validator"
STATE_MACHINE_RESOURCE = "TopicRunStateMachine"

#: Protocol verdicts: retrying cannot change them, and a fenced-out run must stop at once.
NEVER_RETRIED = {errors.LockLost.__name__, errors.CheckpointConflict.__name__}
#: Error names that would match every error, the verdicts included, if they appeared in a retrier.
CATCH_ALL_ERRORS = {"States.ALL", "States.TaskFailed"}
#: The only dynamic inputs a task may select: the whole (small) run state and the execution's identity.
ALLOWED_PARAMETER_PATHS = {"$", "$$.Execution.Id", "$$.Execution.Name", "$$.Execution.StartTime"}
#: Where a task may put its result: replace the run state, add the batch's references, or discard it.
ALLOWED_RESULT_PATHS = {"$", "$.batch", None}
#: Every Task state, each checked against its function's Lambda timeout (I8).
TASK_NAMES = ("Acquire", "ProcessBatch", "AdvanceCheckpoint", "ReleaseAfterFailure")
PLACEHOLDER = re.compile(r"\$\{([A-Za-z0-9_]+)\}")


# --- helpers ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def definition() -> dict[str, Any]:
    return json.loads(ASL_PATH.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    return load_template(TEMPLATE_PATH)


def states_of(definition: dict[str, Any]) -> dict[str, dict[str, Any]]:
    states: dict[str, dict[str, Any]] = definition["States"]
    # Parallel and Map states would need these checks per branch; the topic run has none.
    assert not {s["Type"] for s in states.values()} & {"Parallel", "Map"}
    return states


def transitions(state: dict[str, Any]) -> set[str]:
    """Every state this state can go to: Next, Default, each choice's Next, each catcher's Next."""
    targets = {state[key] for key in ("Next", "Default") if key in state}
    targets |= {choice["Next"] for choice in state.get("Choices", [])}
    targets |= {catcher["Next"] for catcher in state.get("Catch", [])}
    return targets


def reachable(states: dict[str, dict[str, Any]], start: str) -> set[str]:
    seen: set[str] = set()
    todo = [start]
    while todo:
        name = todo.pop()
        if name not in seen:
            seen.add(name)
            todo.extend(target for target in transitions(states[name]) if target in states)
    return seen


def tasks(definition: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    for name, state in states_of(definition).items():
        if state["Type"] == "Task":
            yield name, state


def parameter_paths(parameters: Any) -> Iterator[str]:
    """The JSONPaths of every ``"key.$"`` in a Parameters template, however deeply nested."""
    if isinstance(parameters, dict):
        for key, value in parameters.items():
            if key.endswith(".$"):
                yield value
            else:
                yield from parameter_paths(value)
    elif isinstance(parameters, list):
        for item in parameters:
            yield from parameter_paths(item)


def lambda_timeout(template: dict[str, Any], function: str) -> int:
    """A function's Lambda timeout in the template: its own, else Globals.Function's, else Lambda's 3 s."""
    resource = template["Resources"][function]
    assert resource["Type"] == "AWS::Serverless::Function", f"{function} is not a Serverless function"
    default = template.get("Globals", {}).get("Function", {}).get("Timeout", 3)
    return int(resource.get("Properties", {}).get("Timeout", default))


def substituted_function(template: dict[str, Any], placeholder: str) -> str:
    """The function a ``${...}`` placeholder resolves to: its published version, ``!Ref XFunction.Version``
    -> ``XFunction``."""
    properties = template["Resources"][STATE_MACHINE_RESOURCE]["Properties"]
    value = properties["DefinitionSubstitutions"][placeholder]
    assert isinstance(value, dict) and list(value) == ["Ref"], f"{placeholder}: {value!r}"
    resource, attribute = value["Ref"].split(".")
    assert attribute == "Version", f"{placeholder} must be a function's version, got .{attribute}"
    return str(resource)


# --- the committed file is the rendered source ----------------------------------------------------------


def test_committed_asl_equals_a_fresh_render_byte_for_byte() -> None:
    # GIVEN the committed file, WHEN the source renders again in-process, THEN nothing changes
    assert ASL_PATH.read_bytes() == topic_run.render().encode("utf-8"), "stale: run `make asl` and commit"


def test_render_is_stable_across_builds() -> None:
    assert topic_run.render() == topic_run.render()


def test_render_check_reports_every_machine_up_to_date() -> None:
    assert render_cli.STATE_MACHINES[topic_run.NAME] is topic_run.render
    assert render_cli.main(["--check"]) == 0


def test_template_deploys_the_rendered_file(template: dict[str, Any]) -> None:
    properties = template["Resources"][STATE_MACHINE_RESOURCE]["Properties"]
    assert (REPO / properties["DefinitionUri"]).resolve() == ASL_PATH


# --- graph shape -----------------------------------------------------------------------------------------


def test_every_transition_target_exists(definition: dict[str, Any]) -> None:
    states = states_of(definition)
    assert definition["StartAt"] in states
    dangling = sorted(
        (name, target)
        for name, state in states.items()
        for target in transitions(state)
        if target not in states
    )
    assert not dangling, f"transitions to missing states: {dangling}"


def test_every_state_is_reachable_from_start(definition: dict[str, Any]) -> None:
    states = states_of(definition)
    unreachable = set(states) - reachable(states, definition["StartAt"])
    assert not unreachable, f"unreachable states: {sorted(unreachable)}"


def test_every_path_can_end_in_succeed_or_fail(definition: dict[str, Any]) -> None:
    states = states_of(definition)
    for name, state in states.items():
        if state["Type"] not in ("Succeed", "Fail", "Choice"):
            assert "Next" in state or state.get("End") is True, f"{name} has neither Next nor End"
    terminal = {name for name, state in states.items() if state["Type"] in ("Succeed", "Fail")}
    stuck = {name for name in states if not reachable(states, name) & terminal}
    assert not stuck, f"states that can never reach Succeed or Fail: {sorted(stuck)}"


def test_every_state_and_the_machine_have_a_prose_comment(definition: dict[str, Any]) -> None:
    assert len(definition.get("Comment", "").split()) >= 5
    missing = [
        name for name, state in states_of(definition).items() if len(state.get("Comment", "").split()) < 5
    ]
    assert not missing, f"states without a prose Comment: {missing}"


def test_states_are_listed_in_reading_order(definition: dict[str, Any]) -> None:
    assert list(states_of(definition)) == [
        "Acquire",
        "Acquired?",
        "ProcessBatch",
        "AdvanceCheckpoint",
        "MoreBacklog?",
        "Done",
        "Paused",
        "ReleaseAfterFailure",
        "Failed",
    ]


# --- wiring with the template ------------------------------------------------------------------------------


def test_placeholders_equal_definition_substitutions(template: dict[str, Any]) -> None:
    placeholders = set(PLACEHOLDER.findall(ASL_PATH.read_text(encoding="utf-8")))
    substitutions = template["Resources"][STATE_MACHINE_RESOURCE]["Properties"]["DefinitionSubstitutions"]
    assert placeholders == set(substitutions)


def test_lambda_tasks_name_the_function_arn_as_resource(definition: dict[str, Any]) -> None:
    # The function ARN itself (not lambda:invoke) makes the output the handler's return value and the
    # error type the exception's class name.
    for name, state in tasks(definition):
        assert re.fullmatch(r"\$\{[A-Za-z0-9]+FunctionArn\}", state["Resource"]), name


@pytest.mark.parametrize("task_name", TASK_NAMES)
def test_task_timeout_exceeds_its_lambda_timeout_i8(
    definition: dict[str, Any], template: dict[str, Any], task_name: str
) -> None:
    # GIVEN the task and the function its ${...Arn} substitution resolves to
    state = states_of(definition)[task_name]
    (placeholder,) = PLACEHOLDER.findall(state["Resource"])
    function = substituted_function(template, placeholder)
    # THEN Step Functions gives up on the task only after Lambda has ended the invocation (design §3 I8)
    assert "TimeoutSecondsPath" not in state
    assert state["TimeoutSeconds"] > lambda_timeout(template, function), (task_name, function)


def test_the_timeout_check_covers_every_task(definition: dict[str, Any]) -> None:
    assert {name for name, _ in tasks(definition)} == set(TASK_NAMES)


def test_timeout_constants_are_the_rendered_timeouts(definition: dict[str, Any]) -> None:
    assert {name: state["TimeoutSeconds"] for name, state in tasks(definition)} == {
        "Acquire": topic_run.ACQUIRE_TIMEOUT_SECONDS,
        "ProcessBatch": topic_run.PROCESS_TIMEOUT_SECONDS,
        "AdvanceCheckpoint": topic_run.ADVANCE_TIMEOUT_SECONDS,
        "ReleaseAfterFailure": topic_run.RELEASE_TIMEOUT_SECONDS,
    }


# --- errors ------------------------------------------------------------------------------------------------


def test_custom_error_names_are_leanops_exception_classes(definition: dict[str, Any]) -> None:
    for name, state in states_of(definition).items():
        for handler in [*state.get("Retry", []), *state.get("Catch", [])]:
            for error in handler["ErrorEquals"]:
                if error.startswith(("States.", "Lambda.")):
                    continue
                cls = getattr(errors, error, None)
                assert inspect.isclass(cls) and issubclass(cls, errors.LeanopsError), (name, error)


def test_lock_lost_and_checkpoint_conflict_are_never_retried(definition: dict[str, Any]) -> None:
    for name, state in states_of(definition).items():
        for retrier in state.get("Retry", []):
            retried = set(retrier["ErrorEquals"])
            assert not retried & NEVER_RETRIED, (name, retried)
            assert not retried & CATCH_ALL_ERRORS, f"{name} retries every error, the verdicts included"


def test_every_task_retries_only_transient_errors_with_capped_jittered_backoff(
    definition: dict[str, Any],
) -> None:
    expected = {
        "ErrorEquals": [
            "Lambda.ServiceException",
            "Lambda.AWSLambdaException",
            "Lambda.SdkClientException",
            "Lambda.TooManyRequestsException",
            errors.StoreThrottled.__name__,
            errors.StoreUnavailable.__name__,
        ],
        "IntervalSeconds": 1,
        "MaxAttempts": 3,
        "BackoffRate": 2,
        "MaxDelaySeconds": 8,
        "JitterStrategy": "FULL",
    }
    for name, state in tasks(definition):
        assert state["Retry"] == [expected], name


def test_every_failure_releases_the_lock_then_fails_with_the_original_error(
    definition: dict[str, Any],
) -> None:
    states = states_of(definition)
    for name, state in tasks(definition):
        if name == "ReleaseAfterFailure":
            continue
        assert state["Catch"] == [
            {"ErrorEquals": ["States.ALL"], "ResultPath": "$.error", "Next": "ReleaseAfterFailure"}
        ], name
    release = states["ReleaseAfterFailure"]
    assert release["ResultPath"] is None  # keeps $.error for Failed
    assert release["Next"] == "Failed"
    assert release["Catch"] == [
        {"ErrorEquals": ["States.ALL"], "ResultPath": "$.release_error", "Next": "Failed"}
    ]
    failed = states["Failed"]
    assert (failed["ErrorPath"], failed["CausePath"]) == ("$.error.Error", "$.error.Cause")


def test_a_paused_topic_ends_the_run_successfully_with_nothing_to_release(definition: dict[str, Any]) -> None:
    # The acquire task took nothing (leanops.tasks.acquire returns outcome paused): straight to a Succeed,
    # and only the outcomes that hold the lock go on to process a batch.
    states = states_of(definition)
    routes = {choice["StringEquals"]: choice["Next"] for choice in states["Acquired?"]["Choices"]}
    assert routes == {"acquired": "ProcessBatch", "paused": "Paused"}
    assert states["Paused"]["Type"] == "Succeed"


# --- payload -----------------------------------------------------------------------------------------------


def test_tasks_pass_the_run_state_and_references_never_data(definition: dict[str, Any]) -> None:
    # Records never travel through the state machine (256 KB payload limit, design §7): a task selects only
    # the whole run state or the execution's identity, and stores only the run state or the batch's
    # references. That the handlers keep those small is checked where they run.
    for name, state in tasks(definition):
        paths = set(parameter_paths(state.get("Parameters", {})))
        assert paths <= ALLOWED_PARAMETER_PATHS, (name, paths - ALLOWED_PARAMETER_PATHS)
        assert state.get("ResultPath", "$") in ALLOWED_RESULT_PATHS, name
        assert "ResultSelector" not in state and "InputPath" not in state, name


# --- a real ASL validator ----------------------------------------------------------------------------------


def run_asl_validator(path: Path) -> subprocess.CompletedProcess[str]:
    if not ASL_VALIDATOR.exists() or shutil.which("node") is None:
        pytest.fail(f"{ASL_VALIDATOR.relative_to(REPO)} or node is missing: run `make deps`")
    return subprocess.run(
        [str(ASL_VALIDATOR), "--json-path", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_asl_validator_accepts_the_rendered_file() -> None:
    result = run_asl_validator(ASL_PATH)
    assert result.returncode == 0, result.stdout + result.stderr


def test_asl_validator_rejects_a_dangling_transition(definition: dict[str, Any], tmp_path: Path) -> None:
    # A control: the validator really checks the graph, so the test above means something.
    broken = json.loads(json.dumps(definition))
    broken["States"]["AdvanceCheckpoint"]["Next"] = "NoSuchState"
    path = tmp_path / "broken.asl.json"
    path.write_text(json.dumps(broken), encoding="utf-8")
    assert run_asl_validator(path).returncode == 1
