"""Alarms that see every topic: the real tasks run topics on the in-memory store under a fake clock, their
EMF output is captured as the handlers flush it, and the template's Metrics Insights alarms are evaluated
over it (tests/support/metrics_insights.py). Also the schedule periods the staleness ratio divides by, and
the lock item's last success time on DynamoDB Local."""

from __future__ import annotations

import contextlib
import datetime as dt
import io
import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from leanops import cadence, health, tasks
from leanops.config import parse_topics
from leanops.errors import ConfigError
from leanops.observability import metrics
from leanops.protocol import Acquired, Advance, Held, Protocol, TopicRef
from leanops.protocol.memory import InMemoryStore
from tests.support.clock import FakeClock
from tests.support.metrics_insights import Alarm, Datapoint, datapoints, emf_records
from tests.workflows.cfn_yaml import load_template

REPO = Path(__file__).resolve().parents[2]
TOPIC_ALARMS = (
    "LagOverObjectiveAlarm",
    "StaleTopicAlarm",
    "RepeatedFailuresAlarm",
    "LateObjectsAlarm",
    "LockHeldAlarm",
)
MINUTE_MS = 60_000
HOUR_MS = 60 * MINUTE_MS


@pytest.fixture(scope="module")
def alarms() -> dict[str, Alarm]:
    template = load_template(REPO / "template.yaml")
    return {name: Alarm.from_template(template, name) for name in TOPIC_ALARMS}


class Site:
    """Topic ``t`` (files source and sink under ``root``) run as the state machine runs it, each task
    invocation's metrics flushed as its handler's decorator does, stamped with the fake clock's time."""

    def __init__(self, root: Path, clock: FakeClock, **settings: Any) -> None:
        self.root, self.clock = root, clock
        self.source = root / "in"
        self.source.mkdir(parents=True)
        topic = {
            "source": {"type": "files", "uri": str(self.source)},
            "sink": {"type": "files", "uri": str(root / "out")},
            "timestamp_field": "ts",
            "lease_seconds": 60,
            **settings,
        }
        self.topics = parse_topics({"topics": {"t": topic}}, root / "topics.yaml")
        self.protocol = Protocol(InMemoryStore(), clock=clock)
        self.records: list[dict[str, Any]] = []
        self.outcomes: list[str] = []
        self.landed = 0
        self.runs = 0

    def land(self, *ages_s: float) -> None:
        """A new object (its key sorts after every earlier one) of records that are ``ages_s`` old now."""
        now_s = self.clock.now_ms / 1000
        lines = "".join(json.dumps({"ts": now_s - age}) + "\n" for age in ages_s)
        (self.source / f"part-{self.landed:06d}.jsonl").write_text(lines)
        self.landed += 1

    def invoke(self, task: Callable[..., Any], *args: Any) -> Any:
        """``task(*args)`` as its handler runs it: its metrics flushed (EMF on stdout) whatever happens."""
        out = io.StringIO()
        try:
            with contextlib.redirect_stdout(out):
                try:
                    return task(*args)
                finally:
                    metrics.flush_metrics()
        finally:
            for record in emf_records(out.getvalue()):
                record["_aws"]["Timestamp"] = self.clock.now_ms
                self.records.append(record)

    def run(self, **start: Any) -> str:
        """One execution: Acquire, (ProcessBatch, AdvanceCheckpoint)*, or ReleaseAfterFailure on an error."""
        self.runs += 1
        execution = f"arn:aws:states:us-east-1:123456789012:execution:topic-run:run-{self.runs}"
        start_input: dict[str, Any] = {"topic": "t", "scheduled_time": str(self.clock.now_ms), **start}
        event = {"input": start_input, "execution": execution, "execution_name": f"run-{self.runs}"}
        state: dict[str, Any] = dict(start_input)
        p, topics = self.protocol, self.topics
        try:
            state = self.invoke(tasks.acquire, event, p, topics).to_json()
            while state["outcome"] == "acquired" and not state["released"]:
                run_state = tasks.RunState.from_json(state)
                state["batch"] = self.invoke(tasks.process, run_state, p, topics, lambda: 60_000).to_json()
                state = self.invoke(tasks.advance, run_state, state["batch"], p, topics).to_json()
        except Exception as exc:  # the ASL's Catch: ReleaseAfterFailure, then the execution fails
            failed = {
                "state": {**state, "error": {"Error": type(exc).__name__, "Cause": str(exc)}},
                "owner": execution,
            }
            self.invoke(tasks.release_after_failure, failed, p)
            self.outcomes.append("failed")
            return "failed"
        self.outcomes.append(state["outcome"])
        return str(state["outcome"])

    @property
    def points(self) -> list[Datapoint]:
        return datapoints(self.records)


