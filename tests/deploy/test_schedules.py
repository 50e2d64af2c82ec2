"""The generator of template.yaml's per-topic block (schedules, alarms, data access) from a topics file.

The committed template is checked against topics.yaml in test_wiring; here the generator itself, on topics
files made for each case, including a rendered template that cfn-lint must accept as it accepts ours.
"""

from __future__ import annotations

import ast
import inspect
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from leanopsctl.deploy import schedules

from leanops.config import load_topics
from leanops.data import storage
from leanops.errors import ConfigError
from tests.deploy.conftest import DEPLOY_PYTHON, TEMPLATE_PATH, deploy_python, transform
from tests.deploy.test_iam import violations
from tests.workflows.cfn_yaml import CfnSafeLoader

#: A topic's local source and sink (a sink of its own: two topics never share one).
LOCAL_ENDPOINTS = {
    "source": "source: {type: files, uri: ./in}",
    "sink": "sink: {type: files, uri: ./out/{name}}",
}
S3_TOPIC = "source: {type: files, uri: s3://raw-data/telemetry/}\nsink: {type: files, uri: s3://lake/out}"
DYNAMODB_TOPIC = (
    "source: {type: dynamodb, table: events, partition_key: device, partition_value: d1, sort_key: ts}"
)


def topics_file(tmp_path: Path, body: dict[str, str]) -> Path:
    """A topics file with one topic per entry: name -> extra settings (YAML lines); a local source and sink
    unless the extra settings name their own."""
    lines = ["topics:"]
    for name, extra in body.items():
        lines.append(f"  {name}:")
        own = {line.split(":", 1)[0] for line in extra.splitlines()}
        lines.extend(
            f"    {line.replace('{name}', name)}" for key, line in LOCAL_ENDPOINTS.items() if key not in own
        )
        lines.extend(f"    {line}" for line in extra.splitlines())
    path = tmp_path / "topics.yaml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def rendered_resources(path: Path) -> dict[str, Any]:
    block = schedules.render_block(load_topics(path))
    resources: dict[str, Any] = yaml.load("Resources:\n" + block, Loader=CfnSafeLoader)["Resources"]
    return resources


@pytest.mark.parametrize(
    ("expression", "seconds"),
    [
        ("rate(5 minutes)", 300),
        ("rate(1 minute)", 60),
        ("rate(2 hours)", 7200),
        ("rate(1 day)", 86400),
        ("cron(0 * * * ? *)", None),
        ("at(2026-12-01T00:00:00)", None),
        (None, None),
    ],
)
def test_period_of_a_schedule_expression(expression: str | None, seconds: int | None) -> None:
    assert schedules.period_seconds(expression) == seconds


def test_logical_ids_are_camel_case_and_colliding_names_get_a_hash(tmp_path: Path) -> None:
    ids = schedules.logical_ids(
        load_topics(topics_file(tmp_path, {"a_b": "", "a.b": "", "vehicle_telemetry": ""}))
    )
    assert ids["vehicle_telemetry"].schedule == "TopicVehicleTelemetrySchedule"
    assert ids["a_b"].stem != ids["a.b"].stem
    assert ids["a_b"].stem.startswith("TopicAB") and len(ids["a_b"].stem) == len("TopicAB") + 8
    for resources in ids.values():
        assert resources.stem.isalnum()


def test_only_scheduled_topics_get_a_schedule_every_topic_gets_alarms(tmp_path: Path) -> None:
    path = topics_file(
        tmp_path,
        {
            "every_5m": "schedule: rate(5 minutes)\nlease_seconds: 60",
            "hourly": "schedule: cron(0 * * * ? *)",
            "manual": "lease_seconds: 600",
        },
    )
    resources = rendered_resources(path)
    assert {k for k, v in resources.items() if v["Type"] == "AWS::Scheduler::Schedule"} == {
        "TopicEvery5mSchedule",
        "TopicHourlySchedule",
    }
    for stem in ("TopicEvery5m", "TopicHourly", "TopicManual"):
        assert resources[f"{stem}LagAlarm"]["Properties"]["MetricName"] == "LagSeconds"
        assert resources[f"{stem}LockHeldAlarm"]["Properties"]["MetricName"] == "LockContention"
    # rate(5 minutes): a window of a fifth of the period, retries for at most one period
    five = resources["TopicEvery5mSchedule"]["Properties"]
    assert five["FlexibleTimeWindow"] == {"Mode": "FLEXIBLE", "MaximumWindowInMinutes": 1}
    assert five["Target"]["RetryPolicy"]["MaximumEventAgeInSeconds"] == 300
    assert "ScheduleExpressionTimezone" not in five
    assert resources["TopicHourlySchedule"]["Properties"]["ScheduleExpressionTimezone"] == "UTC"
    # lock held: the longer of the lease and the period, whole minutes, several in a row
    assert resources["TopicEvery5mLockHeldAlarm"]["Properties"]["Period"] == 300
    assert resources["TopicManualLockHeldAlarm"]["Properties"]["Period"] == 600
    assert (
        resources["TopicManualLockHeldAlarm"]["Properties"]["EvaluationPeriods"]
        == schedules.LOCK_HELD_PERIODS
    )
    # no successful run: three periods of the slowest schedule (cron counts as an hour)
    quiet = resources["NoSuccessfulRunAlarm"]["Properties"]
    assert (quiet["Period"], quiet["TreatMissingData"]) == (3 * 3600, "breaching")


