"""Least privilege, checked on the template SAM deploys (the transformed one, with SAM's generated roles).

- No IAM statement has a wildcard action, and none on a data service (DynamoDB, S3, SQS, SNS, Step
  Functions) has a wildcard resource but for the objects under one bucket's folder (a data root:
  ``arn:...:s3:::${Bucket}/${Folder}/*``); managed policies come from a short allowlist.
- Each function's actions are exactly those recorded from its code's calls (tests/deploy/test_grants.py,
  leanopsctl/deploy/grants.json): here, that the state table's are on the state table only.
- The state machine may invoke its four task functions and nothing else; the Scheduler role may start this
  state machine and dead-letter to its queue, nothing else.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterator
from typing import Any

import pytest
from leanopsctl.deploy import grants as recorded_grants

from tests.deploy.conftest import TEMPLATE_PATH, transform

#: Services whose data a wildcard could expose or destroy.
DATA_SERVICES = {"dynamodb", "s3", "sqs", "sns", "states"}
#: AWS managed policies a role may carry: logs for Lambda, trace segments for X-Ray. Nothing on data.
ALLOWED_MANAGED_POLICIES = {
    "arn:aws:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole",
    "arn:aws:iam::aws:policy/AWSXrayWriteOnlyAccess",
}
#: The stack's own managed policies (checked as any other policy resource): listing the data roots.
OWN_MANAGED_POLICIES = {"DataRootsListPolicy"}
TASK_FUNCTIONS = ("AcquireFunction", "ProcessFunction", "AdvanceFunction", "ReleaseFunction")


# --- reading policies --------------------------------------------------------------------------------------


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def policy_statements(template: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """Every statement of every identity and resource policy: (resource logical id, statement)."""
    for logical_id, resource in template["Resources"].items():
        properties = resource.get("Properties", {})
        documents = []
        if resource["Type"] == "AWS::IAM::Role":
            documents = [policy["PolicyDocument"] for policy in properties.get("Policies", [])]
        elif resource["Type"] in (
            "AWS::IAM::Policy",
            "AWS::IAM::ManagedPolicy",
            "AWS::SQS::QueuePolicy",
            "AWS::SNS::TopicPolicy",
        ):
            documents = [properties["PolicyDocument"]]
        for document in documents:
            for statement in statements_of(document):
                yield logical_id, statement


def statements_of(document: dict[str, Any]) -> list[dict[str, Any]]:
    """A policy document's statements; a conditional one (``Fn::If`` [data root declared, statement,
    NoValue]) as it is when its condition holds."""
    return [s["Fn::If"][1] if "Fn::If" in s else s for s in as_list(document["Statement"])]


def resource_text(resource: Any) -> str:
    """A resource as text: literal ARNs as they are, ``Fn::Sub`` templates as written, else the intrinsic."""
    if isinstance(resource, str):
        return resource
    if isinstance(resource, dict) and "Fn::If" in resource:  # a data-root slot: its ARN, when set
        return resource_text(resource["Fn::If"][1])
    if isinstance(resource, dict) and "Fn::Sub" in resource:
        sub = resource["Fn::Sub"]
        return sub if isinstance(sub, str) else str(sub[0])
    return repr(resource)


#: The one wildcard a data statement may carry: objects under a named bucket and prefix (no other ``*``).
SCOPED_S3_OBJECTS = re.compile(
    r"arn:(aws|\$\{AWS::Partition\}):s3:::([a-z0-9][a-z0-9.-]{1,61}[a-z0-9]|\$\{Bucket\})/"
    r"([^*?$]+|\$\{Folder\})/\*(_leanops\.json)?"
    # the archive: the stack's own bucket, its archive/ folder
    r"|\$\{ArchiveBucket\.Arn\}/archive/\*"
)
#: The one wildcard a stream statement may carry: the streams of the stack's own table.
OWN_TABLE_STREAMS = "${StateTable.Arn}/stream/*"
#: The one wildcard a source table's reads may carry: its indexes (a ``dynamodb`` source's ``index``).
DATA_TABLE_INDEXES = "arn:${AWS::Partition}:dynamodb:${AWS::Region}:${AWS::AccountId}:table/${Table}/index/*"
READS = {"dynamodb:Query", "dynamodb:DescribeTable"}


def violations(template: dict[str, Any]) -> list[str]:
    """What breaks least privilege in ``template`` (transformed), one line each."""
    found = []
    for logical_id, statement in policy_statements(template):
        if statement.get("Effect") != "Allow":
            continue
        actions = [str(action) for action in as_list(statement.get("Action", []))]
        if "NotAction" in statement or "NotResource" in statement:
            found.append(f"{logical_id}: NotAction/NotResource grants more than it names")
        for action in actions:
            if "*" in action:
                found.append(f"{logical_id}: wildcard action {action!r}")
        data_actions = [a for a in actions if a.split(":", 1)[0].lower() in DATA_SERVICES]
        if data_actions:
            for resource in as_list(statement.get("Resource", [])):
                text = resource_text(resource)
                scoped = (
                    (all(a.startswith("s3:") for a in data_actions) and SCOPED_S3_OBJECTS.fullmatch(text))
                    or text == OWN_TABLE_STREAMS
                    or (set(data_actions) <= READS and text == DATA_TABLE_INDEXES)
                )
                if "*" in text and not scoped:
                    found.append(f"{logical_id}: {data_actions} on wildcard resource {resource!r}")
    for logical_id, resource in template["Resources"].items():
        if resource["Type"] == "AWS::IAM::Role":
            for arn in resource.get("Properties", {}).get("ManagedPolicyArns", []):
                if isinstance(arn, dict) and arn.get("Ref") in OWN_MANAGED_POLICIES:
                    continue
                shown = arn if isinstance(arn, str) else resource_text(arn)
                if shown.replace("${AWS::Partition}", "aws") not in ALLOWED_MANAGED_POLICIES:
                    found.append(f"{logical_id}: managed policy {shown!r} is not on the allowlist")
    return found


def on_data_roots(resource: Any) -> bool:
    """A resource made of the stack's data roots or tables (the DataRoots and DataTables parameters)."""
    return "'DataRoots'" in str(resource) or "'DataTables'" in str(resource)


