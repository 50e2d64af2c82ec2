"""The deployment's parts agree: template <-> ASL substitutions <-> handlers <-> topics.yaml schedules.

Each link is a place where a rename or an added topic would deploy something broken without failing a build:
a ``${...}`` left unsubstituted, a Handler string that does not import, a schedule missing or stale, an input
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


def schedule_request(schedule: dict[str, Any]) -> dict[str, Any]:
    """The StartExecution request a schedule sends (its ``Target.Input``, ``${...}`` left as written)."""
    raw = schedule["Properties"]["Target"]["Input"]
    assert isinstance(raw, dict) and list(raw) == ["Fn::Sub"], raw
    request: dict[str, Any] = json.loads(raw["Fn::Sub"])
    return request


# --- template <-> ASL <-> handlers ------------------------------------------------------------------------


def test_every_asl_placeholder_is_a_function_of_the_template(template: dict[str, Any]) -> None:
    properties = template["Resources"][STATE_MACHINE]["Properties"]
    asl = (REPO / properties["DefinitionUri"]).read_text(encoding="utf-8")
    substitutions = properties["DefinitionSubstitutions"]
    assert set(PLACEHOLDER.findall(asl)) == set(substitutions)
    for name, value in substitutions.items():
        (function, attribute) = value["Fn::GetAtt"]
        assert attribute == "Arn" and function in functions(template), name
        assert name == f"{function}Arn", "placeholders are named after the function they stand for"


@pytest.mark.parametrize(
    "logical_id",
    ["AcquireFunction", "ProcessFunction", "AdvanceFunction", "ReleaseFunction", "SafetyNetFunction"],
)
def test_every_handler_string_imports_and_is_callable(template: dict[str, Any], logical_id: str) -> None:
    handler = functions(template)[logical_id]["Properties"]["Handler"]
    module_name, _, attribute = handler.rpartition(".")
    module = importlib.import_module(module_name)
    assert callable(getattr(module, attribute)), handler
    # Lambda imports it from the package root (CodeUri): the module's file lies under functions/.
    assert Path(module.__file__ or "").is_relative_to(REPO / "functions"), module.__file__


def test_every_function_is_called_by_the_state_machine_or_the_safety_net_rule(
    template: dict[str, Any],
) -> None:
    substituted = {
        value["Fn::GetAtt"][0]
        for value in template["Resources"][STATE_MACHINE]["Properties"]["DefinitionSubstitutions"].values()
    }
    targeted = {
        target["Arn"]["Fn::GetAtt"][0]
        for rule in resources_of_type(template, "AWS::Events::Rule").values()
        for target in rule["Properties"]["Targets"]
    }
    assert substituted | targeted == set(functions(template))
    assert targeted == {"SafetyNetFunction"}


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


# --- template <-> topics.yaml -----------------------------------------------------------------------------


def test_generated_block_is_up_to_date_with_topics_yaml() -> None:
    # GIVEN the committed template and topics file, WHEN the block renders again, THEN nothing changes
    text = TEMPLATE_PATH.read_text(encoding="utf-8")
    expected = schedules.render_block(load_topics(TOPICS_PATH))
    assert schedules.generated_block(text) == expected, "stale: run `python -m leanopsctl.deploy.schedules`"
    assert schedules.main(["--check", "--topics", str(TOPICS_PATH), "--template", str(TEMPLATE_PATH)]) == 0


def test_one_schedule_per_scheduled_topic_and_none_for_others(template: dict[str, Any]) -> None:
    topics = load_topics(TOPICS_PATH).topics
    by_topic = {}
    for logical_id, schedule in resources_of_type(template, SCHEDULE_TYPE).items():
        run_input = json.loads(schedule_request(schedule)["Input"])
        assert run_input["topic"] not in by_topic, f"two schedules for {run_input['topic']}"
        by_topic[run_input["topic"]] = (logical_id, schedule)
    assert set(by_topic) == {name for name, topic in topics.items() if topic.schedule}
    for name, (logical_id, schedule) in by_topic.items():
        assert schedule["Properties"]["ScheduleExpression"] == topics[name].schedule, logical_id


def test_schedules_start_this_state_machine_named_by_the_scheduler_execution_id(
    template: dict[str, Any],
) -> None:
    scheduled = resources_of_type(template, SCHEDULE_TYPE)
    assert scheduled, "topics.yaml schedules at least one topic"
    for logical_id, schedule in scheduled.items():
        properties = schedule["Properties"]
        target = properties["Target"]
        assert target["Arn"] == {"Fn::Sub": "arn:${AWS::Partition}:scheduler:::aws-sdk:sfn:startExecution"}
        assert target["RoleArn"] == {"Fn::GetAtt": ["SchedulerRole", "Arn"]}
        assert target["DeadLetterConfig"] == {"Arn": {"Fn::GetAtt": ["ScheduleDeadLetterQueue", "Arn"]}}
        assert {"MaximumEventAgeInSeconds", "MaximumRetryAttempts"} <= set(target["RetryPolicy"])
        assert properties["FlexibleTimeWindow"]["Mode"] == "FLEXIBLE"
        assert properties["GroupName"] == {"Ref": "ScheduleGroup"}
        request = schedule_request(schedule)
        # Execution names may not contain the colons of a time: the Scheduler's execution id names the run.
        assert request["StateMachineArn"] == "${TopicRunStateMachine}", logical_id
        assert request["Name"] == "<aws.scheduler.execution-id>", logical_id
        assert json.loads(request["Input"])["scheduled_time"] == "<aws.scheduler.scheduled-time>"


def test_the_acquire_task_reads_a_scheduled_start_as_a_scheduled_run_key(template: dict[str, Any]) -> None:
    # GIVEN the input a schedule sends, as Scheduler fills it in
    (schedule, *_) = resources_of_type(template, SCHEDULE_TYPE).values()
    start = json.loads(
        schedule_request(schedule)["Input"].replace("<aws.scheduler.scheduled-time>", "2026-11-25T10:05:00Z")
    )
    # THEN the run key is (topic, scheduled time): a duplicate delivery dedupes whatever the execution name
    assert tasks.run_key(start, "d32c5kddcf5bb8c3") == "scheduled:2026-11-25T10:05:00Z"
    load_topics(TOPICS_PATH).topic(start["topic"])  # and the topic is one the functions know


def test_alarms_watch_the_metrics_the_handlers_emit(template: dict[str, Any]) -> None:
    # The names the alarms and the dashboard use are the names leanops.tasks emits (namespace leanops).
    source = (REPO / "functions" / "leanops" / "tasks.py").read_text(encoding="utf-8")
    emitted = set(re.findall(r'add_metric\(name="([A-Za-z]+)"', source))
    from leanops.observability import metrics

    assert metrics.namespace == schedules.METRICS_NAMESPACE
    assert metrics.service == schedules.METRICS_SERVICE
    for logical_id, alarm in resources_of_type(template, "AWS::CloudWatch::Alarm").items():
        properties = alarm["Properties"]
        assert properties["AlarmActions"] == [{"Ref": "AlarmTopic"}], logical_id
        if properties.get("Namespace") == schedules.METRICS_NAMESPACE:
            assert properties["MetricName"] in emitted, logical_id
    dashboard = template["Resources"]["Dashboard"]["Properties"]["DashboardBody"]["Fn::Sub"]
    for name in re.findall(r'MetricName=\\"([A-Za-z]+)\\"', dashboard):
        assert name in emitted | {"FailedRuns"}, name


def test_no_successful_run_alarm_treats_silence_as_breaching(template: dict[str, Any]) -> None:
    alarm = template["Resources"]["NoSuccessfulRunAlarm"]["Properties"]
    assert alarm["TreatMissingData"] == "breaching"
    assert (alarm["Namespace"], alarm["MetricName"]) == ("AWS/States", "ExecutionsSucceeded")
