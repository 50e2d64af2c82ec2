"""Operator commands as operators run them, on the local stack: pause and resume, unlock --force of a live
holder, checkpoint rewind and set, the audit trail; bad input is one line, exit 2, and changes nothing."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from tests.support.cli import committed_events, finish, output_report

pytestmark = pytest.mark.integration
ALL_EVENTS = [f"evt-{i:09d}" for i in range(10_000)]


def ok_json(project: dict, *args: str) -> dict:
    code, out, err = finish(project["leanops"](*args, "--json"))
    assert code == 0, err[-3000:]
    return json.loads(out)


def refused(project: dict, *args: str) -> str:
    """Run a command that must be refused: exit 2, one line on stderr, nothing on stdout; the line."""
    code, out, err = finish(project["leanops"](*args))
    assert (code, out) == (2, ""), (code, out, err[-2000:])
    assert err.count("\n") == 1 and err.startswith("leanops: error: ") and "Traceback" not in err
    return err


def test_a_paused_topic_ends_its_runs_at_once_until_resumed(project):
    paused = ok_json(project, "pause", "vt", "--reason", "bad upstream file")
    assert paused["paused"] and paused["changed"] and paused["reason"] == "bad upstream file"
    report = ok_json(project, "run", "vt")
    assert (report["outcome"], report["records"]) == ("paused", 0)
    assert ok_json(project, "status", "vt")["checkpoint"]["position"] is None
    assert not ok_json(project, "pause", "vt", "--reason", "again")["changed"]
    resumed = ok_json(project, "resume", "vt", "--reason", "file replaced")
    assert not resumed["paused"] and resumed["changed"]
    assert ok_json(project, "run", "vt")["records"] == 10_000


def test_unlock_force_fences_out_a_live_holder(project):
    project["write_topics"](processor="tests.support.processors:hold_while_armed", lease_seconds=60)
    arm = project["root"] / "arm"
    arm.write_text("")
    project["env"]["LEANOPS_TEST_ARM"] = str(arm)
    # GIVEN a run busy in its first batch, holding the lock and renewing its lease
    victim = project["leanops"]("run", "vt", "--json", "--name", "victim")
    started = Path(f"{arm}.started")
    deadline = time.monotonic() + 120
    while not started.exists():
        assert victim.poll() is None and time.monotonic() < deadline
        time.sleep(0.05)
    # WHEN unlock is asked without --force, THEN it is refused and the lock is untouched
    assert "pass --force" in refused(project, "unlock", "vt", "--reason", "stuck")
    held = ok_json(project, "status", "vt")["lock"]
    assert held["state"] == "held" and held["holder"].endswith(":victim")
    # WHEN it is forced
    unlocked = ok_json(project, "unlock", "vt", "--force", "--reason", "stuck on a bad file")
    assert unlocked["unlocked"] and unlocked["holder"].endswith(":victim")
    assert unlocked["fence_after"] > unlocked["fence_before"]
    # THEN another run takes the lock at once; and the old holder, going on, can no longer commit
    arm.unlink()
    assert ok_json(project, "run", "vt")["records"] == 10_000
    code, out, err = finish(victim, timeout=300)
    assert code == 1 and json.loads(out)["error"] in ("LockLost", "CheckpointConflict"), err[-2000:]
    assert committed_events(project["root"], project["leanops"]) == ALL_EVENTS
    # AND the audit trail names who, why, before and after
    [record] = ok_json(project, "audit", "vt")["records"]
    assert (
        record["action"] == "force_unlock" and record["reason"] == "stuck on a bad file" and record["actor"]
    )
    assert record["before"]["owner"].endswith(":victim") and record["after"]["owner"] is None


def test_rewind_supersedes_later_commits_and_the_next_run_commits_them_once_again(project):
    first = ok_json(project, "run", "vt")
    seq = ok_json(project, "status", "vt")["checkpoint"]["seq"]
    assert first["records"] == 10_000 and seq >= 2
    # WHEN the checkpoint is rewound to the beginning
    rewound = ok_json(project, "checkpoint", "rewind", "vt", "--to-seq", "0", "--reason", "processor bug")
    assert rewound["after"]["position"] is None and len(rewound["superseded"]) == seq
    assert ok_json(project, "status", "vt")["checkpoint"]["position"] is None
    # THEN the next run reads every record again, and the committed output holds each once
    assert ok_json(project, "run", "vt")["records"] == 10_000
    ok_json(project, "gc", "vt")  # the superseded commits' objects go
    assert committed_events(project["root"], project["leanops"]) == ALL_EVENTS
    live = [b for b in output_report(project["leanops"])["batches"] if not b.get("superseded_by")]
    assert {b["seq"] for b in live}.isdisjoint(rewound["superseded"])


def test_checkpoint_set_forward_skips_and_bad_overrides_change_nothing(project):
    first_object = "date=2025-11-25/hour=00/part-00000.jsonl"
    skipped_to = f"{first_object}#2500"  # the end of the first object: its 2,500 records are skipped
    result = ok_json(
        project, "checkpoint", "set", "vt", "--position", skipped_to, "--reason", "replayed elsewhere"
    )
    assert result["before"]["position"] is None and result["after"]["position"] == skipped_to
    before = ok_json(project, "status", "vt")["checkpoint"]
    # bad input: one line, exit 2, nothing changed
    refused(project, "checkpoint", "rewind", "vt", "--to-seq", "99", "--reason", "x")
    refused(project, "checkpoint", "set", "vt", "--position", "no-offset-here", "--reason", "x")
    refused(project, "checkpoint", "set", "nope", "--position", skipped_to, "--reason", "x")
    refused(project, "checkpoint", "set", "vt", "--position", skipped_to)  # no --reason
    assert ok_json(project, "status", "vt")["checkpoint"] == before
    # the next run starts after the set position
    assert ok_json(project, "run", "vt")["records"] == 7_500
    actions = [r["action"] for r in ok_json(project, "audit")["records"]]
    assert actions == ["set_checkpoint"]
