"""Fixtures of the CLI-level integration tests: a project folder driven through `leanops` processes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from leanopsctl.local.dynamodb_local import ENV_EXTERNAL_ENDPOINT
from leanopsctl.local.stack import stack_down

from examples.vehicle_telemetry.generate import generate
from tests.conftest import unique_table_name

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def project(tmp_path, dynamodb_local, request):
    """A topics file over 10,000 generated records, a private LEANOPS_HOME, and a `leanops` launcher. The
    project's stack keeps its state in a table of its own on the session's DynamoDB Local (a Java start
    saved per test); a test that needs a database of the project's own drops LEANOPS_DYNAMODB_ENDPOINT."""
    home = tmp_path / "home"
    env = {
        **os.environ,
        "LEANOPS_HOME": str(home),
        "LEANOPS_STATE_TABLE": unique_table_name(request.node.name),
        ENV_EXTERNAL_ENDPOINT: dynamodb_local.endpoint_url,
    }
    env.pop("AWS_ENDPOINT_URL_DYNAMODB", None)
    # The local stack's workers load the test hooks that act outside the processor's own process.
    hooks = str(REPO / "tests" / "support" / "worker_hooks")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [hooks, str(REPO), env.get("PYTHONPATH")]))
    generate(tmp_path / "data", 10_000, 2_500, malformed=0.0)

    def write_topics(**settings):
        topic = {
            "source": {"type": "files", "uri": "./data"},
            "sink": {"type": "files", "uri": "./out"},
            "batch_size": 700,
            "lease_seconds": 60,
            **settings,
        }
        (tmp_path / "topics.yaml").write_text(yaml.safe_dump({"topics": {"vt": topic}}))

    def leanops(*args, **popen):
        command = [sys.executable, "-m", "leanopsctl", *args, "--config", str(tmp_path / "topics.yaml")]
        return subprocess.Popen(
            command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **popen
        )

    write_topics()
    try:
        yield {
            "root": tmp_path,
            "leanops": leanops,
            "write_topics": write_topics,
            "env": env,
            "env_home": home,
        }
    finally:
        stack_down(home)
