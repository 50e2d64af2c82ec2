"""What template.yaml promises beyond wiring and IAM: durable state, observable runs, discoverable outputs."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

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


def test_dashboard_body_is_json_with_a_region_on_every_widget(template: dict[str, Any]) -> None:
    body = template["Resources"]["Dashboard"]["Properties"]["DashboardBody"]["Fn::Sub"]
    variables = set(re.findall(r"\$\{([^}!]+)\}", body))
    assert variables <= {"AWS::Region", "TopicRunStateMachine", "ScheduleDeadLetterQueue.QueueName"}
    dashboard = json.loads(re.sub(r"\$\{[^}!]+\}", "x", body))
    titles = [widget["properties"]["title"] for widget in dashboard["widgets"]]
    assert all(widget["properties"]["region"] == "x" for widget in dashboard["widgets"])
    for topic in ("Lag", "Records", "Contention", "Failures"):
        assert any(title.startswith(topic) for title in titles), topic
