"""Adversarial review of `leanops topics push` (decision 0013): each test states what should hold; the ones
that fail today show a problem (see the review report)."""

from __future__ import annotations

import datetime
import json
import threading
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import boto3
import pytest
from leanopsctl import push
from leanopsctl.cli import topics as topics_cli
from leanopsctl.deploy import schedules
from leanopsctl.deploy.schedules import ScheduleTarget
from leanopsctl.local.stack import CodeWatch, fire_schedules
from moto import mock_aws

from leanops import tasks
from leanops.config import parse_topics
from leanops.errors import ConfigError
from leanops.protocol.memory import InMemoryStore
from leanops.registry import PushedTopics
from tests.support import worlds

ARN = "arn:aws:states:us-east-1:123456789012:stateMachine:TopicRunStateMachine"
TARGET = ScheduleTarget("leanops", ARN, "arn:aws:iam::123456789012:role/scheduler")
#: Step Functions' limit on a state's input or output (the run state carries the settings).
STEP_FUNCTIONS_PAYLOAD = 256 * 1024


def local_topic(tmp_path: Path, name: str, **settings: Any) -> dict[str, Any]:
    return {
        "source": {"type": "files", "uri": str(tmp_path / "in")},
        "sink": {"type": "files", "uri": str(tmp_path / "out" / name)},
        **settings,
    }


def parsed(tmp_path: Path, file: str = "topics.yaml", **topics: dict[str, Any]) -> Any:
    return parse_topics({"topics": topics}, tmp_path / file)


@pytest.fixture
def scheduler() -> Any:
    with mock_aws():
        client = boto3.client("scheduler", region_name="us-east-1")
        client.create_schedule_group(Name=TARGET.group)
        yield client


# --- the local stack's push on change ------------------------------------------------------------------


def test_codewatch_pushes_again_after_a_push_that_failed(tmp_path: Path) -> None:
    """A failed local push (a racing `leanops topics push`, a DynamoDB Local hiccup) must be retried on the
    next invocation; today the file's fingerprint is recorded before the push runs, so the edit is never
    pushed until the file changes again and runs keep the old settings silently."""
    config = tmp_path / "topics.yaml"
    config.write_text("topics: {}\n")
    calls: list[str] = []

    def on_change() -> None:
        calls.append("push")
        if len(calls) == 1:
            raise push.PushConflict("topic t: another push changed it meanwhile")

    watch = CodeWatch(config, {}, on_change)
    config.write_text("topics: {t: {}}\n")  # the operator's edit
    with pytest.raises(push.PushConflict):
        watch.check()  # the invocation right after the edit: its push fails
    watch.check()  # the next invocation
    assert calls == ["push", "push"], "the failed push was never retried: runs keep the old settings"


# --- sizes -----------------------------------------------------------------------------------------------


def huge_schema(columns: int, name_length: int) -> dict[str, str]:
    return {f"c{i:05d}_" + "x" * name_length: "string" for i in range(columns)}


def test_a_push_refuses_settings_too_large_for_the_run_state(tmp_path: Path) -> None:
    """The run state carries the settings through every state of the execution; Step Functions refuses a
    state over 256 KB (States.DataLimitExceeded). A declared schema is not bounded (parse_declared has no
    column or name limit), so a push accepts settings that make every run of the topic fail."""
    wide = local_topic(
        tmp_path,
        "wide",
        sink={"type": "files", "uri": str(tmp_path / "out" / "wide"), "format": "parquet"},
        schema=huge_schema(900, 300),
    )
    file = parsed(tmp_path, wide=wide)
    size = len(json.dumps(file.topic("wide").to_settings()).encode())
    assert size > STEP_FUNCTIONS_PAYLOAD  # ~280 KB: under DynamoDB's 400 KB item, over a state's 256 KB
    store = InMemoryStore()
    with pytest.raises(ConfigError):
        push.apply(push.plan(file, store), store, actor="ann", prune=False)