def role_of(template: dict[str, Any], resource: str) -> dict[str, Any]:
    role = template["Resources"][f"{resource}Role"]
    assert role["Type"] == "AWS::IAM::Role"
    return role


def grants(role: dict[str, Any]) -> list[tuple[str, Any]]:
    """(action, resource) pairs of a role's inline policies."""
    pairs = []
    for policy in role["Properties"].get("Policies", []):
        for statement in statements_of(policy["PolicyDocument"]):
            assert statement["Effect"] == "Allow"
            for action in as_list(statement["Action"]):
                for resource in as_list(statement["Resource"]):
                    pairs.append((action, resource))
    return pairs


# --- the checker, on the real template and on controls ----------------------------------------------------


def test_no_wildcard_action_or_data_resource_in_the_transformed_template(transformed: dict[str, Any]) -> None:
    assert violations(transformed) == []


@pytest.mark.parametrize(
    ("statement", "expected"),
    [
        (
            {"Effect": "Allow", "Action": "dynamodb:*", "Resource": {"Fn::GetAtt": ["StateTable", "Arn"]}},
            "wildcard action",
        ),
        ({"Effect": "Allow", "Action": "*", "Resource": "*"}, "wildcard action"),
        ({"Effect": "Allow", "Action": ["sqs:SendMessage"], "Resource": "*"}, "wildcard resource"),
        (
            {
                "Effect": "Allow",
                "Action": "dynamodb:GetItem",
                "Resource": {
                    "Fn::Sub": "arn:${AWS::Partition}:dynamodb:${AWS::Region}:${AWS::AccountId}:table/*"
                },
            },
            "wildcard resource",
        ),
        ({"Effect": "Allow", "Action": "states:StartExecution", "Resource": ["*"]}, "wildcard resource"),
        # S3: only objects under one named bucket's prefix may end in a wildcard
        ({"Effect": "Allow", "Action": "s3:GetObject", "Resource": "arn:aws:s3:::*"}, "wildcard resource"),
        (
            {
                "Effect": "Allow",
                "Action": "s3:GetObject",
                "Resource": {"Fn::Sub": "arn:${AWS::Partition}:s3:::*/x/*"},
            },
            "wildcard resource",
        ),
        (
            {"Effect": "Allow", "Action": "s3:GetObject", "Resource": "arn:aws:s3:::raw/*/in/*"},
            "wildcard resource",
        ),
        (
            {
                "Effect": "Allow",
                "Action": ["s3:GetObject", "dynamodb:Query"],
                "Resource": "arn:aws:s3:::raw/in/*",
            },
            "wildcard resource",
        ),
    ],
)
def test_the_checker_catches_a_wildcard(
    transformed: dict[str, Any], statement: dict[str, Any], expected: str
) -> None:
    # GIVEN the deployed template with one bad statement added to a function's role
    broken = copy.deepcopy(transformed)
    role = broken["Resources"]["ProcessFunctionRole"]["Properties"]
    role["Policies"].append({"PolicyName": "Broken", "PolicyDocument": {"Statement": [statement]}})
    # THEN the checker names it
    assert any(expected in line for line in violations(broken)), violations(broken)


