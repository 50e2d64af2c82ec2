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


def test_the_hot_store_stays_flat_and_its_history_is_archived_once(tmp_path):
    # bench/retention.py --quick: 5 topics a minute for 10 simulated days, retention of 1 day (2 for audit),
    # run keys 7 days; it fails itself unless every written item is live or archived exactly once
    result = quick("retention", tmp_path)
    by_day = result["items_in_table_by_day"]
    settled = by_day[result["run_key_days"] + 1 :]
    assert settled and max(settled) - min(settled) <= 5 * 3, by_day  # a few items of the day's last sweep
    assert by_day[-1] < by_day[0] * 4  # bounded: the first day's items times the longest retention's days
    archived, written = result["archived_rows"], result["written"]
    assert archived["runs"] == written["runs"] - result["items_in_table_at_end"]["runs"] > 0
    assert archived["outputs"] == written["outputs"] - result["items_in_table_at_end"]["outputs"] > 0
