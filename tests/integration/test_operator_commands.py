"""Operator commands as operators run them, on the local stack: pause and resume, unlock --force of a live
holder, checkpoint rewind and set, the audit trail; bad input is one line, exit 2, and changes nothing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.support.cli import committed_events, finish, output_report, wait_for_log
from tests.support.processors import STARTED

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
    wait_for_log(project["env_home"], STARTED, victim)
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


def replayed_events(project: dict, backfill_id: str, sink: Path) -> list[str]:
    """The event ids in a backfill's committed output, sorted; duplicates kept."""
    report = ok_json(project, "output", "vt", "--backfill", backfill_id)
    return sorted(
        json.loads(line)["event_id"]
        for batch in report["batches"]
        if batch.get("object")
        for line in (sink / batch["object"]).read_text().splitlines()
    )


def test_backfill_replays_a_range_into_its_own_sink_and_never_moves_the_checkpoint(project):
    root = project["root"]
    project["write_topics"](max_batches_per_run=2)  # 1,400 records a run: a backfill takes several
    keys = sorted(str(p.relative_to(root / "data")) for p in (root / "data").rglob("*.jsonl"))
    lines = {key: (root / "data" / key).read_text().splitlines() for key in keys}
    first = ok_json(project, "run", "vt")
    before = ok_json(project, "status", "vt")["checkpoint"]
    assert first["records"] == 1_400
    start, end = f"{keys[0]}#1000", f"{keys[2]}#300"
    expected = sorted(
        json.loads(line)["event_id"] for line in lines[keys[0]][1000:] + lines[keys[1]] + lines[keys[2]][:300]
    )
    replay = root / "replay"
    # bad input: one line, exit 2, nothing defined
    assert "overlaps the sink of topic vt" in refused(
        project, "backfill", "vt", "--sink", str(root / "out" / "x")
    )
    assert "overlaps the source of topic vt" in refused(
        project, "backfill", "vt", "--sink", str(root / "data" / "x")
    )
    assert "not before its end" in refused(
        project, "backfill", "vt", "--from", end, "--to", start, "--sink", str(replay)
    )
    assert "invalid position" in refused(
        project, "backfill", "vt", "--from", "no-offset", "--sink", str(replay)
    )
    assert "--sink is required" in refused(project, "backfill", "vt", "--from", start)
    taken = root / "taken"  # a folder holding the topic's objects that this state never wrote
    taken.mkdir()
    (taken / "vt.origin.1-aaaaaaaa-bbbbbbbb.jsonl").write_text('{"event_id": "foreign"}\n')
    assert "never committed a batch" in refused(project, "backfill", "vt", "--sink", str(taken))
    assert (taken / "vt.origin.1-aaaaaaaa-bbbbbbbb.jsonl").exists()
    assert ok_json(project, "backfill", "vt", "--list")["backfills"] == []
    # WHEN two operators start the same backfill at once (a duplicate trigger)
    command = (
        "backfill",
        "vt",
        "--from",
        start,
        "--to",
        end,
        "--sink",
        str(replay),
        "--reason",
        "new processor",
    )
    both = [project["leanops"](*command, "--json") for _ in range(2)]
    reports = []
    for process in both:
        code, out, err = finish(process, timeout=600)
        assert code == 0, err[-3000:]
        reports.append(json.loads(out))
    backfill_id = reports[0]["backfill"]["id"]
    assert reports[1]["backfill"]["id"] == backfill_id
    # THEN the range is replayed once, in the backfill's own sink; the topic's checkpoint has not moved
    assert sum(r["records"] for r in reports) == len(expected) == 4_300
    assert replayed_events(project, backfill_id, replay) == expected
    assert ok_json(project, "status", "vt")["checkpoint"] == before
    # AND the same command again, the sink and bounds spelled otherwise, resumes a finished backfill
    key, offset = start.rsplit("#", 1)
    same = ("--from", f"{key}#0{offset}", "--to", end, "--sink", f"{replay}/../{replay.name}/")
    again = ok_json(project, "backfill", "vt", *same)
    assert again["complete"] and again["records"] == 0 and again["backfill"]["id"] == backfill_id
    # a sink inside another backfill's (its quarantine folder, say) would be cleaned up by it: refused
    inner = str(replay / "_quarantine")
    assert "overlaps the sink of backfill" in refused(project, "backfill", "vt", "--to", end, "--sink", inner)
    assert "give the same bounds" in refused(
        project, "backfill", "vt", "--to", f"{keys[3]}#1", "--sink", str(replay)
    )
    [listed] = ok_json(project, "backfill", "vt", "--list")["backfills"]
    assert (listed["id"], listed["checkpoint"], listed["complete"]) == (backfill_id, end, True)
    assert ok_json(project, "gc", "vt", "--backfill", backfill_id)["deleted"] == []
    # AND the topic goes on where it was, every record once in its own sink
    while ok_json(project, "run", "vt")["outcome"] == "processed":
        pass
    assert committed_events(root, project["leanops"]) == ALL_EVENTS
    [audit] = ok_json(project, "audit", "vt")["records"]
    assert (audit["action"], audit["reason"], audit["after"]["backfill"]) == (
        "backfill",
        "new processor",
        backfill_id,
    )


