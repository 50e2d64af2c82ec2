"""The request budgets of the issues, checked by running the benchmarks' quick profile (counts, not speed)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]


def quick(script: str, tmp_path: Path) -> dict:
    output = tmp_path / f"{script}.json"
    subprocess.run(
        [sys.executable, f"bench/{script}.py", "--quick", "--output", str(output)],
        cwd=REPO,
        check=True,
        capture_output=True,
        timeout=300,
    )
    return json.loads(output.read_text())


def test_protocol_run_takes_two_requests_and_one_per_extra_batch(tmp_path):
    result = quick("protocol", tmp_path)
    assert result["dynamodb_requests_per_run"] == 2
    assert result["dynamodb_requests_per_extra_batch"] == 1
    assert result["dynamodb_requests_first_run"] == 3
    assert result["read_units_per_run"] == 0


def test_workflow_one_batch_run_budget(tmp_path):
    result = quick("workflow", tmp_path)
    # the topic's pushed settings (a GetItem), run key, acquire, the late-object look-back (a Query),
    # commit-and-release (budget: 5)
    assert result["dynamodb_requests_per_run"] == 5
    assert result["transitions_per_run"] == 6
    assert result["lambda_invocations_per_run"] == 3
    assert result["transitions_per_extra_batch"] == 3