def test_a_push_refuses_a_declared_schema_wider_than_a_topic_may_hold(tmp_path: Path) -> None:
    """Inferred schemas stop at MAX_COLUMNS (1000, "it travels in the run state and the state table");
    a declared one is not checked against it, neither when the file is loaded nor when it is pushed."""
    from leanops.schema import MAX_COLUMNS

    wide = local_topic(
        tmp_path,
        "wide",
        sink={"type": "files", "uri": str(tmp_path / "out" / "wide"), "format": "parquet"},
        schema=huge_schema(MAX_COLUMNS + 1, 1),
    )
    with pytest.raises(ConfigError):
        parsed(tmp_path, wide=wide)


# --- two operators --------------------------------------------------------------------------------------


def push_file(store: Any, file: Any, actor: str, *, prune: bool = False) -> None:
    """What `leanops topics push` does with a file, under the push lease."""
    with push.push_lease(store, actor):
        plan = push.plan(file, store)
        push.check_fleet(plan, file, prune=prune)
        push.apply(plan, store, actor=actor, prune=prune)


def test_racing_pushes_from_two_files_cannot_leave_two_topics_on_one_sink(tmp_path: Path) -> None:
    """Each file is validated alone (sinks apart) and conflicts are per topic: two operators pushing
    different topics onto one sink must not both win (one topic's clean-up lists, and deletes, the other's
    objects). The push lease orders them, and the second is checked against what the first pushed."""
    store = InMemoryStore()
    shared = str(tmp_path / "lake" / "shared")
    alice = parsed(
        tmp_path, "alice.yaml", a=local_topic(tmp_path, "a", sink={"type": "files", "uri": shared})
    )
    bob = parsed(tmp_path, "bob.yaml", b=local_topic(tmp_path, "b", sink={"type": "files", "uri": shared}))
    push_file(store, alice, "alice")
    with pytest.raises(ConfigError, match="write overlapping sinks"):
        push_file(store, bob, "bob")
    assert sorted(push.pushed_configs(store)) == ["a"]


def test_a_push_waits_for_no_other_it_is_refused_while_one_holds_the_lease(
    tmp_path: Path, scheduler: Any
) -> None:
    """Schedules are not versioned: a sync that read the table before another push pruned a topic would
    re-create the pruned topic's schedule. The push lease keeps two pushes (plan, writes, sync) apart: a
    second push is refused while the first holds it, and goes through after."""
    store = InMemoryStore()
    both = parsed(
        tmp_path,
        a=local_topic(tmp_path, "a", schedule="rate(5 minutes)"),
        b=local_topic(tmp_path, "b", schedule="rate(5 minutes)"),
    )
    only_a = parsed(tmp_path, a=local_topic(tmp_path, "a", schedule="rate(5 minutes)"))
    push_file(store, both, "ann")
    with push.push_lease(store, "ann"):  # ann's push is under way (its sync not done yet)
        with pytest.raises(push.PushConflict, match=r"another push \(push:ann:[0-9a-f]+\) is in progress"):
            push_file(store, only_a, "bob", prune=True)
        push.sync_schedules(scheduler, TARGET, store)
    push_file(store, only_a, "bob", prune=True)
    push.sync_schedules(scheduler, TARGET, store)
    names = {s["Name"] for s in scheduler.list_schedules(GroupName=TARGET.group)["Schedules"]}
    assert store.read_pushed_topic("b") is None and names == {"a"}


# --- a failure half-way ----------------------------------------------------------------------------------