def test_without_scheduled_topics_there_is_no_silence_alarm(tmp_path: Path) -> None:
    resources = rendered_resources(topics_file(tmp_path, {"manual": ""}))
    assert "NoSuccessfulRunAlarm" not in resources
    assert not [r for r in resources.values() if r["Type"] == "AWS::Scheduler::Schedule"]


def test_data_access_is_granted_per_task_and_scoped_to_the_topics_prefix_or_table(tmp_path: Path) -> None:
    # GIVEN topics reading S3 and writing S3, reading DynamoDB and writing locally, and all local
    path = topics_file(tmp_path, {"s3": S3_TOPIC, "ddb": DYNAMODB_TOPIC, "local": ""})
    resources = rendered_resources(path)
    policies = {k: v["Properties"] for k, v in resources.items() if v["Type"] == "AWS::IAM::Policy"}

    def grants(logical_id: str) -> list[tuple[list[str], str, Any]]:
        statements = policies.pop(logical_id)["PolicyDocument"]["Statement"]
        return [(s["Action"], s["Resource"]["Fn::Sub"], s.get("Condition")) for s in statements]

    bucket = "arn:${AWS::Partition}:s3:::"
    raw_listing = (["s3:ListBucket"], bucket + "raw-data", {"StringLike": {"s3:prefix": ["telemetry/*"]}})
    # THEN acquire lists the source (check, late objects), stats or reads the checkpoint's object (the
    # up-to-date check), and reads or writes the sink's marker only; process reads the source and writes in
    # the sink, never deletes; advance lists and deletes in the sink (what the state shows settled)
    assert grants("TopicS3AcquireDataAccess") == [
        raw_listing,
        (["s3:GetObject"], bucket + "raw-data/telemetry/*", None),
        (["s3:GetObject", "s3:PutObject"], bucket + "lake/out/_leanops.json", None),
    ]
    assert grants("TopicS3ProcessDataAccess") == [
        raw_listing,
        (["s3:GetObject"], bucket + "raw-data/telemetry/*", None),
        (["s3:PutObject"], bucket + "lake/out/*", None),
    ]
    assert grants("TopicS3AdvanceDataAccess") == [
        (["s3:ListBucket"], bucket + "lake", {"StringLike": {"s3:prefix": ["out/*"]}}),
        (["s3:DeleteObject"], bucket + "lake/out/*", None),
    ]
    table = "arn:${AWS::Partition}:dynamodb:${AWS::Region}:${AWS::AccountId}:table/events"
    assert grants("TopicDdbAcquireDataAccess") == [(["dynamodb:DescribeTable"], table, None)]
    assert grants("TopicDdbProcessDataAccess") == [
        (["dynamodb:DescribeTable", "dynamodb:Query"], table, None)
    ]
    # AND nothing else: no policy for local endpoints, none for a task that does not touch the data
    assert policies == {}
    assert resources["TopicS3ProcessDataAccess"]["Properties"]["Roles"] == [{"Ref": "ProcessFunctionRole"}]


def test_the_s3_calls_of_the_store_are_the_granted_actions(tmp_path: Path) -> None:
    # The S3 store's client calls, read from its source, map to the four actions data_access grants.
    tree = ast.parse(inspect.getsource(storage.S3Store))
    calls = {
        node.func.attr
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and isinstance(node.func.value, ast.Attribute)
        and node.func.value.attr == "client"
    }
    actions = {"list_objects_v2": "s3:ListBucket", "get_paginator": "s3:ListBucket"}
    actions |= {
        "get_object": "s3:GetObject",
        "head_object": "s3:GetObject",  # IAM grants HEAD by s3:GetObject
        "put_object": "s3:PutObject",
        "delete_object": "s3:DeleteObject",
    }
    assert calls <= set(actions), f"S3 calls without a grant: {calls - set(actions)}"
    granted = {
        action
        for statements in schedules.data_access(
            load_topics(topics_file(tmp_path, {"t": S3_TOPIC})).topics["t"]
        ).values()
        for statement in statements
        for action in statement["Action"]
    }
    assert {actions[call] for call in calls} == granted


