"""The deployment's parts agree: template <-> ASL substitutions <-> handlers <-> pushed schedules.

Each link is a place where a rename would deploy something broken without failing a build: a ``${...}`` left
unsubstituted, a Handler string that does not import, a schedule the stack cannot start runs with, an input
the acquire task cannot read, a metric the alarms watch under another name.
"""

from __future__ import annotations

import importlib
import json
import re
from pathlib import Path
from typing import Any

import pytest
from leanopsctl.deploy import schedules
from leanopsctl.deploy.schedules import ScheduleTarget
from leanopsctl.target import (
    OUTPUT_SCHEDULE_DEAD_LETTERS,
    OUTPUT_SCHEDULE_GROUP,
    OUTPUT_SCHEDULER_ROLE,
    OUTPUT_SCHEDULES_STATE,
)

from leanops import tasks
from leanops.config import load_topics
from tests.deploy.conftest import REPO, TEMPLATE_PATH, TOPICS_PATH

PLACEHOLDER = re.compile(r"\$\{([A-Za-z0-9_]+)\}")
STATE_MACHINE = "TopicRunStateMachine"
SCHEDULE_TYPE = "AWS::Scheduler::Schedule"


def resources_of_type(template: dict[str, Any], resource_type: str) -> dict[str, dict[str, Any]]:
    return {k: v for k, v in template["Resources"].items() if v["Type"] == resource_type}


