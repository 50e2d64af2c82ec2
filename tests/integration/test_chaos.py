"""Exactly-once under seeded chaos (bench/chaos.py, bounded profile, a 30-second chaos phase): while objects
keep landing and real `leanops run` processes start and follow executions on the local stack, the worker
processes running their process tasks are killed, paused past their lease (and resumed once another run
took the lock over), stopped then killed; names are reused; the whole stack is killed and restarted. After
a drain, every landed record is in the committed output exactly once and the sink holds nothing else.

Only invariants and counts of disruptions actually done are asserted, never timing: a slow machine gets
fewer runs, not a different verdict (the harness extends its chaos phase until the minimum is done)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from leanopsctl.local.stack import stack_down

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]
INVARIANTS = ("lost_records", "duplicate_records", "missing_committed_objects", "orphans_after_drain")


def run_chaos(out: Path, workdir: Path, timeout: float = 480) -> tuple[int, str]:
    command = [sys.executable, "bench/chaos.py", "--seconds", "30", "--seed", "7"]
    command += ["--out", str(out), "--workdir", str(workdir)]
    process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _, err = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.send_signal(signal.SIGTERM)  # the harness stops its runs and its stack on the way out
        _, err = process.communicate(timeout=60)
        pytest.fail(f"the chaos harness ran over {timeout} s: {err[-3000:]}")
    finally:
        stack_down(workdir / "home")  # in case the harness could not
    return process.returncode, err


@pytest.mark.timeout(600)
def test_every_landed_record_is_committed_exactly_once_under_seeded_chaos(tmp_path):
    out, workdir = tmp_path / "chaos.json", tmp_path / "work"
    code, err = run_chaos(out, workdir)
    assert out.is_file(), f"no results (exit {code}): {err[-3000:]}"
    results = json.loads(out.read_text())
    where = f"\n{err[-4000:]}\nresults: {out}, runs: {workdir}/runs.jsonl"

    # The chaos happened (no vacuous pass): disruptions actually done, counted by the harness.
    assert results["kills"] >= 2, where
    assert results["pauses"] >= 2, where
    assert results["stop_then_kills"] >= 1, where
    assert results["duplicate_names"] >= 1, where
    assert results["stack_kills"] >= 1 and results["stacks"] >= 2, where
    assert results["harness_failures"] == [], where

    # The invariants, record by record.
    found = {key: results[key] for key in INVARIANTS}
    assert found == dict.fromkeys(INVARIANTS, 0), f"{found}\n{json.dumps(results['forensics'])[:3000]}{where}"
    assert results["unexpected_records"] == 0 and results["quarantined"] == 0, where
    for topic, check in results["topics"].items():
        assert check["records_landed"] > 0, topic
        assert check["committed_distinct_records"] == check["records_landed"], (topic, where)
        assert check["committed_records"] == check["records_landed"], (topic, where)
    assert all(drained["up_to_date"] for drained in results["drain"].values()), where
    assert code == 0, where
