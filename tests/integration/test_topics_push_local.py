"""``leanops topics push`` on the local stack (decision 0013), and the local stack enforcing each function's
recorded grants (decision 0011): the same commands as against a deployed stack."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import boto3
from leanopsctl.deploy.grants import committed
from leanopsctl.local.stack import StackRecord

from tests.support.cli import finish


def leanops_json(project: dict, *args: str) -> dict[str, Any]:
    code, out, err = finish(project["leanops"](*args, "--json"))
    assert code == 0, err[-3000:]
    report: dict[str, Any] = json.loads(out)
    return report


def scheduler(project: dict) -> tuple[Any, StackRecord]:
    record = StackRecord.read(project["env_home"] / "stack.json")
    assert record is not None
    client = boto3.client(
        "scheduler",
        endpoint_url=record.endpoint,
        region_name="us-east-1",
        aws_access_key_id="x",
        aws_secret_access_key="x",
    )
    return client, record


def test_push_versions_the_topics_and_makes_their_schedules(project):
    # GIVEN the local stack, which pushed the topics file when it started
    first = leanops_json(project, "topics", "push")
    assert (first["added"], first["changed"], first["unchanged"]) == ([], [], 1)
    # WHEN the topic gets a schedule and a second topic appears, and the file is pushed
    project["write_topics"](schedule="rate(5 minutes)")
    topics = project["root"] / "topics.yaml"
    text = topics.read_text()
    topics.write_text(
        text + "  other:\n    source: {type: files, uri: ./data}\n    sink: {type: files, uri: ./other}\n"
    )
    pushed = leanops_json(project, "topics", "push")
    # THEN the changes are written once, each a new version with who and when, and the schedule exists
    assert (pushed["added"], pushed["changed"]) == (["other"], ["vt"])
    assert pushed["schedules"]["created"] == 1
    client, record = scheduler(project)
    schedule = client.get_schedule(Name="vt", GroupName=record.schedule_group)
    assert schedule["ScheduleExpression"] == "rate(5 minutes)" and schedule["State"] == "ENABLED"
    history = leanops_json(project, "topics", "history", "vt")["versions"]
    assert [v["version"] for v in history] == [2, 1]
    assert history[0]["settings"]["schedule"] == "rate(5 minutes)" and "@" in history[0]["pushed_by"]
    # AND a run reads the pushed settings
    assert leanops_json(project, "run", "vt")["records"] == 10_000


def test_a_push_that_would_remove_a_topic_needs_prune(project):
    leanops_json(project, "topics", "push")
    client, record = scheduler(project)
    # GIVEN a pushed topic that the file no longer has (pushed by hand: the local stack prunes on its own
    # when the file changes, as the file is the whole truth locally)
    project["write_topics"](schedule="rate(1 hour)")
    assert leanops_json(project, "topics", "push")["schedules"]["created"] == 1
    (project["root"] / "topics.yaml").write_text(
        (project["root"] / "topics.yaml").read_text().replace("vt:", "renamed:")
    )
    # WHEN pushed without --prune THEN it is refused, exit 2, and nothing changes: the renamed topic
    # would write the sink the pushed one still writes
    for dry_run in (("--dry-run",), ()):
        code, _out, err = finish(project["leanops"]("topics", "push", *dry_run))
        assert code == 2 and "write overlapping sinks" in err and "pass --prune" in err, err
        assert "Traceback" not in err
    assert (
        client.get_schedule(Name="vt", GroupName=record.schedule_group)["ScheduleExpression"]
        == "rate(1 hour)"
    )
    # AND with --prune the topic is removed, its schedule deleted
    pushed = leanops_json(project, "topics", "push", "--prune")
    assert (pushed["added"], pushed["removed"]) == (["renamed"], ["vt"])
    names = {s["Name"] for s in client.list_schedules(GroupName=record.schedule_group)["Schedules"]}
    assert names == {"renamed"}


def test_the_local_stack_refuses_a_call_its_function_has_no_grant_for(project, tmp_path):
    # GIVEN the recorded grants, less one the acquire task needs (it reads the topic's pushed settings)
    grants = committed()
    grants["AcquireFunction"]["state_table"].remove("dynamodb:GetItem")
    path = tmp_path / "grants.json"
    path.write_text(json.dumps(grants))
    project["env"]["LEANOPS_LOCAL_GRANTS"] = str(path)
    # WHEN a run starts THEN it fails as it would deployed, and the function log says which call was refused
    code, out, _err = finish(project["leanops"]("run", "vt", "--json"))
    assert code == 1, out
    _client, record = scheduler(project)
    log = Path(record.functions_log).read_text(encoding="utf-8")
    assert "local IAM: dynamodb:GetItem on arn:aws:dynamodb:us-east-1:123456789012:table/" in log