def test_the_checker_catches_a_broad_managed_policy(transformed: dict[str, Any]) -> None:
    broken = copy.deepcopy(transformed)
    arns = broken["Resources"]["AcquireFunctionRole"]["Properties"]["ManagedPolicyArns"]
    arns.append("arn:aws:iam::aws:policy/AmazonDynamoDBFullAccess")
    assert any("AmazonDynamoDBFullAccess" in line for line in violations(broken))


def test_express_variant_is_least_privilege_too() -> None:
    assert violations(transform(TEMPLATE_PATH, WorkflowType="EXPRESS", Environment="prod")) == []


# --- each role, exactly -------------------------------------------------------------------------------------


@pytest.mark.parametrize("function", recorded_grants.FUNCTIONS)
def test_each_function_gets_the_recorded_state_table_actions_on_the_state_table_only(
    transformed: dict[str, Any], function: str
) -> None:
    pairs = grants(role_of(transformed, function))
    table = str({"Fn::GetAtt": ["StateTable", "Arn"]})
    on_table = {action for action, resource in pairs if str(resource) == table}
    assert on_table == set(recorded_grants.committed()[function]["state_table"])
    # Everything else is data on the data roots (tests/deploy/test_grants.py), or the safety net's queue.
    others = {(a, str(r)) for a, r in pairs if str(r) != table and not on_data_roots(r)}
    allowed_others = {"sqs:SendMessage"} if function == "SafetyNetFunction" else set()
    assert {a for a, _ in others} <= allowed_others, others


def test_the_state_machine_invokes_only_its_task_functions(transformed: dict[str, Any]) -> None:
    pairs = grants(role_of(transformed, "TopicRunStateMachine"))
    invoked = {str(resource) for action, resource in pairs if action == "lambda:InvokeFunction"}
    # their published versions (the definition names versions: a deploy never changes a running execution)
    assert invoked == {str({"Fn::Sub": f"${{{function}.Arn}}:*"}) for function in TASK_FUNCTIONS}
    other = {action for action, _ in pairs if action != "lambda:InvokeFunction"}
    assert all(action.startswith("logs:") for action in other), other  # log delivery only


def test_the_scheduler_role_can_only_start_this_state_machine(transformed: dict[str, Any]) -> None:
    role = transformed["Resources"]["SchedulerRole"]
    trust = role["Properties"]["AssumeRolePolicyDocument"]["Statement"]
    assert [s["Principal"] for s in trust] == [{"Service": "scheduler.amazonaws.com"}]
    assert sorted((action, str(resource)) for action, resource in grants(role)) == sorted(
        [
            ("states:StartExecution", str({"Ref": "TopicRunStateMachine"})),
            # Scheduler delivers dead letters with the execution role.
            ("sqs:SendMessage", str({"Fn::GetAtt": ["ScheduleDeadLetterQueue", "Arn"]})),
        ]
    )
    assert "ManagedPolicyArns" not in role["Properties"]


def test_the_processor_role_reaches_the_data_roots_only_and_never_the_state_table(
    transformed: dict[str, Any],
) -> None:
    # The processor's child runs with this role narrowed by a per-topic session policy (decision 0012): what
    # the role allows is the most any processor can get.
    role = transformed["Resources"]["ProcessorRole"]["Properties"]
    statements = [s for p in role["Policies"] for s in statements_of(p["PolicyDocument"])]
    allowed = {a for s in statements if s["Effect"] == "Allow" for a in as_list(s["Action"])}
    assert allowed == {"s3:GetObject", "s3:PutObject", "dynamodb:Query"}
    for statement in statements:
        if statement["Effect"] == "Allow":
            assert all(on_data_roots(r) for r in as_list(statement["Resource"])), statement
    (deny,) = [s for s in statements if s["Effect"] == "Deny"]
    assert deny["Action"] == "dynamodb:*" and {"Fn::GetAtt": ["StateTable", "Arn"]} in deny["Resource"]
    assert role["ManagedPolicyArns"] == [{"Ref": "DataRootsListPolicy"}]