def states(alarms: dict[str, Alarm], site: Site) -> dict[str, str]:
    points = site.points
    return {name: alarm.evaluate(points, site.clock.now_ms).state for name, alarm in alarms.items()}


def quiet(alarms: dict[str, Alarm]) -> dict[str, str]:
    return dict.fromkeys(alarms, "OK")


def healthy_hour(site: Site, alarms: dict[str, Alarm], *, runs: int, every_ms: int) -> None:
    """``runs`` scheduled runs, each finding a fresh object; the alarms quiet at every run and between."""
    for _ in range(runs):
        site.land(30, 20, 10)
        assert site.run() == "processed"
        assert states(alarms, site) == quiet(alarms), site.clock.now_ms
        site.clock.advance(every_ms)
        assert states(alarms, site) == quiet(alarms), site.clock.now_ms


# --- (a) a stuck topic ----------------------------------------------------------------------------------


def stuck_topic(tmp_path: Path, alarms: dict[str, Alarm]) -> Site:
    """A 5-minute topic with a 15-minute lag objective, healthy for an hour, then its source gone for
    45 minutes: every run fails at its start."""
    site = Site(tmp_path, FakeClock(), schedule="rate(5 minutes)", lag_objective_seconds=900)
    healthy_hour(site, alarms, runs=12, every_ms=5 * MINUTE_MS)
    shutil.rmtree(site.source)
    for _ in range(9):
        assert site.run() == "failed"
        site.clock.advance(5 * MINUTE_MS)
    return site


def test_a_stuck_topic_raises_the_lag_failure_and_staleness_alarms(tmp_path, alarms):
    site = stuck_topic(tmp_path, alarms)
    points = site.points
    for name in ("LagOverObjectiveAlarm", "RepeatedFailuresAlarm", "StaleTopicAlarm"):
        evaluation = alarms[name].evaluate(points, site.clock.now_ms)
        assert (evaluation.state, evaluation.breaching) == ("ALARM", ["t"]), name
    # the lag it reports is the checkpoint's age (45 minutes and the newest record's 10 s: 3x the objective)
    (lag,) = alarms["LagOverObjectiveAlarm"].evaluate(points, site.clock.now_ms).series["t"]
    assert lag == pytest.approx((45 * 60 + 10) / 900, rel=1e-3)
    assert alarms["LateObjectsAlarm"].evaluate(points, site.clock.now_ms).state == "OK"
    assert alarms["LockHeldAlarm"].evaluate(points, site.clock.now_ms).state == "OK"


def test_without_the_start_of_run_report_a_stuck_topic_looks_fine(tmp_path, alarms, monkeypatch):
    # The guard of the test above: lag reported only on commit (as before) goes silent exactly when the
    # topic is stuck, and silence is not a breach. So does staleness, with no run reporting it.
    monkeypatch.setattr(health, "report_start", lambda *args, **kwargs: None)
    site = stuck_topic(tmp_path, alarms)
    assert alarms["LagOverObjectiveAlarm"].evaluate(site.points, site.clock.now_ms).state == "OK"
    assert alarms["StaleTopicAlarm"].evaluate(site.points, site.clock.now_ms).state == "OK"
    assert alarms["RepeatedFailuresAlarm"].evaluate(site.points, site.clock.now_ms).state == "ALARM"


