"""Least privilege, checked on the template SAM deploys (the transformed one, with SAM's generated roles).

- No IAM statement has a wildcard action, and none on a data service (DynamoDB, S3, SQS, SNS, Step
  Functions) has a wildcard resource but for the objects under one named bucket's prefix (a topic's S3
  source or sink: ``arn:...:s3:::bucket/prefix/*``); managed policies come from a short allowlist.
- Each function may call exactly the DynamoDB actions its task's store methods use (derived from the
  DynamoDB adapter's source), on the state table only.
- The state machine may invoke its four task functions and nothing else; the Scheduler role may start this
  state machine and dead-letter to its queue, nothing else.
"""

from __future__ import annotations

import ast
import copy
import inspect
import re
from collections.abc import Iterator
from typing import Any

import pytest

from leanops.protocol import dynamodb as dynamodb_adapter
from tests.deploy.conftest import TEMPLATE_PATH, transform

#: Services whose data a wildcard could expose or destroy.
DATA_SERVICES = {"dynamodb", "s3", "sqs", "sns", "states"}
#: AWS managed policies a role may carry: logs for Lambda, trace segments for X-Ray. Nothing on data.
ALLOWED_MANAGED_POLICIES = {
    "arn:aws:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole",
    "arn:aws:iam::aws:policy/AWSXrayWriteOnlyAccess",
}
#: The IAM action each DynamoDB API call needs. A transaction is authorized per item: TransactWriteItems
#: of Updates needs UpdateItem (there is no IAM action of its own; ConditionCheck items would need
#: ConditionCheckItem).
CALL_ACTIONS = {
    "get_item": {"dynamodb:GetItem"},
    "put_item": {"dynamodb:PutItem"},
    "update_item": {"dynamodb:UpdateItem"},
    "delete_item": {"dynamodb:DeleteItem"},
    "query": {"dynamodb:Query"},
    "scan": {"dynamodb:Scan"},
    "batch_get_item": {"dynamodb:BatchGetItem"},
    "batch_write_item": {"dynamodb:BatchWriteItem"},
}
#: The store methods each function's task calls (leanops.tasks, leanops.safety_net -> Protocol -> store):
#: acquire claims the run key, takes (or re-enters and renews) the lock, reads the checkpoint when the lock
#: item has no copy, the recent committed output (late-object look-back) and the state identity (the sink's
#: marker names it); process renews the lease (heartbeat) and reads a Parquet sink's schema; advance
#: commits (and may release, or renew after a retried commit), and reads the lock, checkpoint and an output
#: record before it deletes anything (sink_gc); release and the safety net release and record the failure.
FUNCTION_STORE_METHODS = {
    "AcquireFunction": {"claim_run", "acquire_lock", "renew_lock", "read_checkpoint", "outputs", "identity"},
    "ProcessFunction": {"renew_lock", "read_schema"},
    "AdvanceFunction": {
        "commit",
        "release_lock",
        "renew_lock",
        "read_lock",
        "read_checkpoint",
        "read_output",
    },
    "ReleaseFunction": {"release_lock", "record_failure"},
    "SafetyNetFunction": {"release_lock", "record_failure"},
}
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
            for statement in as_list(document["Statement"]):
                yield logical_id, statement


def resource_text(resource: Any) -> str:
    """A resource as text: literal ARNs as they are, ``Fn::Sub`` templates as written, else the intrinsic."""
    if isinstance(resource, str):
        return resource
    if isinstance(resource, dict) and "Fn::Sub" in resource:
        sub = resource["Fn::Sub"]
        return sub if isinstance(sub, str) else str(sub[0])
    return repr(resource)


#: The one wildcard a data statement may carry: objects under a named bucket and prefix (no other ``*``).
SCOPED_S3_OBJECTS = re.compile(
    r"arn:(aws|\$\{AWS::Partition\}):s3:::[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]/[^*?]*\*"
)


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
                scoped = all(a.startswith("s3:") for a in data_actions) and SCOPED_S3_OBJECTS.fullmatch(text)
                if "*" in text and not scoped:
                    found.append(f"{logical_id}: {data_actions} on wildcard resource {resource!r}")
    for logical_id, resource in template["Resources"].items():
        if resource["Type"] == "AWS::IAM::Role":
            for arn in resource.get("Properties", {}).get("ManagedPolicyArns", []):
                shown = arn if isinstance(arn, str) else resource_text(arn)
                if shown.replace("${AWS::Partition}", "aws") not in ALLOWED_MANAGED_POLICIES:
                    found.append(f"{logical_id}: managed policy {shown!r} is not on the allowlist")
    return found