def test_output_with_archive_shows_the_commits_the_table_no_longer_keeps(project, dynamodb_local):
    import boto3
    from boto3.dynamodb.types import TypeDeserializer

    from leanops import archive

    ok_json(project, "run", "vt")
    before = ok_json(project, "output", "vt")["batches"]
    assert len(before) >= 3
    # GIVEN the two oldest output records expired: DynamoDB deleted them and the archive keeps them
    table = boto3.client("dynamodb", endpoint_url=dynamodb_local.endpoint_url, region_name="us-east-1")
    name, deserialize = project["env"]["LEANOPS_STATE_TABLE"], TypeDeserializer().deserialize
    oldest = [f"output#{record['seq']:012d}" for record in before[:2]]
    rows = []
    for sort_key in oldest:
        key = {"pk": {"S": "topic#vt"}, "sk": {"S": sort_key}}
        item = table.get_item(TableName=name, Key=key, ConsistentRead=True)["Item"]
        rows.append(archive.row("outputs", {k: deserialize(v) for k, v in item.items()}))
        table.delete_item(TableName=name, Key=key)
    day = rows[0]["committed_at"].date().isoformat()
    folder = project["env_home"] / "archive" / "kind=outputs" / f"date={day}"
    folder.mkdir(parents=True)
    (folder / "1-expired.parquet").write_bytes(archive.parquet_bytes("outputs", rows))
    # THEN the table alone names the later commits; --archive names every commit, as before, oldest first
    assert [b["seq"] for b in ok_json(project, "output", "vt")["batches"]] == [b["seq"] for b in before[2:]]
    merged = ok_json(project, "output", "vt", "--archive")["batches"]
    assert [(b["seq"], b["object"]) for b in merged] == [(b["seq"], b["object"]) for b in before]
    assert [b.get("archived", False) for b in merged[:3]] == [True, True, False]
    assert [b["records"] for b in merged] == [b["records"] for b in before]
    # WHEN an operator rewinds to the beginning, THEN the archived commits are superseded too
    rewound = ok_json(project, "checkpoint", "rewind", "vt", "--to-seq", "0", "--reason", "reprocess")
    assert ok_json(project, "output", "vt", "--archive")["batches"][-1]["kind"] == "override"
    every = ok_json(project, "output", "vt", "--archive", "--all")["batches"]
    rewind_seq = rewound["after"]["seq"]
    assert all(b.get("superseded_by") == rewind_seq for b in every if b.get("kind") != "override")
    assert [b["seq"] for b in every[:2]] == [b["seq"] for b in before[:2]]
