"""Each function's template policies are exactly the grants recorded from its code's calls (grants.json).

The recording (``python -m leanopsctl.deploy.grants``) runs the tasks on moto; ``--check`` fails when the code
now makes a call the committed file lacks (or no longer makes one it has), and the comparison below fails when
the template grants a function more or less than the file says.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest
from leanopsctl.deploy import grants

from tests.deploy.test_iam import as_list

FUNCTIONS = grants.FUNCTIONS
STATE_TABLE = {"Fn::GetAtt": ["StateTable", "Arn"]}
ROOT_OBJECTS = "arn:${AWS::Partition}:s3:::${Bucket}/${Folder}/*"
ROOT_TABLE = "arn:${AWS::Partition}:dynamodb:${AWS::Region}:${AWS::AccountId}:table/${Table}"


def _resource_kind(resource: Any) -> str:
    """state_table, objects (a data root's objects), marker (a root's sink markers), table or other."""
    if resource == STATE_TABLE:
        return "state_table"
    if isinstance(resource, dict) and "Fn::If" in resource:
        resource = resource["Fn::If"][1]
    sub = resource.get("Fn::Sub") if isinstance(resource, dict) else None
    text = sub[0] if isinstance(sub, list) else sub
    if text == ROOT_OBJECTS:
        return "objects"
    if isinstance(text, str) and text.startswith(ROOT_OBJECTS) and text != ROOT_OBJECTS:
        return "marker"
    if text in (ROOT_TABLE, ROOT_TABLE + "/index/*"):  # a data table, or its indexes (a source's index)
        return "table"
    return "other"


def template_grants(template: dict[str, Any], function: str) -> dict[str, set[str]]:
    """The function's granted actions by resource kind, as the template writes them."""
    found: dict[str, set[str]] = {}
    properties = template["Resources"][function]["Properties"]
    for policy in properties["Policies"]:
        if policy == {"Ref": "DataRootsListPolicy"}:
            found.setdefault("list", set()).add("s3:ListBucket")
            continue
        for statement in as_list(policy["Statement"]):
            if "Fn::If" in statement:  # a data statement, present when a root or table is declared
                statement = statement["Fn::If"][1]
            assert statement["Effect"] == "Allow"
            kinds = {_resource_kind(r) for r in as_list(statement["Resource"])}
            assert len(kinds) == 1, (function, statement)
            found.setdefault(kinds.pop(), set()).update(as_list(statement["Action"]))
    return found


def expected_grants(recorded: dict[str, list[str]]) -> dict[str, set[str]]:
    """What the template must grant for one function's recording: state-table actions on the state table,
    S3 object actions on every data root, a marker-only action on the roots' markers, table actions on the
    data tables, and listing through DataRootsListPolicy."""
    data = [a for kind in ("source", "sink") for a in recorded.get(kind, [])]
    objects = {a for a in data if a.startswith("s3:") and a != "s3:ListBucket"}
    expected = {
        "state_table": set(recorded.get("state_table", [])),
        "objects": objects,
        "marker": {a for a in recorded.get("sink_marker", []) if a not in objects},
        "table": {a for a in data if a.startswith("dynamodb:")},
        "list": {a for a in data if a == "s3:ListBucket"},
    }
    return {kind: actions for kind, actions in expected.items() if actions}


def disagreements(template: dict[str, Any], recorded: dict[str, dict[str, list[str]]]) -> list[str]:
    found = []
    for function in FUNCTIONS:
        want, have = expected_grants(recorded[function]), template_grants(template, function)
        if want != have:
            found.append(f"{function}: grants.json needs {want}, the template grants {have}")
    return found


def test_the_committed_grants_are_what_the_code_calls() -> None:
    lines: list[str] = []
    assert grants.main(["--check"], out=lines.append) == 0, lines


def test_the_recording_sees_what_each_function_calls() -> None:
    recorded = grants.committed()
    assert not any("other" in kinds for kinds in recorded.values()), recorded
    # The known bug: Advance orders a DynamoDB source's positions (DescribeTable) on commits after the first.
    assert "dynamodb:DescribeTable" in recorded["AdvanceFunction"]["source"]
    # The heartbeat's renewal, and no data for the functions that only release.
    assert "dynamodb:UpdateItem" in recorded["ProcessFunction"]["state_table"]
    assert set(recorded["ReleaseFunction"]) == set(recorded["SafetyNetFunction"]) == {"state_table"}


def test_the_template_grants_exactly_the_recorded_calls(template: dict[str, Any]) -> None:
    assert disagreements(template, grants.committed()) == []


@pytest.mark.parametrize(
    ("function", "kind", "action"),
    [
        ("AdvanceFunction", "source", "dynamodb:DescribeTable"),
        ("AcquireFunction", "sink_marker", "s3:PutObject"),
        ("ProcessFunction", "state_table", "dynamodb:UpdateItem"),
    ],
)
def test_the_comparison_catches_a_grant_the_recording_does_not_have(
    template: dict[str, Any], function: str, kind: str, action: str
) -> None:
    recorded = copy.deepcopy(grants.committed())
    recorded[function][kind].remove(action)
    assert any(line.startswith(function) for line in disagreements(template, recorded))
