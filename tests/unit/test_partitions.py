"""Partitioned topics (decision 0015) and day-partitioned sinks, through the topics file and the four tasks on
the in-memory store."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import boto3
import pytest
from leanopsctl.deploy import schedules
from moto import mock_aws

from leanops import sink_gc, tasks
from leanops.config import parse_settings, parse_topics
from leanops.data import open_source
from leanops.data.files import FilesSink
from leanops.errors import ConfigError
from leanops.protocol import Protocol, TopicRef
from leanops.protocol.memory import InMemoryStore
from tests.support.clock import FakeClock

DAY = 86_400


def topics_file(root: Path, **settings: Any):
    return parse_topics({"topics": {"t": settings}}, root / "topics.yaml")


def files_topic(root: Path, **settings: Any) -> dict[str, Any]:
    return {
        "source": {"type": "files", "uri": str(root / "in" / "{partition}")},
        "sink": {"type": "files", "uri": str(root / "out")},
        "partitions": ["a", "b"],
        "batch_size": 2,
        **settings,
    }


def write(path: Path, records: list[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in records))


def world(root: Path, **settings: Any) -> dict[str, Any]:
    return {
        "topics": topics_file(root, **files_topic(root, **settings)),
        "protocol": Protocol(InMemoryStore(), clock=FakeClock()),
    }


def run(world: dict[str, Any], execution: str, **input_: Any) -> dict[str, Any]:
    """Acquire -> (ProcessBatch -> AdvanceCheckpoint)* as the ASL does; the final run state."""
    event = {"input": {"topic": "t", **input_}, "execution": execution, "execution_name": execution}
    state = tasks.acquire(event, world["protocol"], world["topics"]).to_json()
    while state["outcome"] == "acquired" and not state["released"]:
        batch = tasks.process(
            tasks.RunState.from_json(state), world["protocol"], world["topics"], lambda: 60_000
        ).to_json()
        state = tasks.advance(
            tasks.RunState.from_json(state), batch, world["protocol"], world["topics"]
        ).to_json()
    return state


def sink_records(folder: Path) -> list[dict[str, Any]]:
    """The records of the sink objects under ``folder`` (not the quarantine)."""
    paths = sorted(p for p in folder.rglob("t.*.jsonl") if "_quarantine" not in p.parts)
    return [json.loads(line) for path in paths for line in path.read_text().splitlines()]


# --- the topics file ---------------------------------------------------------------------------------------


def test_a_count_of_partitions_names_them_0_to_n_minus_1_and_each_reads_its_own_part(tmp_path):
    topic = topics_file(tmp_path, **files_topic(tmp_path, partitions=3)).topic("t")
    assert topic.partitions == ("0", "1", "2")
    second = topic.for_partition("1")
    assert second.source.uri == str(tmp_path / "in" / "1")
    assert second.sink.uri == str(tmp_path / "out" / "part=1")


def test_a_dynamodb_source_names_the_partition_in_its_partition_value(tmp_path):
    source = {"type": "dynamodb", "table": "payments", "partition_key": "pk", "sort_key": "sk"}
    topic = topics_file(
        tmp_path,
        source={**source, "partition_value": "changes#{partition}", "min_age_seconds": 60},
        sink={"type": "files", "uri": "s3://bucket/feed"},
        partitions=2,
    ).topic("t")
    assert topic.for_partition("1").source.partition_value == "changes#1"
    assert topic.for_partition("1").sink.uri == "s3://bucket/feed/part=1"
    assert topic.source.min_age_seconds == 60


def test_partitions_survive_the_settings_a_push_stores(tmp_path):
    topic = topics_file(tmp_path, **files_topic(tmp_path)).topic("t")
    assert parse_settings("t", topic.to_settings(), "pushed") == topic


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"partitions": 0}, "partitions must be 1 to 256, got 0"),
        ({"partitions": []}, "partitions must be a count"),
        ({"partitions": ["a", "a"]}, "partition 'a' is listed twice"),
        ({"partitions": ["a/b"]}, "invalid partition name 'a/b'"),
        ({"partitions": ["bf-1"]}, "starts with 'bf-', which names backfills"),
        ({"partitions": None}, "names {partition} but the topic declares no partitions"),
    ],
)
def test_bad_partitions_are_refused_with_one_line_naming_the_fix(tmp_path, change, message):
    settings = {**files_topic(tmp_path), **change}
    if settings["partitions"] is None:
        del settings["partitions"]
    with pytest.raises(
        ConfigError, match=message.replace("{", "\\{").replace("}", "\\}").replace("(", "\\(")
    ):
        topics_file(tmp_path, **settings)


def test_a_partitioned_topic_whose_source_does_not_name_the_partition_is_refused(tmp_path):
    settings = {**files_topic(tmp_path), "source": {"type": "files", "uri": str(tmp_path / "in")}}
    with pytest.raises(ConfigError, match=r"put \{partition\} in source.uri"):
        topics_file(tmp_path, **settings)


def test_a_day_sink_needs_the_timestamp_field_it_places_batches_by(tmp_path):
    sink = {"type": "files", "uri": str(tmp_path / "out"), "partition_by": "day"}
    with pytest.raises(ConfigError, match="set the topic's timestamp_field"):
        topics_file(tmp_path, **{**files_topic(tmp_path), "sink": sink})
    with pytest.raises(ConfigError, match="partition_by 'hour' must be one of: day"):
        topics_file(tmp_path, **{**files_topic(tmp_path), "sink": {**sink, "partition_by": "hour"}})


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"min_age_seconds": -1}, "min_age_seconds must be a whole number of seconds >= 0"),
        ({"min_age_seconds": True}, "min_age_seconds must be a whole number"),
        ({"index": "x"}, "index 'x' is not a DynamoDB index name"),
    ],
)
def test_bad_dynamodb_source_options_are_refused(tmp_path, change, message):
    source = {
        "type": "dynamodb",
        "table": "tbl",
        "partition_key": "pk",
        "partition_value": "p",
        "sort_key": "sk",
    }
    with pytest.raises(ConfigError, match=message):
        topics_file(tmp_path, source={**source, **change}, sink={"type": "files", "uri": str(tmp_path)})


# --- runs ------------------------------------------------------------------------------------------------


def test_each_partition_runs_under_its_own_lock_and_checkpoint_into_its_own_sink_folder(tmp_path):
    write(tmp_path / "in" / "a" / "1.jsonl", [{"i": i} for i in range(3)])
    write(tmp_path / "in" / "b" / "1.jsonl", [{"i": i} for i in range(10, 15)])
    w = world(tmp_path)
    done_a = run(w, "exec-a", partition="a")
    assert (done_a["outcome"], done_a["records"]) == ("processed", 3)
    protocol = w["protocol"]
    assert protocol.read_checkpoint(TopicRef("t", "a")).position == "1.jsonl#3"
    assert protocol.read_checkpoint(TopicRef("t", "b")).position is None  # b's state is its own
    assert protocol.read_checkpoint(TopicRef("t")).position is None
    done_b = run(w, "exec-b", partition="b")
    assert done_b["records"] == 5
    assert sorted(r["i"] for r in sink_records(tmp_path / "out" / "part=a")) == [0, 1, 2]
    assert sorted(r["i"] for r in sink_records(tmp_path / "out" / "part=b")) == list(range(10, 15))
    # The same scheduled time for both partitions: a run key per partition, so neither is a duplicate.
    write(tmp_path / "in" / "a" / "2.jsonl", [{"i": 3}])
    write(tmp_path / "in" / "b" / "2.jsonl", [{"i": 15}])
    tick = {"scheduled_time": "2026-11-29T10:00:00Z"}
    assert run(w, "sched-a", partition="a", **tick)["records"] == 1
    assert run(w, "sched-b", partition="b", **tick)["records"] == 1
    assert run(w, "sched-a-again", partition="a", **tick)["outcome"] == "duplicate"


def test_a_partitioned_topic_run_without_a_partition_is_refused_naming_the_input_and_writes_nothing(tmp_path):
    w = world(tmp_path)
    with pytest.raises(
        ConfigError, match=r'has 2 partitions: start a run per partition, with input \{"topic": "t", '
    ):
        run(w, "exec-1")
    with pytest.raises(ConfigError, match=r"topic t has no partition 'c' \(partitions: a, b\)"):
        run(w, "exec-2", partition="c")
    protocol = w["protocol"]
    assert all(protocol.status(TopicRef("t", p)).lock is None for p in (None, "a", "b", "c"))
    assert not (tmp_path / "out").exists()


def test_a_partitions_sink_is_claimed_by_that_partition_alone(tmp_path):
    write(tmp_path / "in" / "a" / "1.jsonl", [{"i": 1}])
    w = world(tmp_path)
    run(w, "exec-a", partition="a")
    marker = json.loads((tmp_path / "out" / "part=a" / "_leanops.json").read_text())
    assert marker["topic"] == "t/a"


# --- a day sink ------------------------------------------------------------------------------------------


def day_world(root: Path, records: list[dict[str, Any]], **settings: Any) -> dict[str, Any]:
    write(root / "in" / "a" / "1.jsonl", records)
    sink = {"type": "files", "uri": str(root / "out"), "partition_by": "day"}
    return world(root, sink=sink, timestamp_field="ts", batch_size=10, **settings)


def test_a_day_sink_cuts_batches_at_midnight_and_writes_each_in_its_days_folder(tmp_path):
    midnight = 20_000 * DAY  # 2024-10-04T00:00:00Z
    records = [{"ts": midnight - 2}, {"ts": midnight - 1}, {"ts": midnight}, {"ts": "2024-10-04T10:00:00Z"}]
    w = day_world(tmp_path, records)
    done = run(w, "exec-1", partition="a")
    assert (done["batches"], done["records"]) == (2, 4)
    folder = tmp_path / "out" / "part=a"
    assert sorted(p.parent.name for p in folder.rglob("t.*.jsonl")) == ["date=2024-10-03", "date=2024-10-04"]
    assert [r["ts"] for r in sink_records(folder / "date=2024-10-03")] == [midnight - 2, midnight - 1]
    assert [r["ts"] for r in sink_records(folder / "date=2024-10-04")] == [midnight, "2024-10-04T10:00:00Z"]
    outputs = [o.data["object"] for o in w["protocol"].outputs(TopicRef("t", "a"))]
    assert [name.split("/")[0] for name in outputs] == ["date=2024-10-03", "date=2024-10-04"]


def test_records_without_a_time_are_quarantined_in_a_batch_of_their_own(tmp_path):
    w = day_world(tmp_path, [{"ts": DAY}, {"other": 1}, {"ts": "not a time"}, {"ts": DAY + 1}])
    done = run(w, "exec-1", partition="a")
    assert (done["batches"], done["records"]) == (3, 4)
    folder = tmp_path / "out" / "part=a"
    assert sorted(r["ts"] for r in sink_records(folder)) == [DAY, DAY + 1]
    quarantined = [
        json.loads(line) for line in next((folder / "_quarantine").iterdir()).read_text().splitlines()
    ]
    assert [q["raw"] for q in quarantined] == [{"other": 1}, {"ts": "not a time"}]
    assert "no ts time to place the record by day" in quarantined[0]["reason"]


def test_gc_finds_a_crashed_attempt_in_a_day_folder_and_keeps_the_committed_one(tmp_path):
    w = day_world(tmp_path, [{"ts": DAY}, {"ts": DAY + 5}])
    run(w, "exec-1", partition="a")
    folder = tmp_path / "out" / "part=a"
    committed = next(folder.rglob("t.*.jsonl"))
    orphan = committed.with_name(committed.name.replace(committed.name.split(".")[2], "1-0000abcd-0000abcd"))
    orphan.write_text(committed.read_text())
    config = w["topics"].topic("t").for_partition("a")
    sink = FilesSink(config.sink.uri, "t", partition_by="day")
    assert {name for name, _ in sink.attempts()} == {
        f"date=1970-01-02/{committed.name}",
        f"date=1970-01-02/{orphan.name}",
    }
    collected = sink_gc.collect_topic(
        w["protocol"], TopicRef("t", "a"), sink, open_source(config.source).stem
    )
    assert collected.deleted == [f"date=1970-01-02/{orphan.name}"]
    assert committed.exists() and not orphan.exists()


# --- schedules -------------------------------------------------------------------------------------------

TARGET = schedules.ScheduleTarget(
    group="leanops",
    state_machine_arn="arn:aws:states:us-east-1:123456789012:stateMachine:run",
    role_arn="arn:r",
)


def test_a_scheduled_partitioned_topic_gets_a_schedule_per_partition_starting_that_partition(tmp_path):
    topic = topics_file(tmp_path, **files_topic(tmp_path, schedule="rate(5 minutes)")).topic("t")
    with mock_aws():
        scheduler = boto3.client("scheduler", region_name="us-east-1")
        scheduler.create_schedule_group(Name="leanops")
        changes = schedules.sync(scheduler, TARGET, {"t": topic})
        assert changes.created == ["t.a", "t.b"]
        started = schedules.run_input(scheduler.get_schedule(Name="t.b", GroupName="leanops"))
    assert started == {"topic": "t", "partition": "b", "scheduled_time": "<aws.scheduler.scheduled-time>"}


def test_a_topic_and_a_partition_sharing_a_schedule_name_are_refused(tmp_path):
    loaded = parse_topics(
        {
            "topics": {
                "t": files_topic(tmp_path, schedule="rate(5 minutes)"),
                "t.a": {
                    "source": {"type": "files", "uri": str(tmp_path / "x")},
                    "sink": {"type": "files", "uri": str(tmp_path / "y")},
                    "schedule": "rate(5 minutes)",
                },
            }
        },
        tmp_path / "topics.yaml",
    )
    with mock_aws():
        scheduler = boto3.client("scheduler", region_name="us-east-1")
        with pytest.raises(ConfigError, match=r"would share the schedule name 't\.a'"):
            schedules.sync(scheduler, TARGET, loaded.topics)


# --- what an adversarial review found ----------------------------------------------------------------------


@pytest.mark.parametrize("name", [".", ".."])
def test_a_partition_named_like_a_folders_self_or_parent_is_refused(tmp_path, name):
    with pytest.raises(ConfigError, match="names a folder's self or parent"):
        topics_file(tmp_path, **files_topic(tmp_path, partitions=["a", name]))


def test_a_partition_whose_sink_would_lie_inside_its_own_source_is_refused(tmp_path):
    # source in/{partition}, sink in/out: partition `out` would read its own output.
    settings = files_topic(tmp_path, partitions=["a", "out"])
    settings["sink"] = {"type": "files", "uri": str(tmp_path / "in" / "out")}
    with pytest.raises(ConfigError, match=r"partition 'out': sink .* overlaps source"):
        topics_file(tmp_path, **settings)


def test_the_topic_leanops_cannot_have_partitions_whose_state_is_leanops_own(tmp_path):
    document = {"topics": {"leanops": files_topic(tmp_path, partitions=["topics-push"])}}
    with pytest.raises(ConfigError, match="topic 'leanops' cannot have partitions"):
        parse_topics(document, tmp_path / "topics.yaml")


def test_an_index_source_must_say_how_old_its_items_must_be(tmp_path):
    source = {
        "type": "dynamodb",
        "table": "tbl",
        "partition_key": "s",
        "partition_value": "p",
        "sort_key": "k",
    }
    with pytest.raises(ConfigError, match="an index source needs min_age_seconds"):
        topics_file(
            tmp_path, source={**source, "index": "by_s"}, sink={"type": "files", "uri": str(tmp_path)}
        )


@pytest.mark.parametrize("huge", [10**400, 1e300, -(10**20)])
def test_a_time_no_calendar_holds_is_no_time_quarantined_not_a_stuck_topic(tmp_path, huge):
    w = day_world(tmp_path, [{"ts": DAY}, {"ts": huge}])
    done = run(w, "exec-1", partition="a")
    assert (done["outcome"], done["records"]) == ("processed", 2)
    quarantine = tmp_path / "out" / "part=a" / "_quarantine"
    (reject,) = [json.loads(line) for p in quarantine.iterdir() for line in p.read_text().splitlines()]
    assert "no ts time to place the record by day" in reject["reason"]
    assert w["protocol"].read_checkpoint(TopicRef("t", "a")).last_ingested_ts == DAY


def test_a_quarantine_only_batch_on_a_day_sink_lists_no_day_folder(tmp_path):
    w = day_world(tmp_path, [{"other": 1}])
    run(w, "exec-1", partition="a")
    config = w["topics"].topic("t").for_partition("a")
    listed: list[str] = []
    sink = FilesSink(config.sink.uri, "t", partition_by="day")
    keys = sink.store.keys
    sink.store.keys = lambda *a, **k: listed.append(k.get("prefix", "")) or keys(*a, **k)  # type: ignore[method-assign]
    committed = w["protocol"].store.read_output(TopicRef("t", "a"), 1)
    sink_gc.collect_batch(w["protocol"], TopicRef("t", "a"), 1, sink, committed.data)
    assert listed == ["t.origin.", "_quarantine/t.origin."]


def test_positions_of_time_keys_tell_their_time():
    from leanops.data.dynamodb_source import position_ms

    assert position_ms("N:1800000000000") == 1_800_000_000_000
    assert position_ms("S:1800000000000#pay-1#000002") == 1_800_000_000_000
    assert position_ms("S:1800000000000") == 1_800_000_000_000
    assert position_ms("S:2026-11-29T10:00:00Z") is None
    assert position_ms("S:18000000000001#x") is None  # 14 digits: not a 13-digit time


@pytest.mark.parametrize(
    ("end", "refused"),
    [
        ("S:1799999939999#x", False),  # older than the bound: every item up to it has landed
        ("S:1799999940000", False),  # the bound itself
        ("S:1799999940000#x", True),  # the cut's own millisecond: not read yet either
        ("S:9", True),  # not a time, but past every time: the bound must be compared in the key's order
        ("S:2026-11-29T10:00:00Z", True),
    ],
)
def test_a_backfill_of_a_min_age_source_may_not_end_past_what_a_run_may_read_now(
    tmp_path, monkeypatch, end, refused
):
    from leanopsctl.cli.backfill import _refuse_a_young_end

    from leanops.data import dynamodb_source

    source = {
        "type": "dynamodb",
        "table": "tbl",
        "partition_key": "pk",
        "partition_value": "p",
        "sort_key": "sk",
    }
    settings = topics_file(
        tmp_path, source={**source, "min_age_seconds": 60}, sink={"type": "files", "uri": str(tmp_path)}
    ).topic("t")
    monkeypatch.setitem(dynamodb_source._described, ("tbl", None, "pk", "sk"), ("S", True))  # DescribeTable's
    protocol = Protocol(InMemoryStore(), clock=FakeClock(1_800_000_000_000))
    if refused:
        with pytest.raises(
            ConfigError, match=f"--to {re.escape(end)} is past what the source's min_age_seconds"
        ):
            _refuse_a_young_end(protocol, settings, end)
    else:
        _refuse_a_young_end(protocol, settings, end)


def test_history_of_a_partition_is_its_executions_and_of_the_topic_every_partitions():
    from leanopsctl import executions

    inputs = [
        {"topic": "t", "partition": "a"},
        {"topic": "t", "partition": "b"},
        {"topic": "u"},
        {"topic": "t"},
    ]

    class Sfn:
        def list_executions(self, **_: Any) -> dict[str, Any]:
            return {"executions": [{"executionArn": f"arn:x:{i}"} for i in range(len(inputs))]}

        def describe_execution(self, executionArn: str) -> dict[str, Any]:
            i = int(executionArn.rsplit(":", 1)[1])
            return {"executionArn": executionArn, "status": "SUCCEEDED", "input": json.dumps(inputs[i])}

    def arns(**kwargs: Any) -> list[str]:
        return [e.arn for e in executions.recent(Sfn(), "arn:sm", "t", limit=10, examine=10, **kwargs)]

    assert arns(partition="b") == ["arn:x:1"]
    assert arns() == ["arn:x:0", "arn:x:1", "arn:x:3"]


def test_a_batch_that_writes_no_object_still_clears_an_earlier_attempt_in_its_day_folder(tmp_path):
    # An earlier attempt (crashed before its commit) wrote the batch's object; the attempt that commits
    # quarantines every record, so it names no object: the commit's folder says where the attempts lie.
    w = day_world(tmp_path, [], processor="tests.support.processors:reject_bad", isolation="none")
    assert run(w, "exec-0", partition="a")["records"] == 0  # the partition claims its sink
    write(tmp_path / "in" / "a" / "2.jsonl", [{"ts": DAY, "bad": True}])
    config = w["topics"].topic("t").for_partition("a")
    stem = open_source(config.source).stem(w["protocol"].read_checkpoint(TopicRef("t", "a")).position)
    orphan = tmp_path / "out" / "part=a" / "date=1970-01-02" / f"t.{stem}.1-0000abcd-0000abcd.jsonl"
    write(orphan, [{"ts": DAY, "bad": True}])
    done = run(w, "exec-1", partition="a")
    assert (done["outcome"], done["records"]) == ("processed", 1)
    committed = list(w["protocol"].outputs(TopicRef("t", "a")))[-1]
    assert (committed.data["stem"], committed.data["object"], committed.data["folder"]) == (
        stem,
        None,
        "date=1970-01-02/",
    )
    assert not orphan.exists()