def test_a_push_that_fails_half_way_still_makes_the_schedules_match_what_it_wrote(
    tmp_path: Path, scheduler: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`leanops topics push` syncs schedules only when every topic's write succeeded. One refused topic
    (a racing push, a throttle, a topic over the item limit) leaves the others written, but their schedules
    are not made and a pruned topic's schedule keeps starting runs that fail ("not pushed"). With a
    permanent failure (a topic too large), every later push fails the same way: the schedules never
    converge. The sync reads the table back, so running it after a failed apply is always safe."""
    store = InMemoryStore()
    first = parsed(
        tmp_path,
        gone=local_topic(tmp_path, "gone", schedule="rate(5 minutes)"),
        busy=local_topic(tmp_path, "busy"),
    )
    push.apply(push.plan(first, store), store, actor="ann", prune=False)
    push.sync_schedules(scheduler, TARGET, store)
    path = tmp_path / "topics.yaml"
    path.write_text(
        json.dumps(
            {
                "topics": {
                    "busy": local_topic(tmp_path, "busy", batch_size=7),
                    "new": local_topic(tmp_path, "new", schedule="rate(5 minutes)"),
                }
            }
        )
    )
    from leanops.config import load_topics

    loaded = load_topics(path)
    real_push_topic = store.push_topic

    def racing(topic: Any, *, expected_version: int | None) -> None:
        if topic.name == "busy":  # another operator pushed busy between our plan and our write
            from leanops.protocol.store import TopicPushConflict

            raise TopicPushConflict("busy", 2)
        real_push_topic(topic, expected_version=expected_version)

    monkeypatch.setattr(store, "push_topic", racing)
    target = SimpleNamespace(
        description="test stack",
        topics=loaded,
        table="t",
        local=object(),
        client=lambda service: scheduler,
        schedule_target=lambda: TARGET,
        store=lambda: store,
    )
    monkeypatch.setattr(topics_cli, "check", lambda resolved: None)
    # The command's body (past its option parsing and one-line error handling), on this target.
    body = topics_cli.push_command.callback.__wrapped__.__wrapped__  # type: ignore[union-attr]
    with pytest.raises(push.PushConflict):
        body(target=lambda: target, config=str(path), prune=True, dry_run=False, as_json=True)
    assert store.read_pushed_topic("gone") is None and store.read_pushed_topic("new") is not None
    names = {s["Name"] for s in scheduler.list_schedules(GroupName=TARGET.group)["Schedules"]}
    assert names == {"new"}, f"schedules {sorted(names)} after the push wrote gone's removal and new"


# --- names -----------------------------------------------------------------------------------------------


def test_two_topics_never_share_a_schedule_name(tmp_path: Path, scheduler: Any) -> None:
    """A topic of 52-128 characters gets its first 51, `-` and 12 hex digits; a topic may be named exactly
    that (64 valid characters). Both map to one schedule: `sync` keeps one (a dict), the other topic is
    silently unscheduled, or its schedule is rewritten to start the other topic."""
    long_name = "t" * 100
    twin = schedules.schedule_name(long_name)
    assert len(twin) == 64 and twin != long_name
    configs = parsed(
        tmp_path,
        **{
            long_name: local_topic(tmp_path, "long", schedule="rate(5 minutes)"),
            twin: local_topic(tmp_path, "twin", schedule="rate(1 hour)"),
        },
    ).topics
    try:
        schedules.sync(scheduler, TARGET, configs)
    except ConfigError:
        return  # refused: fine
    started = {
        schedules.run_input(scheduler.get_schedule(Name=s["Name"], GroupName=TARGET.group))["topic"]
        for s in scheduler.list_schedules(GroupName=TARGET.group)["Schedules"]
    }
    assert started == {long_name, twin}, f"only {started} are scheduled"


# --- hand edits ------------------------------------------------------------------------------------------


def test_a_push_reverts_an_end_date_set_by_hand_in_the_console(tmp_path: Path, scheduler: Any) -> None:
    """The console lets an operator add an end date (or a start date, a KMS key, ActionAfterCompletion)
    to a schedule. `_differs` compares a few fields only, so the push reports the schedule unchanged and it
    stays as edited: past its end date the topic silently stops being scheduled (or is deleted)."""
    configs = parsed(tmp_path, t=local_topic(tmp_path, "t", schedule="rate(5 minutes)")).topics
    schedules.sync(scheduler, TARGET, configs)
    edited = {**schedules.desired(configs["t"], TARGET)}
    edited["EndDate"] = datetime.datetime(2020, 1, 1, tzinfo=datetime.UTC)
    edited["ActionAfterCompletion"] = "DELETE"
    scheduler.update_schedule(**edited)  # by hand
    changes = schedules.sync(scheduler, TARGET, configs)
    assert "EndDate" not in scheduler.get_schedule(Name="t", GroupName=TARGET.group), (
        f"the hand-set end date survived the push ({vars(changes)})"
    )


def test_the_local_scheduler_follows_a_shorter_rate_at_once(tmp_path: Path, scheduler: Any) -> None:
    """README: 'Schedules are re-read every tick: a push takes effect at once'. A schedule changed from
    rate(1 hour) to rate(1 minute) keeps the due time it got under the hour: the first run comes an hour
    later (low: local only)."""
    hourly = parsed(tmp_path, t=local_topic(tmp_path, "t", schedule="rate(1 hour)")).topics
    schedules.sync(scheduler, TARGET, hourly)
    started: list[float] = []
    stop = threading.Event()
    now = [1_000_000.0]
    ticks = [0]

    class Sfn:
        def start_execution(self, **request: Any) -> None:
            started.append(now[0])
            stop.set()

    def clock() -> float:
        ticks[0] += 1
        if ticks[0] == 2:  # the operator pushes rate(1 minute)
            schedules.sync(
                scheduler,
                TARGET,
                parsed(tmp_path, t=local_topic(tmp_path, "t", schedule="rate(1 minute)")).topics,
            )
        now[0] += 30
        if ticks[0] > 20:  # 10 minutes: give up
            stop.set()
        return now[0]

    fire_schedules(scheduler, Sfn(), TARGET.group, stop, tick=0.001, clock=clock)
    assert started, "no run within 10 minutes of switching to rate(1 minute)"


# --- the run state -----------------------------------------------------------------------------------------


def test_the_run_state_keeps_the_declared_column_order_whatever_json_object_order(tmp_path: Path) -> None:
    """The decision stores settings as JSON text because a DynamoDB map does not keep key order and a
    schema's columns are ordered; the run state then carries them as a JSON *object* through Step
    Functions, whose objects are unordered by RFC 8259 (nothing promises their key order). A transport
    that sorts keys changes the Parquet column order Process works by."""
    world = worlds.three_part_topic(
        tmp_path,
        sink={"type": "files", "uri": str(tmp_path / "out"), "format": "parquet"},
        schema={"zeta": "string", "alpha": "int64"},
    )
    store = world["protocol"].store
    push.apply(push.plan(world["topics"], store), store, actor="ann", prune=False)
    world["topics"] = PushedTopics(store, tmp_path)
    state = worlds.start(world)
    carried = json.loads(json.dumps(state, sort_keys=True))  # a transport free to order keys
    config = tasks.RunState.from_json(carried).config(world["topics"])
    assert [c.name for c in config.schema.columns] == ["zeta", "alpha"]


# --- digests ---------------------------------------------------------------------------------------------


def test_the_digest_is_checked_against_the_stored_settings(tmp_path: Path) -> None:
    """plan() trusts the stored digest: an item whose settings were changed without its digest (edited by
    hand in the console, a partial restore, a script) is reported unchanged and never repaired by a push."""
    store = InMemoryStore()
    file = parsed(tmp_path, t=local_topic(tmp_path, "t", batch_size=10))
    push.apply(push.plan(file, store), store, actor="ann", prune=False)
    pushed = store.read_pushed_topic("t")
    tampered = {**pushed.settings, "batch_size": 999_999}
    store.pushed["t"] = type(pushed)(**{**vars(pushed), "settings": tampered})
    plan = push.plan(file, store)
    assert plan.changed == ["t"], "the settings runs read differ from the file, yet the push skips the topic"
