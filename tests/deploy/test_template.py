"""What template.yaml promises beyond wiring and IAM: durable state, observable runs, discoverable outputs."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from leanopsctl.target import OUTPUT_TABLE

from tests.deploy.conftest import TEMPLATE_PATH, transform


def test_state_table_is_on_demand_recoverable_encrypted_streamed_and_protected_in_prod(
    template: dict[str, Any],
) -> None:
    table = template["Resources"]["StateTable"]["Properties"]
    assert table["BillingMode"] == "PAY_PER_REQUEST"
    assert table["TimeToLiveSpecification"] == {"AttributeName": "expires_at", "Enabled": True}
    assert table["PointInTimeRecoverySpecification"] == {"PointInTimeRecoveryEnabled": True}
    assert table["SSESpecification"] == {"SSEEnabled": True}
    assert table["StreamSpecification"] == {"StreamViewType": "NEW_AND_OLD_IMAGES"}
    assert table["DeletionProtectionEnabled"] == {"Fn::If": ["IsProd", True, False]}
    assert template["Conditions"]["IsProd"] == {"Fn::Equals": [{"Ref": "Environment"}, "prod"]}
    assert template["Parameters"]["Environment"]["AllowedValues"] == ["dev", "prod"]


def test_no_stack_operation_deletes_the_state_table_in_any_environment(
    template: dict[str, Any], transformed: dict[str, Any]
) -> None:
    # Losing the table restarts every topic from the beginning: a stack delete, a replacement or a rename
    # must leave it in place (docs/decisions/0010-state-table-retention.md).
    prod = transform(TEMPLATE_PATH, Environment="prod")
    for resources in (template["Resources"], transformed["Resources"], prod["Resources"]):
        table = resources["StateTable"]
        assert (table["DeletionPolicy"], table["UpdateReplacePolicy"]) == ("Retain", "Retain")
        assert "Condition" not in table  # no parameter value removes it from the stack either


def evaluate(value: Any, template: dict[str, Any], parameters: dict[str, str]) -> Any:
    """The value CloudFormation gives ``value`` (Ref, Fn::Sub, Fn::If and the condition functions only)."""
    if not isinstance(value, dict):
        return value
    ((function, argument),) = value.items()
    if function == "Ref":
        return parameters[argument]
    if function == "Fn::Sub":
        return re.sub(r"\$\{([^}]+)\}", lambda m: parameters[m.group(1)], argument)
    if function == "Fn::If":
        name, if_true, if_false = argument
        chosen = if_true if evaluate(template["Conditions"][name], template, parameters) else if_false
        return evaluate(chosen, template, parameters)
    if function == "Fn::Equals":
        return evaluate(argument[0], template, parameters) == evaluate(argument[1], template, parameters)
    if function == "Fn::Not":
        return not evaluate(argument[0], template, parameters)
    if function == "Condition":
        return evaluate(template["Conditions"][argument], template, parameters)
    raise AssertionError(f"cannot evaluate {function}")


@pytest.mark.parametrize(
    ("parameter", "table_name"),
    [("", "leanops-prod-state"), ("leanops-prod-state-r1", "leanops-prod-state-r1")],
)
def test_the_table_name_is_stable_and_the_parameter_moves_the_stack_to_another_table(
    template: dict[str, Any], parameter: str, table_name: str
) -> None:
    # GIVEN the parameter as a deploy passes it (empty by default)
    declared = template["Parameters"]["StateTableName"]
    assert declared["Default"] == ""
    assert re.fullmatch(declared["AllowedPattern"], parameter)
    parameters = {"StateTableName": parameter, "AWS::StackName": "leanops-prod"}
    # THEN the table is named by it, or after the stack (never a generated, per-replacement name)
    properties = template["Resources"]["StateTable"]["Properties"]
    assert evaluate(properties["TableName"], template, parameters) == table_name


def test_the_table_name_parameter_refuses_what_dynamodb_would(template: dict[str, Any]) -> None:
    pattern = template["Parameters"]["StateTableName"]["AllowedPattern"]
    for bad in ("ab", "has space", "a/b", "x" * 256):
        assert not re.fullmatch(pattern, bad), bad


def test_table_name_reaches_the_functions_through_the_environment(template: dict[str, Any]) -> None:
    variables = template["Globals"]["Function"]["Environment"]["Variables"]
    assert variables["LEANOPS_STATE_TABLE"] == {"Ref": "StateTable"}
    assert variables["LEANOPS_CONFIG"] == "topics.yaml"  # at the package root (leanopsctl.deploy.bundle)


def test_state_machine_type_is_a_parameter_with_logging_and_tracing(template: dict[str, Any]) -> None:
    assert template["Parameters"]["WorkflowType"]["AllowedValues"] == ["STANDARD", "EXPRESS"]
    machine = template["Resources"]["TopicRunStateMachine"]["Properties"]
    assert machine["Type"] == {"Ref": "WorkflowType"}
    assert machine["Tracing"] == {"Enabled": True}
    assert machine["Logging"]["Destinations"] == [
        {"CloudWatchLogsLogGroup": {"LogGroupArn": {"Fn::GetAtt": ["TopicRunLogGroup", "Arn"]}}}
    ]


@pytest.mark.parametrize("workflow_type", ["STANDARD", "EXPRESS"])
def test_both_workflow_types_transform_and_only_standard_has_the_safety_net(workflow_type: str) -> None:
    resources = transform(TEMPLATE_PATH, WorkflowType=workflow_type)["Resources"]
    assert resources["TopicRunStateMachine"]["Properties"]["StateMachineType"] == {"Ref": "WorkflowType"}
    assert {resources[k].get("Condition") for k in ("SafetyNetFunction", "SafetyNetRule")} == {"IsStandard"}


def test_every_log_group_has_a_retention_and_every_function_a_log_group(template: dict[str, Any]) -> None:
    groups = {k: v for k, v in template["Resources"].items() if v["Type"] == "AWS::Logs::LogGroup"}
    for logical_id, group in groups.items():
        assert group["Properties"]["RetentionInDays"] == {"Ref": "LogRetentionInDays"}, logical_id
    functions = [k for k, v in template["Resources"].items() if v["Type"] == "AWS::Serverless::Function"]
    for function in functions:
        assert groups[f"{function}LogGroup"]["Properties"]["LogGroupName"] == {
            "Fn::Sub": f"/aws/lambda/${{{function}}}"
        }


def test_outputs_let_the_cli_find_everything(template: dict[str, Any]) -> None:
    assert {
        "StateTableName",
        "TopicRunStateMachineArn",
        "WorkflowType",
        "AlarmTopicArn",
        "DashboardName",
        "ScheduleGroupName",
        "ScheduleDeadLetterQueueUrl",
        "TopicRunLogGroupName",
    } <= set(template["Outputs"])
    # `--stack` reads the table from this output: the table the functions use, whatever its name
    assert template["Outputs"][OUTPUT_TABLE]["Value"] == {"Ref": "StateTable"}


def test_dashboard_body_is_json_with_a_region_on_every_widget(template: dict[str, Any]) -> None:
    body = template["Resources"]["Dashboard"]["Properties"]["DashboardBody"]["Fn::Sub"]
    variables = set(re.findall(r"\$\{([^}!]+)\}", body))
    assert variables <= {"AWS::Region", "TopicRunStateMachine", "ScheduleDeadLetterQueue.QueueName"}
    dashboard = json.loads(re.sub(r"\$\{[^}!]+\}", "x", body))
    titles = [widget["properties"]["title"] for widget in dashboard["widgets"]]
    assert all(widget["properties"]["region"] == "x" for widget in dashboard["widgets"])
    for topic in ("Lag", "Records", "Contention", "Failures"):
        assert any(title.startswith(topic) for title in titles), topic