def test_a_topic_that_never_succeeded_becomes_stale_after_its_failures(tmp_path, alarms):
    site = Site(tmp_path, FakeClock(), schedule="rate(1 hour)")
    shutil.rmtree(site.source)
    seen = []
    for _ in range(4):
        assert site.run() == "failed"
        seen.append(alarms["StaleTopicAlarm"].evaluate(site.points, site.clock.now_ms).state)
        site.clock.advance(HOUR_MS)
    # (failures + 1) / 2.5 at each start: 0.4, 0.8, 1.2, 1.6 — and no lag: it never committed
    assert seen == ["OK", "OK", "ALARM", "ALARM"]
    assert not [p for p in site.points if p.name in ("LagSeconds", "LagRatio")]


# --- (b), (c) healthy topics ----------------------------------------------------------------------------


def test_a_healthy_nightly_cron_topic_raises_nothing_at_any_hour(tmp_path, alarms):
    start = dt.datetime(2027, 3, 1, 0, 0, tzinfo=dt.UTC)
    clock = FakeClock(int(start.timestamp() * 1000))
    site = Site(tmp_path, clock, schedule="cron(0 2 * * ? *)", lag_objective_seconds=93_600)
    for hour in range(24 * 6):
        if clock.now_ms % (24 * HOUR_MS) == 2 * HOUR_MS:  # 02:00 UTC: the day's data has landed
            site.land(23 * 3600, 12 * 3600, 3600)
            assert site.run() in ("processed", "up_to_date"), hour
        for _ in range(4):  # CloudWatch evaluates every minute: sample each quarter hour
            assert states(alarms, site) == quiet(alarms), (hour, site.points[-3:])
            clock.advance(15 * MINUTE_MS)
    assert site.outcomes == ["processed"] * 6
    ratios = [p.value for p in site.points if p.name == "StalenessRatio"]
    assert len(ratios) == 6 and max(ratios[1:]) == pytest.approx(1 / 2.5, rel=1e-3)  # a day of 2.5


def test_a_healthy_minute_rate_topic_raises_nothing(tmp_path, alarms):
    site = Site(tmp_path, FakeClock(), schedule="rate(1 minute)")
    healthy_hour(site, alarms, runs=150, every_ms=MINUTE_MS)
    names = {p.name for p in site.points if p.dimensions["topic"] == "t"}
    assert {"LagSeconds", "LagRatio", "StalenessRatio", "RunFailed"} <= names


def test_every_outcome_reports_one_run_result_and_a_duplicate_start_none(tmp_path):
    site = Site(tmp_path, FakeClock(), schedule="rate(5 minutes)")
    site.land(5)
    assert site.run(scheduled_time="s1") == "processed"
    assert site.run(scheduled_time="s1") == "duplicate"
    assert site.run(scheduled_time="s2") == "up_to_date"
    site.protocol.pause(TopicRef("t"), actor="ops", reason="maintenance")
    assert site.run(scheduled_time="s3") == "paused"
    site.protocol.resume(TopicRef("t"), actor="ops", reason="done")
    holder = site.protocol.acquire(TopicRef("t"), "someone-else", 60)
    assert isinstance(holder, Acquired)
    for _ in range(6):  # held for 3 leases by a live run: it renews every half lease
        site.clock.advance(30_000)
        site.protocol.renew(holder.lease, 60)
    assert site.run(scheduled_time="s4") == "skipped_locked"
    results = [p.value for p in site.points if p.name == "RunFailed"]
    assert results == [0, 0, 0, 0]  # processed, up to date, paused, skipped: one each; the duplicate none
    (held,) = [p.value for p in site.points if p.name == "LockHeldLeases"]
    assert held == pytest.approx(3.0)
    by_record = [
        {m["Name"] for d in r["_aws"]["CloudWatchMetrics"] for m in d["Metrics"]} for r in site.records
    ]
    paused = next(names for names in by_record if "LagRatio" in names and "StalenessRatio" not in names)
    assert "RunFailed" in paused  # the paused run: lag, and no staleness