def functions(template: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return resources_of_type(template, "AWS::Serverless::Function")


#: A stack's schedule target as `leanops topics push` reads it from the outputs.
TARGET = ScheduleTarget(
    "group", "arn:aws:states:us-east-1:123456789012:stateMachine:m", "arn:aws:iam::123456789012:role/s", "dlq"
)


# --- template <-> ASL <-> handlers ------------------------------------------------------------------------


def test_every_asl_placeholder_is_a_function_of_the_template(template: dict[str, Any]) -> None:
    properties = template["Resources"][STATE_MACHINE]["Properties"]
    asl = (REPO / properties["DefinitionUri"]).read_text(encoding="utf-8")
    substitutions = properties["DefinitionSubstitutions"]
    assert set(PLACEHOLDER.findall(asl)) == set(substitutions)
    for name, value in substitutions.items():
        # A published version: an execution keeps calling the code it started with through a deploy.
        (function, attribute) = value["Ref"].split(".")
        assert attribute == "Version" and function in functions(template), name
        assert name == f"{function}Arn", "placeholders are named after the function they stand for"
    assert template["Globals"]["Function"]["AutoPublishAlias"]


@pytest.mark.parametrize(
    "logical_id",
    [
        "AcquireFunction",
        "ProcessFunction",
        "AdvanceFunction",
        "ReleaseFunction",
        "SafetyNetFunction",
        "ArchiveFunction",
    ],
)
def test_every_handler_string_imports_and_is_callable(template: dict[str, Any], logical_id: str) -> None:
    handler = functions(template)[logical_id]["Properties"]["Handler"]
    module_name, _, attribute = handler.rpartition(".")
    module = importlib.import_module(module_name)
    assert callable(getattr(module, attribute)), handler
    # Lambda imports it from the package root (CodeUri): the module's file lies under functions/.
    assert Path(module.__file__ or "").is_relative_to(REPO / "functions"), module.__file__


def test_every_function_is_called_by_the_state_machine_the_safety_net_rule_or_the_table_stream(
    template: dict[str, Any],
) -> None:
    substituted = {
        value["Ref"].split(".")[0]
        for value in template["Resources"][STATE_MACHINE]["Properties"]["DefinitionSubstitutions"].values()
    }
    targeted = {
        target["Arn"]["Fn::GetAtt"][0]
        for rule in resources_of_type(template, "AWS::Events::Rule").values()
        for target in rule["Properties"]["Targets"]
    }
    streamed = {
        logical_id
        for logical_id, function in functions(template).items()
        for event in function["Properties"].get("Events", {}).values()
        if event["Type"] == "DynamoDB" and "StateTable" in str(event["Properties"]["Stream"])
    }
    assert substituted | targeted | streamed == set(functions(template))
    assert (targeted, streamed) == ({"SafetyNetFunction"}, {"ArchiveFunction"})


def test_functions_share_one_code_uri_runtime_and_architecture(template: dict[str, Any]) -> None:
    defaults = template["Globals"]["Function"]
    assert (defaults["CodeUri"], defaults["Runtime"], defaults["Architectures"]) == (
        "functions/",
        "python3.13",
        ["arm64"],
    )
    for logical_id, function in functions(template).items():
        properties = function["Properties"]
        assert not {"CodeUri", "Runtime", "Architectures"} & set(properties), logical_id
        # sam build packages each with the root Makefile's build-<Function> target (leanopsctl.deploy.bundle).
        assert function["Metadata"] == {"BuildMethod": "makefile", "ContextPath": "."}, logical_id
    makefile = (REPO / "Makefile").read_text(encoding="utf-8")
    declared = re.search(r"^SAM_FUNCTIONS := (.+)$", makefile, re.MULTILINE)
    assert declared and set(declared.group(1).split()) == set(functions(template))


def test_the_safety_net_watches_this_state_machine_for_bad_ends_on_standard_only(
    template: dict[str, Any],
) -> None:
    rule = template["Resources"]["SafetyNetRule"]
    assert rule["Condition"] == "IsStandard"
    assert template["Resources"]["SafetyNetFunction"]["Condition"] == "IsStandard"
    assert rule["Properties"]["EventPattern"] == {
        "source": ["aws.states"],
        "detail-type": ["Step Functions Execution Status Change"],
        "detail": {"status": ["FAILED", "TIMED_OUT", "ABORTED"], "stateMachineArn": [{"Ref": STATE_MACHINE}]},
    }
    assert template["Conditions"]["IsStandard"] == {"Fn::Equals": [{"Ref": "WorkflowType"}, "STANDARD"]}


# --- template <-> pushed schedules ---------------------------------------------------------------------


def test_no_resource_is_per_topic(template: dict[str, Any]) -> None:
    # Topics and schedules are pushed, not deployed: the stack is the same for one topic or ten thousand.
    assert not resources_of_type(template, SCHEDULE_TYPE)
    text = TEMPLATE_PATH.read_text(encoding="utf-8")
    for name in load_topics(TOPICS_PATH).topics:
        assert name not in text


def test_the_stack_outputs_what_a_push_needs(template: dict[str, Any]) -> None:
    outputs = template["Outputs"]
    assert outputs[OUTPUT_SCHEDULE_GROUP]["Value"] == {"Ref": "ScheduleGroup"}
    assert outputs[OUTPUT_SCHEDULER_ROLE]["Value"] == {"Fn::GetAtt": ["SchedulerRole", "Arn"]}
    dead_letters = {"Fn::GetAtt": ["ScheduleDeadLetterQueue", "Arn"]}
    assert outputs[OUTPUT_SCHEDULE_DEAD_LETTERS]["Value"] == dead_letters
    assert outputs[OUTPUT_SCHEDULES_STATE]["Value"] == {"Ref": "SchedulesState"}
    # and the role a schedule passes may start this state machine only
    statements = template["Resources"]["SchedulerRole"]["Properties"]["Policies"][0]["PolicyDocument"]
    start = [s for s in statements["Statement"] if s["Action"] == "states:StartExecution"]
    assert [s["Resource"] for s in start] == [{"Ref": STATE_MACHINE}]


def test_a_pushed_schedule_starts_a_run_named_by_the_scheduler_execution_id() -> None:
    topic = load_topics(TOPICS_PATH).topic("vehicle_telemetry")
    schedule = schedules.desired(topic, TARGET)
    target = schedule["Target"]
    assert target["Arn"] == "arn:aws:scheduler:::aws-sdk:sfn:startExecution"
    assert (target["RoleArn"], target["DeadLetterConfig"]) == (TARGET.role_arn, {"Arn": "dlq"})
    request = json.loads(target["Input"])
    # Execution names may not contain the colons of a time: the Scheduler's execution id names the run.
    assert request["StateMachineArn"] == TARGET.state_machine_arn
    assert request["Name"] == "<aws.scheduler.execution-id>"
    start = json.loads(request["Input"].replace("<aws.scheduler.scheduled-time>", "2026-11-25T10:05:00Z"))
    # THEN the run key is (topic, scheduled time): a duplicate delivery dedupes whatever the execution name
    assert tasks.run_key(start, "d32c5kddcf5bb8c3") == "scheduled:2026-11-25T10:05:00Z"
    assert start["topic"] == "vehicle_telemetry"


def test_alarms_watch_the_metrics_the_handlers_emit(template: dict[str, Any]) -> None:
    # The names the alarms and the dashboard use are the names leanops.tasks and leanops.health emit
    # (namespace leanops).
    emitters = ("tasks.py", "health.py")
    source = "".join((REPO / "functions" / "leanops" / name).read_text(encoding="utf-8") for name in emitters)
    emitted = set(re.findall(r'add_metric\(name="([A-Za-z]+)"', source))
    from leanops.observability import metrics

    assert (metrics.namespace, metrics.service) == ("leanops", "leanops")
    for logical_id, alarm in resources_of_type(template, "AWS::CloudWatch::Alarm").items():
        properties = alarm["Properties"]
        assert properties["AlarmActions"] == [{"Ref": "AlarmTopic"}], logical_id
        if properties.get("Namespace") == metrics.namespace:
            assert properties["MetricName"] in emitted, logical_id
    dashboard = template["Resources"]["Dashboard"]["Properties"]["DashboardBody"]["Fn::Sub"]
    for name in re.findall(r'MetricName=\\"([A-Za-z]+)\\"', dashboard):
        assert name in emitted | {"FailedRuns"}, name
