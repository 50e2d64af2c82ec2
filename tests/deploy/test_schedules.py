"""The generator of template.yaml's per-topic block: schedules and alarms derived from a topics file.

The committed template is checked against topics.yaml in test_wiring; here the generator itself, on topics
files made for each case, including a rendered template that cfn-lint must accept as it accepts ours.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from leanops.config import load_topics
from leanops.deploy import schedules
from leanops.errors import ConfigError
from tests.deploy.conftest import DEPLOY_PYTHON, TEMPLATE_PATH, deploy_python, transform
from tests.deploy.test_iam import violations
from tests.workflows.cfn_yaml import CfnSafeLoader

TOPIC = "source: {type: files, uri: ./in}\n    sink: {type: files, uri: ./out}"


def topics_file(tmp_path: Path, body: dict[str, str]) -> Path:
    """A topics file with one topic per entry: name -> extra settings (YAML lines)."""
    lines = ["topics:"]
    for name, extra in body.items():
        lines.append(f"  {name}:")
        lines.append(f"    {TOPIC}")
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
    # GIVEN a copy of the template and a topics file with a new scheduled topic
    template = tmp_path / "template.yaml"
    template.write_text(TEMPLATE_PATH.read_text(encoding="utf-8"), encoding="utf-8")
    topics = topics_file(
        tmp_path, {"vehicle_telemetry": "schedule: rate(5 minutes)", "new_one": "schedule: rate(1 hour)"}
    )
    args = ["--topics", str(topics), "--template", str(template)]
    before = template.read_text(encoding="utf-8")
    # WHEN checked, THEN it is stale and untouched; WHEN rewritten, THEN the check passes
    assert schedules.main([*args, "--check"]) == 1
    assert template.read_text(encoding="utf-8") == before
    assert schedules.main(args) == 0
    assert schedules.main([*args, "--check"]) == 0
    assert "TopicNewOneSchedule:" in template.read_text(encoding="utf-8")


def test_a_bad_topics_file_exits_2(tmp_path: Path) -> None:
    (tmp_path / "topics.yaml").write_text("topics: {}\n", encoding="utf-8")
    assert (
        schedules.main(
            ["--topics", str(tmp_path / "topics.yaml"), "--template", str(TEMPLATE_PATH), "--check"]
        )
        == 2
    )


def test_a_rendered_template_with_many_topics_lints_clean_and_stays_least_privilege(tmp_path: Path) -> None:
    # GIVEN the template rendered for topics of every kind (rate, cron, none, colliding names)
    topics = topics_file(
        tmp_path,
        {
            "vehicle_telemetry": "schedule: rate(5 minutes)",
            "a_b": "schedule: rate(1 minute)",
            "a.b": "schedule: cron(15 3 * * ? *)",
            "manual": "lease_seconds: 30",
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