def test_a_long_held_lock_raises_the_lock_alarm(tmp_path, alarms):
    site = Site(tmp_path, FakeClock(), schedule="rate(1 minute)")
    holder = site.protocol.acquire(TopicRef("t"), "a-long-run", 60)
    assert isinstance(holder, Acquired)
    for minute in range(8):
        site.protocol.renew(holder.lease, 60)
        assert site.run() == "skipped_locked"
        state = alarms["LockHeldAlarm"].evaluate(site.points, site.clock.now_ms).state
        assert state == ("ALARM" if minute > 5 else "OK"), minute
        site.clock.advance(MINUTE_MS)


def test_late_objects_raise_the_late_objects_alarm(tmp_path, alarms):
    site = Site(tmp_path, FakeClock(), schedule="rate(5 minutes)")
    site.land(10)
    site.land(10)
    assert site.run() == "processed"
    (site.source / "part-000000a.jsonl").write_text(
        json.dumps({"ts": 0}) + "\n"
    )  # sorts before the checkpoint
    site.clock.advance(5 * MINUTE_MS)
    assert site.run() == "up_to_date"
    evaluation = alarms["LateObjectsAlarm"].evaluate(site.points, site.clock.now_ms)
    assert (evaluation.state, evaluation.breaching) == ("ALARM", ["t"])


# --- (d) backfills --------------------------------------------------------------------------------------


def test_a_backfills_runs_raise_nothing_for_the_topic(tmp_path, alarms):
    site = Site(tmp_path, FakeClock(), schedule="rate(5 minutes)", lag_objective_seconds=60, batch_size=1)
    for _ in range(4):
        site.land(3600 * 24 * 30)  # month-old records: a backfill's lag would be 43,200 objectives
    assert site.run() == "processed"
    site.records.clear()
    end = site.protocol.read_checkpoint(TopicRef("t")).position
    assert end is not None
    backfill, _ = site.protocol.define_backfill(
        TopicRef("t"), start=None, end=end, sink=str(tmp_path / "replay"),
        format="jsonl", compression="none", actor="ops", reason="reprocess",
    )  # fmt: skip
    for _ in range(5):
        site.run(backfill=backfill.id)
        site.clock.advance(MINUTE_MS)
    shutil.rmtree(site.source)  # and its failures
    for _ in range(4):
        assert site.run(backfill=backfill.id) == "failed"
        site.clock.advance(MINUTE_MS)
    assert "processed" in site.outcomes
    health_metrics = {"LagSeconds", "LagRatio", "StalenessRatio", "RunFailed", "LockHeldLeases"}
    assert not [p for p in site.points if p.name in health_metrics]
    assert states(alarms, site) == quiet(alarms)


# --- schedule periods -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expression", "hours"),
    [
        ("rate(5 minutes)", 5 / 60),
        ("rate(1 hour)", 1),
        ("rate(2 days)", 48),
        ("cron(0 2 * * ? *)", 24),
        ("cron(0/15 * * * ? *)", 0.25),
        ("cron(0 9 ? * MON-FRI *)", 72),  # Friday 09:00 to Monday 09:00
        ("cron(30 8-17 ? * 2-6 *)", 63),  # 1 = Sunday: Friday 17:30 to Monday 08:30
        ("cron(0 0 L * ? *)", 31 * 24),  # the last day of each month
    ],
)
def test_a_schedules_period_is_its_longest_gap(expression, hours):
    assert cadence.period_seconds(expression) == pytest.approx(hours * 3600)


@pytest.mark.parametrize("expression", [None, "at(2027-01-01T00:00:00)", "cron(0 0 1 1 ? 2020)"])
def test_one_time_and_manual_schedules_have_no_period(expression):
    assert cadence.period_seconds(expression) is None


@pytest.mark.parametrize(
    "expression", ["cron(0 2 * * * *)", "cron(0 2 * *)", "rate(0 minutes)", "rate(5 weeks)"]
)
def test_a_bad_schedule_is_one_config_error(expression):
    with pytest.raises(ConfigError, match="schedule"):
        cadence.period_seconds(expression)


