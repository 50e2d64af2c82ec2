"""The local stack as a service (leanopsctl.local.stack): `leanops local up|status|logs|down`, runs started
and followed through the Step Functions API, history, the scheduler, code changes picked up."""

from __future__ import annotations

import json
import os
import signal
from typing import Any

import boto3
import psutil
from leanopsctl import executions
from leanopsctl.local.stack import StackRecord

from tests.support.cli import finish


def leanops_json(project: dict, *args: str) -> dict[str, Any]:
    code, out, err = finish(project["leanops"](*args, "--json"))
    assert code == 0, err[-3000:]
    report: dict[str, Any] = json.loads(out)
    return report


def sfn_client(project: dict) -> tuple[Any, StackRecord]:
    record = StackRecord.read(project["env_home"] / "stack.json")
    assert record is not None
    client = boto3.client(
        "stepfunctions",
        endpoint_url=record.endpoint,
        region_name="us-east-1",
        aws_access_key_id="x",
        aws_secret_access_key="x",
    )
    return client, record


def test_up_status_run_no_wait_history_logs_down(project):
    code, out, err = finish(project["leanops"]("local", "up"))
    assert code == 0 and out.startswith("local stack started: "), err
    code, out, _ = finish(project["leanops"]("local", "up"))
    assert code == 0 and out.startswith("local stack already running: ")
    # WHEN a run is started without waiting
    code, out, err = finish(project["leanops"]("run", "vt", "--no-wait"))
    assert code == 0 and out.strip().startswith("arn:aws:states:"), err
    arn = out.strip()
    # THEN it goes on in the stack; the history shows it once it ends (waiting on its state, not on time)
    sfn, _record = sfn_client(project)
    ended = executions.follow(sfn, arn)
    assert ended.status == "SUCCEEDED" and ended.output["records"] == 10_000
    history = leanops_json(project, "history", "vt")
    assert [(e["execution"], e["outcome"], e["records"]) for e in history["executions"]] == [
        (arn, "processed", 10_000)
    ]
    code, out, _ = finish(project["leanops"]("local", "logs", "-n", "5000"))
    assert code == 0 and "START RequestId:" in out and "REPORT RequestId:" in out
    # AND down stops it: status says so, with exit 1
    code, out, _ = finish(project["leanops"]("local", "down"))
    assert code == 0 and out.startswith("local stack stopped")
    code, out, _ = finish(project["leanops"]("local", "status"))
    assert code == 1 and "not running" in out


def test_following_reads_each_history_event_once_and_in_order(project):
    report = leanops_json(project, "run", "vt")
    sfn, _record = sfn_client(project)
    seen: list[dict[str, Any]] = []
    followed = executions.follow(sfn, report["execution"], seen.append, keep_events=True)
    whole: list[dict[str, Any]] = []
    arguments: dict[str, Any] = {"executionArn": report["execution"], "maxResults": 7}
    while True:  # pages of 7, oldest first: the paging the stack serves (maxResults, nextToken)
        page = sfn.get_execution_history(**arguments)
        whole += page["events"]
        if "nextToken" not in page:
            break
        arguments["nextToken"] = page["nextToken"]
    assert [e["id"] for e in seen] == [e["id"] for e in whole] == sorted({e["id"] for e in whole})
    assert followed.states_entered == report["states_entered"] > 0


def test_an_edited_topics_file_reaches_the_next_run(project):
    assert leanops_json(project, "run", "vt")["outcome"] == "processed"
    # WHEN the topic's processor changes between two runs on the same warm stack
    project["write_topics"](processor="tests.support.processors:fail")
    generate_more(project)
    code, out, _ = finish(project["leanops"]("run", "vt", "--json"))
    # THEN the next run uses it (the environments INIT again), not the code they were warm with
    assert code == 1 and json.loads(out)["error"] == "SensorFault"


def generate_more(project: dict) -> None:
    from examples.vehicle_telemetry.generate import generate

    generate(project["root"] / "data" / "more", 100, 100, malformed=0.0)


def test_the_lambda_environments_never_outlive_their_stack(project):
    assert leanops_json(project, "run", "vt")["outcome"] == "processed"
    _sfn, record = sfn_client(project)
    workers = psutil.Process(record.pid).children()
    assert workers, "a run leaves warm environments"
    # WHEN the stack alone is killed -9 (not its process group), THEN its environments exit by themselves
    os.kill(record.pid, signal.SIGKILL)
    _gone, alive = psutil.wait_procs(workers, timeout=60)
    assert alive == [], [p.pid for p in alive]