def test_rewrite_replaces_only_the_block_and_is_idempotent() -> None:
    text = TEMPLATE_PATH.read_text(encoding="utf-8")
    once = schedules.rewrite(text, "  X:\n    Type: AWS::SNS::Topic\n")
    assert schedules.generated_block(once) == "  X:\n    Type: AWS::SNS::Topic\n"
    assert schedules.rewrite(once, schedules.generated_block(text)) == text
    outside = lambda t: t.split(schedules.BEGIN_MARKER)[0] + t.split(schedules.END_MARKER)[1]  # noqa: E731
    assert outside(once) == outside(text)


@pytest.mark.parametrize(
    "broken",
    [
        "Resources:\n",
        f"Resources:\n{schedules.END_MARKER}\n{schedules.BEGIN_MARKER}\n",
        f"Resources:\n{schedules.BEGIN_MARKER}\n{schedules.BEGIN_MARKER}\n{schedules.END_MARKER}\n",
    ],
)
def test_missing_or_misordered_markers_are_a_config_error(broken: str) -> None:
    with pytest.raises(ConfigError, match="markers"):
        schedules.rewrite(broken, "")


def test_check_reports_drift_without_writing_and_a_rewrite_fixes_it(tmp_path: Path) -> None:
    # GIVEN a copy of the template and a topics file with a new scheduled topic (in S3)
    template = tmp_path / "template.yaml"
    template.write_text(TEMPLATE_PATH.read_text(encoding="utf-8"), encoding="utf-8")
    topics = topics_file(
        tmp_path,
        {"vehicle_telemetry": "schedule: rate(5 minutes)", "new_one": f"schedule: rate(1 hour)\n{S3_TOPIC}"},
    )
    args = ["--topics", str(topics), "--template", str(template)]
    before = template.read_text(encoding="utf-8")
    # WHEN checked, THEN it is stale and untouched; WHEN rewritten, THEN the check passes
    assert schedules.main([*args, "--check"]) == 1
    assert template.read_text(encoding="utf-8") == before
    assert schedules.main(args) == 0
    assert schedules.main([*args, "--check"]) == 0
    assert "TopicNewOneSchedule:" in template.read_text(encoding="utf-8")
    assert "TopicNewOneProcessDataAccess:" in template.read_text(encoding="utf-8")


def test_a_bad_topics_file_exits_2(tmp_path: Path) -> None:
    (tmp_path / "topics.yaml").write_text("topics: {}\n", encoding="utf-8")
    assert (
        schedules.main(
            ["--topics", str(tmp_path / "topics.yaml"), "--template", str(TEMPLATE_PATH), "--check"]
        )
        == 2
    )


def test_a_rendered_template_with_many_topics_lints_clean_and_stays_least_privilege(tmp_path: Path) -> None:
    # GIVEN the template rendered for topics of every kind (rate, cron, none, colliding names, S3, DynamoDB)
    topics = topics_file(
        tmp_path,
        {
            "vehicle_telemetry": "schedule: rate(5 minutes)",
            "a_b": "schedule: rate(1 minute)",
            "a.b": "schedule: cron(15 3 * * ? *)",
            "manual": "lease_seconds: 30",
            "in_s3": S3_TOPIC,
            "in_dynamodb": DYNAMODB_TOPIC,
        },
    )
    template = tmp_path / "template.yaml"
    text = TEMPLATE_PATH.read_text(encoding="utf-8")
    template.write_text(
        schedules.rewrite(text, schedules.render_block(load_topics(topics))), encoding="utf-8"
    )
    # THEN cfn-lint (with the serverless rules, as `make lint` runs it) reports nothing
    deploy_python()
    cfn_lint = DEPLOY_PYTHON.parent / "cfn-lint"
    result = subprocess.run(
        [str(cfn_lint), "--append-rules", "cfn_lint_serverless.rules", "--", str(template)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    # AND SAM transforms it into a template with no wildcard on data
    assert violations(transform(template)) == []


def test_a_topics_lag_objective_is_its_lag_alarms_threshold(tmp_path: Path) -> None:
    path = topics_file(tmp_path, {"nightly": "lag_objective_seconds: 93600", "default": ""})
    resources = rendered_resources(path)
    assert resources["TopicNightlyLagAlarm"]["Properties"]["Threshold"] == 93600
    assert resources["TopicDefaultLagAlarm"]["Properties"]["Threshold"] == {
        "Ref": "DefaultLagObjectiveSeconds"
    }


@pytest.mark.parametrize("value", [0, 59, "1h", True, 1.5])
def test_a_lag_objective_that_is_not_whole_seconds_from_a_minute_is_refused(tmp_path: Path, value) -> None:
    path = topics_file(tmp_path, {"t": f"lag_objective_seconds: {value}"})
    with pytest.raises(ConfigError, match="lag_objective_seconds must be a whole number of seconds >= 60"):
        load_topics(path)
