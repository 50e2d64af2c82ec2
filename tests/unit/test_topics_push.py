"""``leanops topics push`` (decision 0013): the topics file into the state table, versioned; the schedules
through the Scheduler API; the run works by the settings its acquire read; the Express guard."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import boto3
import pytest
from leanopsctl import push
from leanopsctl.deploy import schedules
from leanopsctl.deploy.schedules import ScheduleTarget
from leanopsctl.local.stack import fire_schedules
from moto import mock_aws

from leanops import tasks
from leanops.config import load_topics, parse_settings, parse_topics
from leanops.errors import ConfigError
from leanops.protocol import Protocol, Retention, TopicRef
from leanops.protocol.memory import InMemoryStore
from leanops.registry import PushedTopics, settings_digest
from tests.support import worlds

REPO = Path(__file__).resolve().parents[2]
DEFINITION = json.loads((REPO / "statemachines" / "topic_run.asl.json").read_text())
ARN = "arn:aws:states:us-east-1:123456789012:stateMachine:TopicRunStateMachine"
TARGET = ScheduleTarget(
    "leanops", ARN, "arn:aws:iam::123456789012:role/scheduler", "arn:aws:sqs:us-east-1:1:dlq"
)

#: A topic with every setting away from its default, a DynamoDB source and a Parquet sink whose declared
#: columns are not in name order (the order is part of the settings).
RICH = {
    "source": {
        "type": "dynamodb",
        "table": "events",
        "partition_key": "device",
        "partition_value": 7,
        "sort_key": "ts",
    },
    "sink": {"type": "files", "uri": "s3://lake/rich", "format": "parquet", "compression": "zstd"},
    "processor": "processors.rich:process",
    "batch_size": 17,
    "lease_seconds": 45,
    "max_batches_per_run": 3,
    "schedule": "cron(0 2 * * ? *)",
    "timestamp_field": "ts",
    "on_malformed": "fail",
    "late_lookback_batches": 0,
    "schema": {"zeta": "string", "alpha": "int64", "mid": "timestamp"},
    "lag_objective_seconds": 86_400,
}


def topics_file(tmp_path: Path, topics: dict[str, dict[str, Any]]) -> Path:
    path = tmp_path / "topics.yaml"
    path.write_text(json.dumps({"topics": topics}), encoding="utf-8")  # JSON is YAML
    return path


def local_topic(tmp_path: Path, name: str, **settings: Any) -> dict[str, Any]:
    return {
        "source": {"type": "files", "uri": str(tmp_path / "in")},
        "sink": {"type": "files", "uri": str(tmp_path / "out" / name)},
        **settings,
    }


# --- settings --------------------------------------------------------------------------------------------


def test_settings_round_trip_to_an_equal_config(tmp_path: Path) -> None:
    topics = parse_topics(
        {"topics": {"rich": RICH, "plain": local_topic(tmp_path, "plain")}}, tmp_path / "t.yaml"
    )
    for name, config in topics.topics.items():
        settings = config.to_settings()
        assert parse_settings(name, json.loads(json.dumps(settings)), "x") == config
    assert list(topics.topic("rich").to_settings()["schema"]) == ["zeta", "alpha", "mid"]
    # a relative folder is pushed resolved: the settings mean the same wherever they are read
    relative = parse_topics(
        {
            "topics": {
                "r": {"source": {"type": "files", "uri": "./in"}, "sink": {"type": "files", "uri": "./out"}}
            }
        },
        tmp_path / "t.yaml",
    )
    assert relative.topic("r").to_settings()["source"]["uri"] == str(tmp_path / "in")


def test_the_digest_sees_the_order_of_declared_columns() -> None:
    reordered = {**RICH, "schema": dict(reversed(list(RICH["schema"].items())))}
    assert settings_digest(RICH) != settings_digest(reordered)


# --- push: plan and apply --------------------------------------------------------------------------------


def test_a_push_adds_changes_and_skips_what_is_unchanged_each_version_kept(tmp_path: Path) -> None:
    store = InMemoryStore()
    path = topics_file(tmp_path, {"a": local_topic(tmp_path, "a"), "b": local_topic(tmp_path, "b")})
    first = push.plan(load_topics(path), store)
    assert (first.added, first.changed, first.removed) == (["a", "b"], [], [])
    push.apply(first, store, actor="ann", prune=False, now_ms=1000)
    assert store.read_pushed_topic("a").version == 1 and store.read_pushed_topic("a").pushed_by == "ann"

    path = topics_file(
        tmp_path, {"a": local_topic(tmp_path, "a", batch_size=5), "b": local_topic(tmp_path, "b")}
    )
    second = push.plan(load_topics(path), store)
    assert (second.added, second.changed, second.unchanged) == ([], ["a"], ["b"])
    writes = store.requests
    push.apply(second, store, actor="bob", prune=False, now_ms=2000)
    assert store.requests == writes + 1  # the unchanged topic is not written
    pushed = PushedTopics(store, tmp_path)
    assert pushed.topic("a").batch_size == 5 and pushed.topic("b").batch_size == 1000
    history = list(store.topic_history("a", limit=None))
    assert [(h.version, h.pushed_by, h.settings.get("batch_size")) for h in history] == [
        (2, "bob", 5),
        (1, "ann", 1000),
    ]
    assert not push.plan(load_topics(path), store).writes  # pushed again: nothing to do


def test_removing_topics_needs_prune_and_keeps_their_state(tmp_path: Path) -> None:
    store = InMemoryStore()
    protocol = Protocol(store)
    push.apply(
        push.plan(
            load_topics(
                topics_file(
                    tmp_path, {"a": local_topic(tmp_path, "a"), "gone": local_topic(tmp_path, "gone")}
                )
            ),
            store,
        ),
        store,
        actor="ann",
        prune=False,
    )
    lease = protocol.acquire(TopicRef("gone"), "exec-1", 30).lease
    protocol.release(lease)
    only_a = push.plan(load_topics(topics_file(tmp_path, {"a": local_topic(tmp_path, "a")})), store)
    assert only_a.removed == ["gone"]
    before = (dict(store.pushed), store.requests)
    with pytest.raises(
        ConfigError, match=r"1 pushed topic\(s\) are not in the topics file \(gone\): pass --prune"
    ):
        push.apply(only_a, store, actor="bob", prune=False)
    assert (dict(store.pushed), store.requests) == before  # refused: nothing written
    push.apply(only_a, store, actor="bob", prune=True)
    assert store.read_pushed_topic("gone") is None
    assert [(h.version, h.removed) for h in store.topic_history("gone", limit=None)] == [
        (2, True),
        (1, False),
    ]
    assert TopicRef("gone") in store.locks  # its state stays: pushed again, it resumes
    with pytest.raises(ConfigError, match="is not pushed to the state table in-memory: push the topics file"):
        PushedTopics(store, tmp_path).topic("gone")
    back = push.plan(
        load_topics(
            topics_file(tmp_path, {"a": local_topic(tmp_path, "a"), "gone": local_topic(tmp_path, "gone")})
        ),
        store,
    )
    push.apply(back, store, actor="cat", prune=False)
    assert [(h.version, h.removed, h.pushed_by) for h in store.topic_history("gone", limit=None)] == [
        (3, False, "cat"),
        (2, True, "bob"),
        (1, False, "ann"),
    ]


def test_a_push_racing_another_writes_nothing_of_the_topic_and_says_push_again(tmp_path: Path) -> None:
    store = InMemoryStore()
    path = topics_file(tmp_path, {"a": local_topic(tmp_path, "a")})
    mine, theirs = push.plan(load_topics(path), store), push.plan(load_topics(path), store)
    push.apply(theirs, store, actor="them", prune=False)
    with pytest.raises(
        push.PushConflict,
        match=r"0 of 1 topic change\(s\) written; not written: a: another push changed it meanwhile "
        r"\(now version 1\): push again",
    ):
        push.apply(mine, store, actor="me", prune=False)
    assert [h.pushed_by for h in store.topic_history("a", limit=None)] == ["them"]


def test_a_run_works_by_the_settings_its_acquire_read_whatever_is_pushed_meanwhile(tmp_path: Path) -> None:
    # GIVEN a topic pushed with sink out/, and a run that acquired it
    world = worlds.three_part_topic(tmp_path)
    store = world["protocol"].store
    push.apply(push.plan(world["topics"], store), store, actor="ann", prune=False)
    world["topics"] = PushedTopics(store, tmp_path)
    state = worlds.start(world)
    # WHEN the topic is pushed again with another sink before the run's process and advance
    moved = parse_topics(
        {
            "topics": {
                "t": {
                    **world["topics"].topic("t").to_settings(),
                    "sink": {"type": "files", "uri": str(tmp_path / "elsewhere")},
                }
            }
        },
        tmp_path / "t.yaml",
    )
    push.apply(push.plan(moved, store), store, actor="bob", prune=False)
    batch = tasks.process(
        tasks.RunState.from_json(state), world["protocol"], world["topics"], lambda: 60_000
    ).to_json()
    tasks.advance(tasks.RunState.from_json(state), batch, world["protocol"], world["topics"])
    # THEN the run wrote where its acquire checked the sink: the new sink is untouched until the next run
    assert list((tmp_path / "out").glob("*.jsonl")) and not (tmp_path / "elsewhere").exists()
    assert json.loads(state["settings"])["sink"]["uri"] == str(tmp_path / "out")
    assert world["topics"].topic("t").sink.uri == str(tmp_path / "elsewhere")  # what the next run reads


# --- schedules through the Scheduler API -----------------------------------------------------------------


@pytest.fixture
def scheduler() -> Any:
    with mock_aws():
        client = boto3.client("scheduler", region_name="us-east-1")
        client.create_schedule_group(Name=TARGET.group)
        yield client


def configs(tmp_path: Path, **topics: dict[str, Any]) -> dict[str, Any]:
    return parse_topics({"topics": topics}, tmp_path / "t.yaml").topics


def test_sync_creates_updates_and_deletes_so_the_group_holds_the_scheduled_topics(
    tmp_path: Path, scheduler: Any
) -> None:
    first = configs(
        tmp_path,
        hourly=local_topic(tmp_path, "hourly", schedule="rate(1 hour)"),
        nightly=local_topic(tmp_path, "nightly", schedule="cron(0 2 * * ? *)"),
        manual=local_topic(tmp_path, "manual"),
    )
    changes = schedules.sync(scheduler, TARGET, first)
    assert (changes.created, changes.updated, changes.deleted) == (["hourly", "nightly"], [], [])
    hourly = scheduler.get_schedule(Name="hourly", GroupName="leanops")
    assert hourly["FlexibleTimeWindow"] == {"Mode": "FLEXIBLE", "MaximumWindowInMinutes": 12}
    assert hourly["Target"]["DeadLetterConfig"] == {"Arn": TARGET.dead_letter_arn}
    assert schedules.run_input(hourly) == {
        "topic": "hourly",
        "scheduled_time": "<aws.scheduler.scheduled-time>",
    }
    assert scheduler.get_schedule(Name="nightly", GroupName="leanops")["ScheduleExpressionTimezone"] == "UTC"
    # again: nothing to do
    again = schedules.sync(scheduler, TARGET, first)
    assert (again.created, again.updated, again.deleted, again.unchanged) == (
        [],
        [],
        [],
        ["hourly", "nightly"],
    )
    # hourly every 5 minutes, nightly unscheduled, manual now scheduled
    second = configs(
        tmp_path,
        hourly=local_topic(tmp_path, "hourly", schedule="rate(5 minutes)"),
        nightly=local_topic(tmp_path, "nightly"),
        manual=local_topic(tmp_path, "manual", schedule="rate(1 day)"),
    )
    changes = schedules.sync(scheduler, TARGET, second)
    assert (changes.created, changes.updated, changes.deleted) == (["manual"], ["hourly"], ["nightly"])
    assert (
        scheduler.get_schedule(Name="hourly", GroupName="leanops")["ScheduleExpression"] == "rate(5 minutes)"
    )
    # a stack-wide pause (SchedulesState=DISABLED) reaches every schedule on the next push
    paused = schedules.sync(scheduler, ScheduleTarget(**{**vars(TARGET), "state": "DISABLED"}), second)
    assert sorted(paused.updated) == ["hourly", "manual"]
    assert {s["State"] for s in scheduler.list_schedules(GroupName="leanops")["Schedules"]} == {"DISABLED"}


def test_a_long_topic_name_gets_a_schedule_name_scheduler_accepts() -> None:
    long_a, long_b = "a" * 100, "a" * 99 + "b"
    names = {schedules.schedule_name(long_a), schedules.schedule_name(long_b)}
    assert len(names) == 2 and all(schedules.SCHEDULE_NAME.fullmatch(n) for n in names)
    assert schedules.schedule_name("vehicle_telemetry") == "vehicle_telemetry"


def test_the_local_scheduler_fires_what_the_group_holds(tmp_path: Path, scheduler: Any) -> None:
    schedules.sync(
        scheduler, TARGET, configs(tmp_path, every=local_topic(tmp_path, "every", schedule="rate(1 minute)"))
    )
    started: list[dict[str, Any]] = []
    stop = threading.Event()
    now = [1_000_000.0]

    class Sfn:
        def start_execution(self, **request: Any) -> None:
            started.append(request)
            now[0] += 60  # the next tick is due one period later
            if len(started) == 2:
                stop.set()

    def clock() -> float:
        now[0] += 30  # half a period per tick
        return now[0]

    fire_schedules(scheduler, Sfn(), TARGET.group, stop, tick=0.001, clock=clock)
    assert [r["stateMachineArn"] for r in started] == [ARN, ARN]
    inputs = [json.loads(r["input"]) for r in started]
    assert [i["topic"] for i in inputs] == ["every", "every"]
    assert inputs[0]["scheduled_time"] < inputs[1]["scheduled_time"]
    assert started[0]["name"] != started[1]["name"]


# --- the Express guard -----------------------------------------------------------------------------------


def test_express_refuses_a_topic_whose_worst_case_run_outlasts_five_minutes(tmp_path: Path) -> None:
    fits = configs(tmp_path, one=local_topic(tmp_path, "one", max_batches_per_run=1))
    push.check_express(fits.values(), DEFINITION)  # 30 + 1 x (135 + 30) + 30 = 225 s
    assert push.worst_case_seconds(DEFINITION, 1) == 225
    too_long = configs(tmp_path, many=local_topic(tmp_path, "many"))  # the default: 100 batches a run
    with pytest.raises(
        ConfigError,
        match=(
            r"topic many: on an EXPRESS state machine a run of max_batches_per_run 100 may take 16560 s "
            r".* set max_batches_per_run to 1 or less"
        ),
    ):
        push.check_express(too_long.values(), DEFINITION)


# --- the retention guard -----------------------------------------------------------------------------------


def test_a_look_back_past_the_output_records_retention_is_refused(tmp_path: Path) -> None:
    week = Retention(outputs_days=7)
    # 20 batches a day apart: 20 days, past a week of output records
    daily = configs(tmp_path, daily=local_topic(tmp_path, "daily", schedule="rate(1 day)"))
    with pytest.raises(
        ConfigError,
        match=(
            r"topic daily: late_lookback_batches 20 at rate\(1 day\) reaches back 480 h, past the output "
            r"records' 7-day retention: set late_lookback_batches to 7 or less, or the stack's "
            r"OutputRecordDays to 20 or more"
        ),
    ):
        push.check_retention(daily.values(), week)
    push.check_retention(daily.values(), Retention(outputs_days=20))  # 20 days kept: fits exactly
    hourly = configs(tmp_path, hourly=local_topic(tmp_path, "hourly", schedule="rate(1 hour)"))
    push.check_retention(hourly.values(), week)
    unscheduled = configs(tmp_path, manual=local_topic(tmp_path, "manual"))
    push.check_retention(unscheduled.values(), Retention(outputs_days=1))