def test_the_default_lag_objective_comes_from_the_stack(tmp_path, monkeypatch):
    config = parse_topics(
        {
            "topics": {
                "t": {"source": {"type": "files", "uri": "in"}, "sink": {"type": "files", "uri": "out"}}
            }
        },
        tmp_path / "topics.yaml",
    ).topic("t")
    monkeypatch.delenv("LEANOPS_DEFAULT_LAG_OBJECTIVE_SECONDS", raising=False)
    assert health.lag_objective_seconds(config) == 3600
    monkeypatch.setenv("LEANOPS_DEFAULT_LAG_OBJECTIVE_SECONDS", "7200")
    assert health.lag_objective_seconds(config) == 7200
    monkeypatch.setenv("LEANOPS_DEFAULT_LAG_OBJECTIVE_SECONDS", "soon")
    with pytest.raises(ConfigError, match="LEANOPS_DEFAULT_LAG_OBJECTIVE_SECONDS"):
        health.lag_objective_seconds(config)


def test_the_template_passes_the_default_objective_to_every_function():
    template = load_template(REPO / "template.yaml")
    variables = template["Globals"]["Function"]["Environment"]["Variables"]
    assert variables["LEANOPS_DEFAULT_LAG_OBJECTIVE_SECONDS"] == {"Ref": "DefaultLagObjectiveSeconds"}


def test_the_alarms_fit_metrics_insights_rules(alarms):
    for name, alarm in alarms.items():
        assert alarm.period_s % 60 == 0 and alarm.period_s * alarm.evaluation_periods <= 3 * 3600, name
        assert alarm.query.group == "topic" and alarm.query.schema == {"service", "topic"}, name
        assert alarm.treat_missing == "notBreaching", name  # a silent topic (paused, nightly) is no breach


# --- the lock item keeps the last success, in both stores ---------------------------------------------


@pytest.fixture(params=["memory", "dynamodb"])
def store_protocol(request: pytest.FixtureRequest) -> tuple[Protocol, FakeClock]:
    clock = FakeClock()
    if request.param == "memory":
        return Protocol(InMemoryStore(), clock=clock), clock
    from leanops.protocol.dynamodb import DynamoDBStore

    table = request.getfixturevalue("state_table")  # DynamoDB Local
    return Protocol(DynamoDBStore(table.name, table.client), clock=clock), clock


def test_the_lock_item_keeps_the_last_successful_runs_time_through_failures(store_protocol):
    protocol, clock = store_protocol
    topic = TopicRef("t")
    first = protocol.acquire(topic, "run-1", 60)
    assert isinstance(first, Acquired) and first.lock is not None and first.lock.last_success_at_ms is None
    ended_well = clock.now_ms
    protocol.release(first.lease, outcome="up_to_date")
    clock.advance(HOUR_MS)
    second = protocol.acquire(topic, "run-2", 60)
    assert isinstance(second, Acquired) and second.lock is not None
    assert second.lock.last_success_at_ms == ended_well
    # another start meanwhile sees the holder's acquisition time and the last success
    clock.advance(MINUTE_MS)
    held = protocol.acquire(topic, "run-3", 60)
    assert isinstance(held, Held) and held.lock is not None
    assert (held.lock.acquired_at_ms, held.lock.last_success_at_ms) == (clock.now_ms - MINUTE_MS, ended_well)
    protocol.release_owned_by(topic, "run-2")
    protocol.record_failure(topic, "run-2", "Boom", "it broke")
    lock = protocol.status(topic).lock
    assert lock is not None
    assert (lock.last_outcome, lock.last_run_at_ms, lock.last_success_at_ms) == (
        "failed",
        clock.now_ms,
        ended_well,
    )
    # a commit that releases is a success too
    clock.advance(HOUR_MS)
    third = protocol.acquire(topic, "run-4", 60)
    assert isinstance(third, Acquired)
    protocol.commit(third.lease, third.checkpoint, Advance("a.jsonl#1", 1_700_000_000), release=True)
    lock = protocol.status(topic).lock
    assert lock is not None and (lock.last_success_at_ms, lock.failures) == (clock.now_ms, 0)
