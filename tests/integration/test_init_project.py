"""A project made by `leanops init` runs at once: `leanops run events` in a `leanops` process on the
project's own local stack (state in `.leanops` beside its topics file, no LEANOPS_HOME), with the template
that ships with leanops, or with the project's own copy of it (`--with-template`)."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from leanopsctl.local.dynamodb_local import find_jar
from leanopsctl.local.stack import running_stack, stack_down
from leanopsctl.project import init_project, packaged_template

from leanops.constants import ENV_DYNAMODB_LOCAL_JAR
from leanops.errors import LocalRuntimeError

pytestmark = pytest.mark.integration


def leanops_env() -> dict[str, str]:
    """The environment of a user's shell: no LEANOPS_HOME (state goes beside the topics file)."""
    env = {k: v for k, v in os.environ.items() if k not in ("LEANOPS_HOME", "AWS_ENDPOINT_URL_DYNAMODB")}
    with contextlib.suppress(LocalRuntimeError):  # the jar this session has, not an npm install per project
        env.setdefault(ENV_DYNAMODB_LOCAL_JAR, str(find_jar(install=False)))
    return env


def leanops(folder: Path, *args: str) -> tuple[int, dict, str]:
    command = [sys.executable, "-m", "leanopsctl", *args, "--json", "--config", str(folder / "topics.yaml")]
    done = subprocess.run(
        command, cwd=folder, env=leanops_env(), capture_output=True, text=True, timeout=300, check=False
    )
    return done.returncode, json.loads(done.stdout or "{}"), done.stderr


def assert_runs_the_sample(folder: Path) -> None:
    # WHEN the new project's topic runs
    code, report, err = leanops(folder, "run", "events")
    # THEN it processes the sample: 6 lines in one batch, to the end of the last file
    assert code == 0, err[-3000:]
    assert (report["status"], report["outcome"], report["batches"], report["records"]) == (
        "SUCCEEDED",
        "processed",
        1,
        6,
    )
    assert report["checkpoint"]["position"] == "2026-01-15-10.jsonl#2"
    # AND the committed output holds the 5 valid events with the derived field; the invalid one is quarantined
    code, output, err = leanops(folder, "output", "events")
    assert code == 0, err[-3000:]
    [batch] = output["batches"]
    assert (batch["written"], batch["quarantined"]) == (5, 1)
    sink = folder / "out" / "events"
    records = [json.loads(line) for line in (sink / batch["object"]).read_text().splitlines()]
    assert [(r["event_id"], r["amount_cents"]) for r in records] == [
        ("evt-0001", 1250),
        ("evt-0002", 300),
        ("evt-0004", 99),
        ("evt-0005", 25000),
        ("evt-0006", 725),
    ]
    [rejected] = [json.loads(line) for line in (sink / batch["quarantine"]).read_text().splitlines()]
    assert (rejected["raw"]["event_id"], rejected["reason"]) == ("evt-0003", "amount '12,50' is not a number")
    assert (rejected["source_key"], rejected["line"]) == ("2026-01-15-09.jsonl", 3)
    # AND a second run finds nothing new
    code, report, err = leanops(folder, "run", "events")
    assert (code, report.get("outcome")) == (0, "up_to_date"), err[-3000:]


def test_a_new_project_runs_with_the_template_that_ships(tmp_path):
    folder = tmp_path / "my-project"
    init_project(folder)
    try:
        assert_runs_the_sample(folder)
        # the local stack is the project's, beside its topics file, and runs the shipped template
        record = running_stack(folder / ".leanops")
        assert record is not None and Path(record.template) == packaged_template()
    finally:
        stack_down(folder / ".leanops")


def test_a_new_project_with_its_own_template_runs_that_template(tmp_path):
    folder = tmp_path / "custom"
    init_project(folder, with_template=True)
    try:
        assert_runs_the_sample(folder)
        record = running_stack(folder / ".leanops")
        assert record is not None and Path(record.template) == folder / "template.yaml"
    finally:
        stack_down(folder / ".leanops")
