"""Local IAM enforcement: the real task code, run with its recorded grants, works; without one it needs, the
call fails with AccessDenied as on AWS (leanopsctl.local.iam)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from leanopsctl.deploy import grants
from leanopsctl.local import iam
from moto import mock_aws

from leanops import tasks
from leanops.config import parse_topics
from leanops.data import storage
from leanops.errors import SinkError
from leanops.protocol import Protocol
from leanops.protocol import dynamodb as dynamodb_adapter
from leanops.protocol.dynamodb import DynamoDBStore
from leanops.protocol.table import create_table

TABLE = "local-iam-state"


def policies_for(function: str, *, without: str | None = None) -> list[dict[str, Any]]:
    """The function's grants.json as one policy on this test's resources (what the template grants)."""
    recorded = grants.committed()[function]
    state = [a for a in recorded.get("state_table", []) if a != without]
    data = {a for kind in ("source", "sink", "sink_marker") for a in recorded.get(kind, []) if a != without}
    statements: list[dict[str, Any]] = [
        {"Effect": "Allow", "Action": state, "Resource": iam.table_arn(TABLE, "us-east-1")},
        {
            "Effect": "Allow",
            "Action": sorted(data - {"s3:ListBucket"}),
            "Resource": "arn:aws:s3:::data/root/*",
        },
    ]
    if "s3:ListBucket" in data:
        statements.append(
            {
                "Effect": "Allow",
                "Action": "s3:ListBucket",
                "Resource": "arn:aws:s3:::data",
                "Condition": {"StringLike": {"s3:prefix": ["root/*"]}},
            }
        )
    return [{"Version": "2012-10-17", "Statement": statements}]


@pytest.fixture
def world(tmp_path, monkeypatch) -> Iterator[dict[str, Any]]:
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "x")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "x")
    with mock_aws():
        s3 = boto3.client("s3", region_name="us-east-1")
        s3.create_bucket(Bucket="data")
        s3.put_object(
            Bucket="data",
            Key="root/in/a.jsonl",
            Body=b"".join(json.dumps({"i": i}).encode() + b"\n" for i in range(3)),
        )
        create_table(boto3.client("dynamodb", region_name="us-east-1"), TABLE)
        document = {
            "topics": {
                "t": {
                    "source": {"type": "files", "uri": "s3://data/root/in"},
                    "sink": {"type": "files", "uri": "s3://data/root/out"},
                }
            }
        }
        storage._cached_s3_client.cache_clear()
        dynamodb_adapter._cached_client.cache_clear()
        yield {"topics": parse_topics(document, tmp_path / "topics.yaml")}
        iam.uninstall()
        storage._cached_s3_client.cache_clear()
        dynamodb_adapter._cached_client.cache_clear()


def acquire_and_process(world: dict[str, Any]) -> dict[str, Any]:
    """Acquire with its grants, then Process with whatever is installed on top."""
    protocol = Protocol(DynamoDBStore(TABLE, boto3.client("dynamodb", region_name="us-east-1")))
    event = {"input": {"topic": "t"}, "execution": "e1", "execution_name": "e1"}
    state = tasks.acquire(event, protocol, world["topics"]).to_json()
    assert state["outcome"] == "acquired"
    return tasks.process(tasks.RunState.from_json(state), protocol, world["topics"], lambda: 60_000).to_json()


def test_the_recorded_grants_let_the_tasks_run(world) -> None:
    iam.install(policies_for("AcquireFunction") + policies_for("ProcessFunction"))
    assert acquire_and_process(world)["records"] == 3


def test_a_function_without_an_action_it_needs_fails_with_access_denied(world) -> None:
    # GIVEN Process's policy without s3:PutObject (its sink writes), installed on top of Acquire's grants
    iam.install(policies_for("AcquireFunction") + policies_for("ProcessFunction"))
    iam.install(
        policies_for("ProcessFunction", without="s3:PutObject")
        + policies_for("AcquireFunction", without="s3:PutObject")
    )
    # WHEN the topic's batch is processed, THEN its write is refused as AWS would refuse it
    with pytest.raises(SinkError, match=r"cannot write s3://data/root/out/.*: AccessDenied") as caught:
        acquire_and_process(world)
    assert "s3:PutObject on arn:aws:s3:::data/root/out/" in str(caught.value.__cause__)


def test_the_evaluator_scopes_listing_to_the_prefix_and_deny_wins() -> None:
    policy = policies_for("ProcessFunction")
    assert iam.allowed(policy, "s3:ListBucket", "arn:aws:s3:::data", {"s3:prefix": "root/in/"})
    assert not iam.allowed(policy, "s3:ListBucket", "arn:aws:s3:::data", {"s3:prefix": "other/"})
    assert not iam.allowed(policy, "s3:ListBucket", "arn:aws:s3:::data")
    assert not iam.allowed(policy, "s3:GetObject", "arn:aws:s3:::data/rootless/x")
    deny = {"Statement": [{"Effect": "Deny", "Action": "s3:*", "Resource": "*"}]}
    assert not iam.allowed([*policy, deny], "s3:GetObject", "arn:aws:s3:::data/root/x")
    assert [
        r.action
        for r in iam.requests(
            "dynamodb",
            "TransactWriteItems",
            {"TransactItems": [{"Update": {"TableName": "a"}}, {"Put": {"TableName": "a"}}]},
            "us-east-1",
        )
    ] == ["dynamodb:UpdateItem", "dynamodb:PutItem"]