def role_of(template: dict[str, Any], resource: str) -> dict[str, Any]:
    role = template["Resources"][f"{resource}Role"]
    assert role["Type"] == "AWS::IAM::Role"
    return role


def grants(role: dict[str, Any]) -> list[tuple[str, Any]]:
    """(action, resource) pairs of a role's inline policies."""
    pairs = []
    for policy in role["Properties"].get("Policies", []):
        for statement in as_list(policy["PolicyDocument"]["Statement"]):
            assert statement["Effect"] == "Allow"
            for action in as_list(statement["Action"]):
                for resource in as_list(statement["Resource"]):
                    pairs.append((action, resource))
    return pairs


def store_method_calls() -> dict[str, set[str]]:
    """For each method of the DynamoDB store, the client calls in its source (``self.client.<call>(...)``)."""
    tree = ast.parse(inspect.getsource(dynamodb_adapter.DynamoDBStore))
    (cls,) = [node for node in tree.body if isinstance(node, ast.ClassDef)]
    methods = {node.name: node for node in cls.body if isinstance(node, ast.FunctionDef)}
    direct = {
        name: {
            node.func.attr
            for node in ast.walk(method)
            if isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and isinstance(node.func.value, ast.Attribute)
            and node.func.value.attr == "client"
        }
        for name, method in methods.items()
    }
    helpers = {  # self._get(...) and the like: fold the helper's calls into the caller
        name: {
            node.func.attr
            for node in ast.walk(method)
            if isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and isinstance(node.func.value, ast.Name)
            and node.func.value.id == "self"
            and node.func.attr in methods
        }
        for name, method in methods.items()
    }
    return {name: direct[name].union(*(direct[h] for h in helpers[name])) for name in methods}


def needed_actions(function: str) -> set[str]:
    calls = store_method_calls()
    actions: set[str] = set()
    for method in FUNCTION_STORE_METHODS[function]:
        for call in calls[method]:
            if call == "transact_write_items":
                # IAM authorizes each item of the commit's transaction: Updates and the output's Put.
                actions |= {"dynamodb:UpdateItem", "dynamodb:PutItem"}
            else:
                actions |= CALL_ACTIONS[call]
    return actions


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


def test_store_method_calls_are_read_from_the_adapter() -> None:
    # A control on the derivation: the adapter's methods map to the client calls we know they make.
    calls = store_method_calls()
    assert calls["acquire_lock"] == {"update_item"}
    assert calls["claim_run"] == {"put_item"}
    assert calls["read_checkpoint"] == {"get_item"}
    assert calls["commit"] == {"transact_write_items"}
    assert calls["outputs"] == {"query"}
    # The commit transaction's items: two Updates (checkpoint, lock) and, with an output record, one Put.
    source = inspect.getsource(dynamodb_adapter.DynamoDBStore.commit)
    assert 'items: list[dict[str, Any]] = [{"Update": checkpoint_update}, {"Update": lock_update}]' in source
    assert 'items.append({"Put": put})' in source


@pytest.mark.parametrize("function", sorted(FUNCTION_STORE_METHODS))
def test_each_function_gets_exactly_the_dynamodb_actions_its_task_uses(
    transformed: dict[str, Any], function: str
) -> None:
    pairs = grants(role_of(transformed, function))
    dynamodb = {(action, str(resource)) for action, resource in pairs if action.startswith("dynamodb:")}
    table = str({"Fn::GetAtt": ["StateTable", "Arn"]})
    assert {action for action, _ in dynamodb} == needed_actions(function)
    assert {resource for _, resource in dynamodb} == {table}, "the state table only"
    others = {action for action, _ in pairs if not action.startswith("dynamodb:")}
    allowed_others = {"sqs:SendMessage"} if function == "SafetyNetFunction" else set()  # its failure queue
    assert others <= allowed_others, others


def test_the_state_machine_invokes_only_its_task_functions(transformed: dict[str, Any]) -> None:
    pairs = grants(role_of(transformed, "TopicRunStateMachine"))
    invoked = {str(resource) for action, resource in pairs if action == "lambda:InvokeFunction"}
    assert invoked == {str({"Fn::GetAtt": [function, "Arn"]}) for function in TASK_FUNCTIONS}
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
