"""`leanops run` / `leanops status` as users run them: separate processes sharing one local DynamoDB."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from leanopsctl.local.stack import stack_down

from examples.vehicle_telemetry.generate import generate
from tests.support.cli import committed_events, finish, wait_for_log
from tests.support.processors import STARTED

pytestmark = pytest.mark.integration


def test_eight_concurrent_runs_commit_every_record_exactly_once(project):
    # WHEN 8 `leanops run` processes start on one topic at once
    runs = [project["leanops"]("run", "vt", "--json") for _ in range(8)]
    results = [finish(p) for p in runs]
    # THEN all succeed; one run (or a few, one after another) processed, the others skipped or were up to date
    assert [code for code, _, _ in results] == [0] * 8, [err[-2000:] for _, _, err in results]
    reports = [json.loads(out) for _, out, _ in results]
    assert all(r["status"] == "SUCCEEDED" for r in reports)
    assert sum(r["records"] for r in reports) == 10_000
    assert {r["outcome"] for r in reports} <= {"processed", "skipped_locked", "up_to_date"}
    # AND the committed output holds each input record exactly once; the checkpoint is at the end
    assert committed_events(project["root"], project["leanops"]) == [f"evt-{i:09d}" for i in range(10_000)]
    assert status(project)["checkpoint"]["position"] == "date=2025-11-25/hour=02/part-00003.jsonl#2500"


def test_run_json_and_exit_codes(project):
    code, out, err = finish(project["leanops"]("run", "vt", "--json"))
    assert code == 0 and json.loads(out)["outcome"] == "processed"
    assert set(json.loads(out)) >= {
        "execution",
        "topic",
        "status",
        "outcome",
        "batches",
        "records",
        "checkpoint",
    }
    code, out, _ = finish(project["leanops"]("run", "vt", "--json", "--name", "fixed-name"))
    assert code == 0 and json.loads(out)["outcome"] == "up_to_date"
    # a reused execution name is refused as AWS refuses it: exit 2, one line, nothing on stdout
    code, out, err = finish(project["leanops"]("run", "vt", "--json", "--name", "fixed-name"))
    assert (code, out) == (2, "") and err.count("\n") == 1 and "already used" in err
    code, out, err = finish(project["leanops"]("run", "nope", "--json"))
    assert (code, out) == (2, "") and "unknown topic 'nope'" in err and "Traceback" not in err


def test_failed_run_exits_1_with_error_and_cause_in_json(project):
    project["write_topics"](processor="tests.support.processors:fail")
    code, out, _ = finish(project["leanops"]("run", "vt", "--json"))
    report = json.loads(out)
    assert code == 1 and report["status"] == "FAILED"
    assert report["error"] == "SensorFault" and "sensor calibration missing" in report["cause"]


def status(project) -> dict:
    code, out, err = finish(project["leanops"]("status", "vt", "--json"))
    assert code == 0, err
    return json.loads(out)


def test_the_stack_killed_9_mid_batch_then_takeover_after_the_lease(project):
    # A lease of 6 s renewed every 2 s while the holder lives: nothing below needs a step to take less
    # than a lease; only the heartbeat of a live process must beat within it.
    project["write_topics"](processor="tests.support.processors:block_when_armed", lease_seconds=6)
    arm = project["root"] / "arm"
    arm.write_text("")
    project["env"]["LEANOPS_TEST_ARM"] = str(arm)
    # GIVEN a run busy in its processor on the first batch, its heartbeat renewing the lease
    victim = project["leanops"]("run", "vt", "--json", "--name", "victim")
    wait_for_log(project["env_home"], STARTED, victim)
    # THEN a run started meanwhile is skipped, however long it takes to start
    code, out, _ = finish(project["leanops"]("run", "vt", "--json"))
    assert code == 0 and json.loads(out)["outcome"] == "skipped_locked"
    # WHEN the whole local stack (its server, the execution, the Lambda environments) is killed -9
    stack = json.loads((project["env_home"] / "stack.json").read_text())
    os.killpg(stack["pid"], signal.SIGKILL)
    code, _, _ = finish(victim)
    assert code != 0, "the follower cannot report success for an execution that died with its stack"
    arm.unlink()
    # THEN status names the dead run as the holder (held until its lease passes, then expired: not deleted)
    held = status(project)
    assert held["lock"]["holder"].endswith(":victim") and held["lock"]["state"] in ("held", "expired")
    # WHEN the lease plus the skew margin have passed (the lock item is still there: expired, not deleted)
    deadline = time.monotonic() + 60
    while (expired := status(project))["lock"]["state"] != "expired":
        assert time.monotonic() < deadline, "the dead run's lease never expired"
        time.sleep(0.25)
    skew_margin_s = 2.0
    while time.time() <= expired["lock"]["lease_expires_at_ms"] / 1000 + skew_margin_s:
        time.sleep(0.1)
    # THEN the next run takes over from the last checkpoint, and every record is committed exactly once
    code, out, err = finish(project["leanops"]("run", "vt", "--json"))
    report = json.loads(out)
    assert code == 0 and report["outcome"] == "processed", err[-2000:]
    assert report["records"] == 10_000
    assert committed_events(project["root"], project["leanops"]) == [f"evt-{i:09d}" for i in range(10_000)]


def test_a_run_from_another_folder_uses_the_projects_state(tmp_path):
    # GIVEN a user's project folder: a topics file and data, no template (the one leanops ships runs), no
    # LEANOPS_HOME
    project, elsewhere = tmp_path / "project", tmp_path / "elsewhere"
    elsewhere.mkdir()
    generate(project / "data", 2_000, 500, malformed=0.0)
    topic = {"source": {"type": "files", "uri": "./data"}, "sink": {"type": "files", "uri": "./out"}}
    (project / "topics.yaml").write_text(yaml.safe_dump({"topics": {"vt": topic}}))
    env = {k: v for k, v in os.environ.items() if k not in ("LEANOPS_HOME", "AWS_ENDPOINT_URL_DYNAMODB")}

    def run(cwd: Path) -> tuple[int, dict, str]:
        command = [
            sys.executable,
            "-m",
            "leanopsctl",
            "run",
            "vt",
            "--json",
            "--config",
            str(project / "topics.yaml"),
        ]
        done = subprocess.run(
            command, cwd=cwd, env=env, capture_output=True, text=True, timeout=300, check=False
        )
        return done.returncode, json.loads(done.stdout or "{}"), done.stderr

    try:
        # WHEN it runs from the project folder, then from another folder
        code, first, err = run(project)
        assert code == 0 and first["records"] == 2_000, err[-2000:]
        code, second, err = run(elsewhere)
        # THEN the second run finds the same state (up to date), and no state was made in the other folder
        assert code == 0 and second["outcome"] == "up_to_date", err[-2000:]
        assert (project / ".leanops").is_dir() and not (elsewhere / ".leanops").exists()
    finally:
        stack_down(project / ".leanops")


def test_a_run_under_another_state_refuses_the_sink_with_exit_2(project, tmp_path):
    code, out, err = finish(project["leanops"]("run", "vt", "--json"))
    assert code == 0, err[-2000:]
    sink = sorted(p.name for p in (project["root"] / "out").rglob("*"))
    # WHEN the same topics file runs under another local state (another LEANOPS_HOME: a second database)
    other_home = tmp_path / "other-home"
    project["env"]["LEANOPS_HOME"] = str(other_home)
    del project["env"]["LEANOPS_DYNAMODB_ENDPOINT"]  # a database of its own, as another home has
    try:
        code, out, err = finish(project["leanops"]("run", "vt", "--json"))
    finally:
        stack_down(other_home)
    # THEN it refuses with one line and exit 2, prints nothing on stdout, and leaves the sink as it was
    assert (code, out) == (2, ""), err[-2000:]
    assert err.count("\n") == 1 and "belongs to topic 'vt' of another state" in err and "Traceback" not in err
    assert sorted(p.name for p in (project["root"] / "out").rglob("*")) == sink
