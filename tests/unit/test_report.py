"""`leanops report`: each query's answer on a generated history whose answers are known, the charts, the
SQL as both engines take it, the template's generated analytics, and Athena's call shape.

The history: runs of four topics every 15 minutes for two days (outcomes, errors, lags and durations drawn
from a seeded generator), a backfill's runs, a hand-made failure-and-recovery sequence, and three committed
batches over two source objects. The older part is archived by the archive's own writer
(:func:`leanops.archive.archive_batch`, from stream records shaped as Lambda delivers them), the rest is live
in a (moto) state table, and a few items are in both; some archived items are archived twice (as for a
batch Lambda gave up on), and the archive holds an ``unparsed`` record of a run. The expected answers are
computed here, in Python, from the generated records: each item counts once, on either engine (the SQL
itself picks one copy of an item).
"""

from __future__ import annotations

import dataclasses
import json
import random
import statistics
import struct
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
import duckdb
import numpy as np
import pytest
import yaml
from boto3.dynamodb.types import TypeSerializer
from click.testing import CliRunner
from leanopsctl.analytics import athena_literal, parse_since, queries, query, topic_pattern, window
from leanopsctl.analytics.athena import OUTPUT_DATABASE, OUTPUT_WORKGROUP, AthenaQueries, named_query_output
from leanopsctl.analytics.charts import lag_figure, runs_figure, save_png
from leanopsctl.analytics.engine import History, archived_outputs, live_items, local_archive_root
from leanopsctl.cli import main
from leanopsctl.cli.report import plain_position
from leanopsctl.deploy import analytics as generator
from leanopsctl.local.stack import StackRecord
from leanopsctl.target import Target
from moto import mock_aws
from moto.athena.models import QueryResults, athena_backends

from leanops import archive
from leanops.config import load_topics
from leanops.constants import ENV_HOME
from leanops.data.storage import open_store
from leanops.errors import InvalidInput
from leanops.protocol.model import RunRecord, TopicRef
from leanops.protocol.table import create_table

T0 = datetime(2025, 3, 3, tzinfo=UTC)
SINCE = T0 - timedelta(days=1)
#: Runs before SINCE: in the archive, never counted.
OLD = T0 - timedelta(days=10)
#: Items of runs that started before this are archived; later ones are live.
ARCHIVED_BEFORE = T0 + timedelta(hours=30)
TOPICS = ("alpha", "beta", "gamma_1", "gammaz1")
BACKFILL = "bf-0123456789ab"
FAILURES = ("failed", "timed_out", "aborted")
GOOD = ("processed", "up_to_date")
ARN = "arn:aws:states:us-east-1:123456789012:execution:TopicRun"
TABLE = "leanops-report-test"


def ms(when: datetime) -> int:
    return int(when.timestamp() * 1000)


@dataclass(frozen=True)
class Run:
    topic: str
    record: RunRecord
    partition: str | None = None

    @property
    def started(self) -> datetime:
        return datetime.fromtimestamp(self.record.started_at_ms / 1000, UTC)

    @property
    def ended(self) -> datetime:
        return datetime.fromtimestamp(self.record.ended_at_ms / 1000, UTC)

    def item(self) -> dict[str, Any]:
        return {
            "pk": TopicRef(self.topic, self.partition).key,
            "sk": self.record.key,
            **self.record.to_json(),
            "expires_at": self.record.ended_at_ms // 1000 + 7 * 86_400,
        }


@dataclass
class GeneratedHistory:
    runs: list[Run] = field(default_factory=list)
    outputs: list[dict[str, Any]] = field(default_factory=list)
    #: Items written both to the archive and to the table (deleted while a report read them).
    both: list[dict[str, Any]] = field(default_factory=list)
    #: Items archived twice, under other object names (a batch Lambda gave up on, archived again).
    twice: list[dict[str, Any]] = field(default_factory=list)

    def counted(self) -> list[Run]:
        return [run for run in self.runs if run.started >= SINCE]


def _run(topic: str, started: datetime, seconds: float, outcome: str, **fields: Any) -> Run:
    partition = fields.pop("partition", None)
    name = fields.pop("name", f"{topic}-{ms(started)}")
    record = RunRecord(
        execution=f"{ARN}:{name}",
        outcome=outcome,
        started_at_ms=ms(started),
        ended_at_ms=ms(started + timedelta(seconds=seconds)),
        **fields,
    )
    return Run(topic, record, partition)


def generate(seed: int = 13) -> GeneratedHistory:
    """The history every test here reads (see the module docstring)."""
    rng = random.Random(seed)
    history = GeneratedHistory()
    outcomes = ("processed", "up_to_date", "failed", "timed_out", "skipped_locked")
    errors = ("ProcessorError", "UnreadableObject", "States.TaskFailed")
    for topic in TOPICS:
        for n in range(192):  # every 15 minutes for two days
            started = T0 + timedelta(minutes=15 * n, seconds=rng.randint(0, 59))
            outcome = rng.choices(outcomes, weights=(55, 25, 10, 3, 7))[0]
            failed = outcome == "failed"
            history.runs.append(
                _run(
                    topic,
                    started,
                    rng.uniform(3, 240),
                    outcome,
                    batches=rng.randint(0, 5),
                    records=rng.randint(0, 5000),
                    lag_ms=None if outcome == "skipped_locked" else rng.randint(20_000, 5_400_000),
                    fence=n + 1,
                    error=rng.choice(errors) if failed else None,
                    cause=f"cause {n} of {topic}" if failed else None,
                )
            )
        history.runs.append(_run(topic, OLD + timedelta(hours=3), 10, "failed", error="Ancient", lag_ms=1))
    # A backfill of alpha: counted as alpha's runs, never in its lag (a huge one here), recovering by itself.
    for n, outcome in enumerate(("processed", "failed", "processed", "processed")):
        history.runs.append(
            _run(
                "alpha",
                T0 + timedelta(hours=5, minutes=10 * n),
                30,
                outcome,
                partition=BACKFILL,
                lag_ms=10**9,
                error="ProcessorError" if outcome == "failed" else None,
            )
        )
    # delta: made by hand, answers known by heart (see test_failures_and_time_to_recover).
    at = T0 + timedelta(hours=6)
    history.runs += [
        _run("delta", at, 20, "processed", lag_ms=60_000, name="delta-1"),
        _run("delta", at + timedelta(minutes=15), 30, "failed", error="ProcessorError", name="delta-2"),
        _run("delta", at + timedelta(minutes=30), 40, "failed", error="ProcessorError", name="delta-3"),
        _run("delta", at + timedelta(minutes=40), 1, "skipped_locked", name="delta-4"),
        _run("delta", at + timedelta(minutes=45), 45, "up_to_date", lag_ms=120_000, name="delta-5"),
        _run("delta", at + timedelta(minutes=60), 300, "timed_out", name="delta-6"),
    ]
    _prove_scenario(history)
    return history


def _prove_scenario(history: GeneratedHistory) -> None:
    """epsilon commits three batches over part-0001.jsonl (1,000 lines) and part-0002.jsonl (500 lines): the
    first run's record and commit are archived, the second's live, the third's commit archived without a
    run record (its TTL took it before the archive existed)."""
    at = T0 + timedelta(hours=20)
    batches = [
        (None, "part-0001.jsonl#700", ["part-0001.jsonl"]),
        ("part-0001.jsonl#700", "part-0002.jsonl#400", ["part-0001.jsonl", "part-0002.jsonl"]),
        ("part-0002.jsonl#400", "part-0002.jsonl#500", ["part-0002.jsonl"]),
    ]
    for seq, (after, position, keys) in enumerate(batches, start=1):
        # The first run is archived, the second live (after ARCHIVED_BEFORE), the third has no record.
        started = at if seq == 1 else ARCHIVED_BEFORE + timedelta(hours=seq)
        run = _run(
            "epsilon", started, 60, "processed", name=f"epsilon-{seq}", fence=40 + seq, position=position
        )
        if seq != 3:
            history.runs.append(run)
        history.outputs.append(
            {
                "pk": TopicRef("epsilon").key,
                "sk": f"output#{seq:012d}",
                "object": f"epsilon/out-{seq:06d}.jsonl",
                "quarantine": None,
                "stem": f"stem-{seq}",
                "attempt": f"a{seq}",
                "after": after,
                "end": position,
                "position": position,
                "records": 700 if seq < 3 else 100,
                "written": 690 if seq < 3 else 100,
                "quarantined": 10 if seq < 3 else 0,
                "source_keys": keys,
                "fence": 40 + seq,
                "owner": run.record.execution,
                "committed_at": ms(started + timedelta(seconds=50)),
                "expires_at": ms(started) // 1000 + 7 * 86_400,
            }
        )


def _stream_record(index: int, item: dict[str, Any]) -> dict[str, Any]:
    """A TTL deletion of ``item`` as Lambda delivers it."""
    serializer = TypeSerializer()
    return {
        "eventID": f"ev{index:08d}",
        "eventName": "REMOVE",
        "eventSource": "aws:dynamodb",
        "userIdentity": {"type": "Service", "principalId": "dynamodb.amazonaws.com"},
        "dynamodb": {
            "ApproximateCreationDateTime": item["expires_at"],
            "Keys": {"pk": {"S": item["pk"]}, "sk": {"S": item["sk"]}},
            "OldImage": {name: serializer.serialize(value) for name, value in item.items()},
            "SequenceNumber": f"{100_000 + index:021d}",
            "StreamViewType": "NEW_AND_OLD_IMAGES",
        },
    }


def write_archive(root: Path, items: list[dict[str, Any]], first: int = 0) -> None:
    """Archive ``items`` as the stream consumer does (batches of 100 stream records, numbered from
    ``first``: other numbers name other objects)."""
    store = open_store(str(root))
    entries = [archive.archived(_stream_record(first + i, item)) for i, item in enumerate(items)]
    for start in range(0, len(entries), 100):
        written = archive.archive_batch(entries[start : start + 100], store)
        assert written.failure_point == len(entries[start : start + 100])


#: Stream records of the second archiving of some items, and of the unparsed record, are numbered from here.
AGAIN = 500_000


def _archived_twice(item: dict[str, Any]) -> bool:
    """delta's and epsilon's archived items (every report reads some) and every 7th archived run of alpha."""
    topic = item["pk"].removeprefix("topic#")
    return topic in ("delta", "epsilon") or (topic == "alpha" and item.get("started_at_ms", 1) % 7 == 0)


def unparsed_run(item: dict[str, Any]) -> dict[str, Any]:
    """A stream record of a run record the archive cannot parse (its outcome is no text): ``unparsed``."""
    return _stream_record(AGAIN + 99_999, {**item, "outcome": 7})


def _archived(item: dict[str, Any]) -> bool:
    kind = archive.kind_of(item["sk"])
    when = item["started_at_ms"] if kind == "runs" else item["committed_at"]
    return when < ms(ARCHIVED_BEFORE)


def place(history: GeneratedHistory, root: Path, client: Any, table: str, *, duplicates: bool = True) -> None:
    """The older items into the archive under ``root``, the rest into the state table, some in both; with
    ``duplicates``, some archived twice and an unparsed run record in the archive too."""
    items = [run.item() for run in history.runs] + history.outputs
    archived = [item for item in items if _archived(item)]
    live = [item for item in items if not _archived(item)]
    history.both = [item for item in archived if item["pk"] == TopicRef("beta").key][:3]
    write_archive(root, archived)
    if duplicates:
        history.twice = [item for item in archived if _archived_twice(item)]
        write_archive(root, history.twice, first=AGAIN)
        counted = next(r.item() for r in history.counted() if r.topic == "alpha" and _archived(r.item()))
        entry = archive.archived(unparsed_run(counted))
        assert entry.kind == archive.UNPARSED
        assert archive.archive_batch([entry], open_store(str(root))).failure_point == 1
    serializer = TypeSerializer()
    for item in live + history.both:
        # Expiring in 2100: DynamoDB Local deletes expired items within seconds (the history is of 2025).
        kept = {**item, "expires_at": 4_102_444_800}
        client.put_item(TableName=table, Item={name: serializer.serialize(v) for name, v in kept.items()})


@dataclass(frozen=True)
class World:
    """The generated history, placed: its archive under ``home``, its live items in the moto state table;
    ``clean`` is the same archive without the second copies and the unparsed record."""

    history: GeneratedHistory
    home: Path
    client: Any
    clean: Path

    @property
    def root(self) -> Path:
        return local_archive_root(self.home)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    """Made once for the module (the tests only read it), in moto's AWS."""
    with mock_aws():
        client = boto3.client("dynamodb", region_name="us-east-1")
        create_table(client, TABLE)
        home = tmp_path_factory.mktemp("report") / "home"
        history = generate()
        place(history, local_archive_root(home), client, TABLE)
        clean = tmp_path_factory.mktemp("clean") / "archive"
        write_archive(
            clean, [item for item in [r.item() for r in history.runs] + history.outputs if _archived(item)]
        )
        yield World(history, home, client, clean)


@pytest.fixture(scope="module")
def answers(world: World) -> Iterator[tuple[GeneratedHistory, History]]:
    """DuckDB over the archive and the live items of every topic."""
    items = live_items(world.client, TABLE, [*TOPICS, "delta", "epsilon"], archive.SCHEMAS)
    with History(world.root, items) as db:
        yield world.history, db


def _ask(db: History, name: str, topic: str | None = None, **extra: Any) -> list[dict[str, Any]]:
    return db.run(query(name), {**window(SINCE, topic), "position": None, "object": None, **extra})


# --- the reports' answers ---------------------------------------------------------------------------------


def test_runs_per_day_by_outcome_are_the_counts_generated(answers):
    history, db = answers
    expected = Counter((r.topic, r.started.date().isoformat(), r.record.outcome) for r in history.counted())
    rows = _ask(db, "runs")
    assert {(r["topic"], r["day"], r["outcome"]): r["runs"] for r in rows} == expected
    assert len(rows) == len(expected)
    assert sum(r["runs"] for r in rows) == len(history.counted())  # the 3 runs in both places count once


def test_runs_of_one_topic_take_its_name_literally(answers):
    history, db = answers
    rows = _ask(db, "runs", topic="gamma_1")  # `_` is no LIKE wildcard here: gammaz1 is another topic
    assert {r["topic"] for r in rows} == {"gamma_1"}
    assert sum(r["runs"] for r in rows) == sum(1 for r in history.counted() if r.topic == "gamma_1")


def test_lag_per_topic_per_hour_is_the_mean_and_95th_percentile(answers):
    history, db = answers
    lags: dict[tuple[str, datetime], list[float]] = defaultdict(list)
    for run in history.counted():
        if run.partition is None and run.record.lag_ms is not None:
            hour = run.ended.replace(minute=0, second=0, microsecond=0, tzinfo=None)
            lags[(run.topic, hour)].append(run.record.lag_ms / 1000)
    rows = _ask(db, "lag")
    assert {(r["topic"], r["hour"]) for r in rows} == set(lags)
    for row in rows:
        values = lags[(row["topic"], row["hour"])]
        assert row["runs"] == len(values)
        assert row["avg_lag_seconds"] == pytest.approx(statistics.fmean(values))
        assert row["p95_lag_seconds"] == pytest.approx(float(np.percentile(values, 95)))
        assert row["max_lag_seconds"] == max(values)
    assert max(r["max_lag_seconds"] for r in rows) < 10**6  # the backfill's lag is left out


def test_failures_and_time_to_recover(answers):
    history, db = answers
    failed = [r for r in history.counted() if r.record.outcome in FAILURES]
    expected = Counter((r.topic, r.record.error or r.record.outcome) for r in failed)
    by_error = _ask(db, "failures")
    assert {(r["topic"], r["error_type"]): r["failures"] for r in by_error} == expected
    assert [r["failures"] for r in by_error] == sorted((r["failures"] for r in by_error), reverse=True)

    def recovery(run: Run) -> float | None:
        later = [
            r.ended
            for r in history.counted()
            if (r.topic, r.partition) == (run.topic, run.partition)
            and r.record.outcome in GOOD
            and r.ended > run.ended
        ]
        return (min(later) - run.ended).total_seconds() if later else None

    rows = _ask(db, "recovery")
    assert {r["execution"]: r["recover_seconds"] for r in rows} == {
        r.record.execution: recovery(r) for r in failed
    }
    delta = [(r["execution"].rsplit(":", 1)[-1], r["recover_seconds"]) for r in rows if r["topic"] == "delta"]
    # delta-2 ended 06:15:30 and delta-3 06:30:40; delta-5 (up to date) ended 06:45:45; nothing after delta-6.
    assert delta == [("delta-2", 1815.0), ("delta-3", 905.0), ("delta-6", None)]
    backfill = [r for r in rows if r["partition"] == BACKFILL]
    assert [r["recover_seconds"] for r in backfill] == [600.0]  # its next run, not alpha's own


@pytest.mark.parametrize(
    ("probe", "seqs"),
    [
        ({"position": "part-0001.jsonl#80"}, [1]),  # 80 < 700 as numbers (not as text)
        ({"position": "part-0001.jsonl#700"}, [1]),  # a batch's end is its own
        ({"position": "part-0001.jsonl#701"}, [2]),
        ({"position": "part-0002.jsonl#10"}, [2]),  # the batch that spans both objects
        ({"position": "part-0002.jsonl#450"}, [3]),
        ({"position": "part-0003.jsonl#1"}, []),
        ({"object": "epsilon/out-000002.jsonl"}, [2]),
        ({"object": "part-0002.jsonl"}, [2, 3]),  # a source key read by two batches
    ],
)
def test_prove_finds_the_commit_of_a_position_or_an_object(answers, probe, seqs):
    history, db = answers
    rows = _ask(db, "prove", **probe)
    assert [r["seq"] for r in rows] == seqs
    for row in rows:
        output = history.outputs[row["seq"] - 1]
        assert row["execution"] == output["owner"]
        assert row["fence"] == output["fence"]
        assert row["object"] == output["object"]
        assert row["committed_at"] == datetime.fromtimestamp(output["committed_at"] / 1000)
        assert row["matched_by"] == next(iter(probe))
        # The run record: the first archived, the second live, the third has none.
        assert (row["run_outcome"], row["run_fence"]) == (
            ("processed", output["fence"]) if row["seq"] != 3 else (None, None)
        )


def _output_item(topic: str, seq: int, at: datetime, **fields: Any) -> dict[str, Any]:
    """An output record item of ``topic`` (a batch unless ``kind`` says), committed at ``at``."""
    return {
        "pk": TopicRef(topic).key,
        "sk": f"output#{seq:012d}",
        "committed_at": ms(at),
        "owner": f"{ARN}:{topic}-{seq}",
        "fence": seq,
        "expires_at": ms(at) // 1000 + 7 * 86_400,
        **fields,
    }


def _chain(topic: str, ends: list[str]) -> list[dict[str, Any]]:
    """Batches of ``topic`` one after the other: seq n runs from the end of seq n-1 to ``ends[n-1]``."""
    return [
        _output_item(
            topic, seq, T0 + timedelta(hours=seq), after=ends[seq - 2] if seq > 1 else None, position=end
        )
        for seq, end in enumerate(ends, start=1)
    ]


#: Sources' positions, each topic in its source's order (the protocol's and DynamoDB's).
POSITION_TOPICS = {
    "files": ["part-0001.jsonl#700", "part-0002.jsonl#400", "part-0002.jsonl#500"],
    # DynamoDB numbers: exact (as DOUBLE, 9007199254740993 would equal 9007199254740992), up to 38 digits
    "numbers": ["N:9007199254740992", "N:9007199254740993", "N:12345678901234567890123456789012345678"],
    "fractions": ["N:-1.5", "N:-1.25", "N:0.000000000000000000000000000000000001", "N:0.5"],
    # DynamoDB strings: whole, by UTF-8 bytes ('#15' is no offset; é after z, U+FFFF before an emoji)
    "strings": ["S:EVT#15", "S:EVT#2", "S:évènement", "S:\U0001f600"],
}


@pytest.mark.parametrize(
    ("topic", "position", "seqs"),
    [
        ("files", "part-0001.jsonl#80", [1]),  # offsets as numbers: 80 < 700
        ("files", "part-0002.jsonl#401", [3]),
        ("files", "part-0003.jsonl", []),
        ("files", "S:part-0001.jsonl#80", []),  # a string sort key is no files position
        ("numbers", "N:9007199254740992", [1]),
        ("numbers", "N:9007199254740993", [2]),  # not seq 1's too, as it would be compared as DOUBLE
        ("numbers", "N:9007199254740994", [3]),
        ("numbers", "N:12345678901234567890123456789012345679", []),  # past the last end by its 38th digit
        ("numbers", "N:-7", [1]),
        ("numbers", "S:9007199254740993", []),
        ("fractions", "N:-2", [1]),
        ("fractions", "N:-1.4", [2]),
        ("fractions", "N:0", [3]),
        ("fractions", "N:0.00000000000000000000000000000000000100", [3]),  # its end, trailing zeros
        ("fractions", "N:0.0000000000000000000000000000000000011", [4]),
        ("fractions", "N:+00.5", [4]),
        ("strings", "S:EVT#16", [2]),  # "S:EVT#15" < "S:EVT#16" <= "S:EVT#2" as strings
        ("strings", "S:EVT#100", [1]),  # before "S:EVT#15" as a string (100 > 15 as offsets)
        ("strings", "S:EVT#15", [1]),
        ("strings", "S:z", [3]),
        ("strings", "S:\uffff", [4]),
        ("strings", "S:\U0001f601", []),
        ("strings", "EVT#16", []),  # a files position is no string sort key
        ("strings", "N:1", []),
    ],
)
def test_prove_orders_positions_as_their_source_does(topic, position, seqs):
    items = [item for name, ends in POSITION_TOPICS.items() for item in _chain(name, ends)]
    with History(None, {"outputs": items}) as db:
        rows = _ask(db, "prove", topic=topic, position=position)
    assert [r["seq"] for r in rows] == seqs
    assert all(r["still_output"] and r["matched_by"] == "position" for r in rows)


def test_prove_takes_a_number_position_written_with_an_exponent():
    assert plain_position("N:9.007199254740993E+15") == "N:9007199254740993"
    assert plain_position("N:-125e-2") == "N:-1.25"
    for kept in ("N:17", "N:abc", "S:1e3", "part-1e3.jsonl#4"):
        assert plain_position(kept) == kept


def _rewound_history() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """zeta: batches 1-4 (archived; 2 and 3 had expired before the rewind of seq 5 to seq 1, so it could
    not mark them; 4 it marked), the rewind 5 (range 2-4), batch 6 re-committing from seq 1's end, and the
    rewind 7 to seq 1 again (range 2-6: it marks 5 and 6). Archived items, then live ones."""

    def at(seq: int) -> datetime:
        return T0 + timedelta(hours=seq)

    def batch(seq: int, after: str | None, end: str, **fields: Any) -> dict[str, Any]:
        return _output_item("zeta", seq, at(seq), after=after, position=end, object=f"zeta/{seq}", **fields)

    def rewind(seq: int, to: str, first: int, last: int, **fields: Any) -> dict[str, Any]:
        return _output_item(
            "zeta",
            seq,
            at(seq),
            kind="override",
            action="rewind_checkpoint",
            actor="alice",
            reason="again",
            position=to,
            superseded_from=first,
            superseded_to=last,
            **fields,
        )

    def by(seq: int) -> dict[str, Any]:
        return {"superseded_by": seq, "superseded_at_ms": ms(at(seq))}

    archived = [
        batch(1, None, "in.jsonl#100"),
        batch(2, "in.jsonl#100", "in.jsonl#200"),
        batch(3, "in.jsonl#200", "in.jsonl#300"),
        batch(4, "in.jsonl#300", "in.jsonl#400", **by(5)),
    ]
    live = [
        rewind(5, "in.jsonl#100", 2, 4, **by(7)),
        batch(6, "in.jsonl#100", "in.jsonl#400", **by(7)),
        rewind(7, "in.jsonl#100", 2, 6),
    ]
    return archived, live


#: zeta's records superseded by seq (None: still output), and when.
REWOUND = {1: None, 2: 5, 3: 5, 4: 5, 5: 7, 6: 7, 7: None}


def _superseded(rows: list[dict[str, Any]]) -> dict[int, Any]:
    return {r["seq"]: r["superseded_by"] for r in rows}


def test_a_rewind_supersedes_the_records_that_expired_before_it(tmp_path):
    archived, live = _rewound_history()
    write_archive(tmp_path, archived)
    with History(tmp_path, {"outputs": live}) as db:
        outputs = _ask(db, "outputs", topic="zeta", partition="")
        assert _superseded(outputs) == REWOUND
        at = {r["seq"]: r["superseded_at"] for r in outputs}
        assert at[2] == at[3] == at[4] == datetime(2025, 3, 3, 5)  # the rewind of seq 5's time
        # prove: the commits of a position, and whether each is still output
        rows = _ask(db, "prove", topic="zeta", position="in.jsonl#150")
        assert [(r["seq"], r["superseded_by"], r["still_output"]) for r in rows] == [
            (2, 5, False),
            (6, 7, False),
        ]
        [first] = _ask(db, "prove", topic="zeta", position="in.jsonl#50")
        assert (first["seq"], first["superseded_by"], first["still_output"]) == (1, None, True)
    # Later, all of it archived: `leanops output --archive` shows the same (Athena's named query likewise).
    write_archive(tmp_path, live, first=100)
    assert _superseded(archived_outputs(tmp_path, "zeta")) == REWOUND


def test_an_item_both_archived_and_live_counts_once(world):
    history, root, client = world.history, world.root, world.client
    items = live_items(client, TABLE, ["beta"], ["runs"])
    live_keys = {i["sk"] for i in items["runs"]}
    assert {i["sk"] for i in history.both} <= live_keys  # really in both places
    archived = {r["key"] for r in archived_rows(root, "runs") if r["topic"] == "beta"}
    assert {i["sk"] for i in history.both} <= archived
    with History(root, items) as db:
        rows = db.rows("runs", "topic = 'beta'")  # the view holds both copies, as Athena's table would
        assert len(rows) == len(archived | live_keys) + len(history.both)
        counted = sum(r["runs"] for r in _ask(db, "runs", topic="beta"))
    assert counted == sum(1 for r in history.counted() if r.topic == "beta")


def test_the_archive_really_holds_duplicates_and_an_unparsed_record(world):
    """What the reports' answers above are computed despite: the same rows twice, an unparsed record."""
    history, root = world.history, world.root
    assert len({i["sk"] for i in history.twice if i["sk"].startswith("runlog#")}) > 20
    assert any(i["sk"].startswith("output#") for i in history.twice)
    for kind in ("runs", "outputs"):
        rows = archived_rows(root, kind)
        keys = [(r["topic"], r["partition"], r["key"]) for r in rows]
        assert len(keys) - len(set(keys)) == sum(1 for i in history.twice if archive.kind_of(i["sk"]) == kind)
    [unparsed] = list((root / f"kind={archive.UNPARSED}").glob("*/*.parquet"))
    assert unparsed.stat().st_size > 0


QUERY_VALUES = {"position": "part-0001.jsonl#701", "object": "part-0001.jsonl", "partition": ""}


def _rounded(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows with their floats to 6 places (a sum's last bit depends on the order it is added in)."""
    return [{k: round(v, 6) if isinstance(v, float) else v for k, v in row.items()} for row in rows]


@pytest.mark.parametrize("name", sorted(queries()))
def test_a_duplicate_archived_row_counts_once_in_every_report(world, name):
    """Every query answers the same over the archive with its second copies and unparsed record as over
    the same archive without them (and the same live items): the SQL counts each item once, on DuckDB as
    on Athena, which sees the archive as it is."""
    items = live_items(world.client, TABLE, [*TOPICS, "delta", "epsilon"], archive.SCHEMAS)
    found = query(name)
    values = {**window(SINCE, None), **QUERY_VALUES}
    with History(world.root, items) as doubled, History(world.clean, items) as clean:
        expected = _rounded(clean.run(found, values))
        assert expected, "the query finds something: the comparison means something"
        assert _rounded(doubled.run(found, values)) == expected
    if name == "prove":
        assert [r["seq"] for r in expected] == [1, 2]  # seq 1 is archived twice, its run record too


def test_the_engine_builds_only_the_views_of_the_queried_kinds(world):
    with History(world.root, kinds=query("runs").tables) as db:
        assert db.rows("runs")
        with pytest.raises(duckdb.CatalogException):
            db.rows("outputs")
    with pytest.raises(ValueError, match="unparsed"):
        History(world.root, kinds=[archive.UNPARSED])


def archived_rows(root: Path, kind: str) -> list[dict[str, Any]]:
    with History(root) as db:
        return db.rows(kind)


def test_archived_outputs_lists_a_topics_archived_commits(world):
    history, root = world.history, world.root
    rows = archived_outputs(root, "epsilon")
    assert [(r["seq"], r["object"]) for r in rows] == [
        (int(o["sk"].removeprefix("output#")), o["object"]) for o in history.outputs if _archived(o)
    ]
    assert archived_outputs(root, "alpha") == []
    assert archived_outputs(root, "epsilon", BACKFILL) == []  # a backfill's records are its own


# --- the SQL, the template ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(queries()))
def test_each_query_binds_in_duckdb_on_an_empty_history(name):
    found = query(name)
    values = {**window(SINCE, None), "position": "a#1", "object": "b", "partition": ""}
    with History(None) as db:
        assert db.explain(found, values)  # parsed, and bound to the views' columns
        assert db.run(found, values) == []
    assert found.sql.count("?") == len(found.params)  # one value per placeholder, in order


def test_every_query_filters_by_since_and_topic():
    for found in queries().values():
        assert {"since", "since_date", "topic"} <= set(found.params), found.name
        assert "LIKE ? ESCAPE '\\'" in found.sql, found.name
        assert found.tables, found.name


def test_the_templates_generated_analytics_are_current():
    lines: list[str] = []
    assert generator.main(["--check"], out=lines.append) == 0, lines


def test_the_generated_block_declares_tables_workgroup_and_queries(tmp_path):
    resources = yaml.load(generator.render(), Loader=_CfnLoader)
    tables = {
        r["Properties"]["TableInput"]["Name"]: r for r in resources.values() if r["Type"].endswith("Table")
    }
    # every kind of the archive, also the one no query reads (the records it could not parse)
    assert set(tables) == {f"leanops_{kind}" for kind in archive.SCHEMAS}
    assert set(tables) == {
        "leanops_runs",
        "leanops_outputs",
        "leanops_audit",
        "leanops_config",
        "leanops_unparsed",
    }
    unparsed = tables["leanops_unparsed"]["Properties"]["TableInput"]
    assert unparsed["StorageDescriptor"]["Location"] == "!Sub s3://${ArchiveBucket}/archive/kind=unparsed/"
    assert {"Name": "record", "Type": "string"} in unparsed["StorageDescriptor"]["Columns"]
    runs = tables["leanops_runs"]["Properties"]["TableInput"]
    assert runs["Parameters"]["storage.location.template"] == (
        "!Sub s3://${ArchiveBucket}/archive/kind=runs/date=${!date}/"
    )
    assert runs["Parameters"]["projection.date.range"] == "2025-01-01,NOW"
    columns = {c["Name"]: c["Type"] for c in runs["StorageDescriptor"]["Columns"]}
    assert columns["started_at"] == "timestamp" and columns["lag_seconds"] == "double"
    outputs = tables["leanops_outputs"]["Properties"]["TableInput"]["StorageDescriptor"]["Columns"]
    assert {"Name": "source_keys", "Type": "array<string>"} in outputs
    assert {"Name": "superseded_from", "Type": "bigint"} in outputs
    workgroup = resources[generator.WORKGROUP]["Properties"]["WorkGroupConfiguration"]
    assert workgroup["BytesScannedCutoffPerQuery"] == 10 * 1024**3
    assert workgroup["EnforceWorkGroupConfiguration"] is True
    named = {
        r["Properties"]["Name"]: r["Properties"]["QueryString"]
        for r in resources.values()
        if "Query" in r["Type"]
    }
    assert named == {f"leanops-{name}": found.sql for name, found in queries().items()}

    stale = tmp_path / "template.yaml"
    stale.write_text(f"Resources:\n{generator.BEGIN}\n  Old: {{}}\n{generator.END}\n")
    assert generator.main(["--check", "--template", str(stale)], out=lambda _: None) == 1
    assert generator.main(["--template", str(stale)], out=lambda _: None) == 0
    assert generator.main(["--check", "--template", str(stale)], out=lambda _: None) == 0


class _CfnLoader(yaml.SafeLoader):
    """Reads !Sub, !Ref, !Join and !Split as their text (``!Sub text``) or lists."""


def _tagged(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> Any:
    if isinstance(node, yaml.ScalarNode):
        return f"!{suffix} {loader.construct_scalar(node)}"
    return loader.construct_sequence(node)  # type: ignore[arg-type]


_CfnLoader.add_multi_constructor("!", _tagged)


# --- charts -----------------------------------------------------------------------------------------------


def _png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def test_the_lag_chart_has_one_line_per_topic_and_units(answers, tmp_path):
    _history, db = answers
    rows = _ask(db, "lag")
    figure = lag_figure(rows, subtitle="every topic")
    axes = figure.axes[0]
    lines = axes.get_lines()
    assert sorted(str(line.get_label()) for line in lines) == sorted({r["topic"] for r in rows})
    assert len(lines) == 5  # four generated topics and delta (epsilon's runs record no lag)
    assert axes.get_title().startswith("Average lag per topic")
    assert axes.get_xlabel() == "hour (UTC)"
    assert axes.get_ylabel() == "average lag (minutes)"  # lags of minutes to an hour and a half
    alpha = next(line for line in lines if line.get_label() == "alpha")
    assert len(np.asarray(alpha.get_xdata())) == sum(1 for r in rows if r["topic"] == "alpha")
    assert axes.get_legend() is not None
    path = tmp_path / "lag.png"
    save_png(figure, path)
    width, height = _png_size(path)
    assert width >= 800 and height >= 400
    assert path.stat().st_size > 10_000


def test_the_runs_chart_stacks_outcomes_per_day(answers, tmp_path):
    history, db = answers
    rows = _ask(db, "runs")
    figure = runs_figure(rows)
    axes = figure.axes[0]
    days = sorted({r.started.date().isoformat() for r in history.counted()})
    outcomes = {r.record.outcome for r in history.counted()}
    assert len(axes.containers) == len(outcomes)  # one stack layer (bar container) per outcome
    assert all(len(bars) == len(days) for bars in axes.containers)
    tops = [sum(bar.get_height() for bars in axes.containers for bar in [bars[i]]) for i in range(len(days))]
    per_day = Counter(r.started.date().isoformat() for r in history.counted())
    assert tops == [per_day[day] for day in days]
    assert axes.get_ylabel() == "runs" and axes.get_title().startswith("Runs per day by outcome")
    path = tmp_path / "runs.png"
    save_png(figure, path)
    assert _png_size(path)[0] >= 800 and path.stat().st_size > 10_000


def test_short_lags_read_in_seconds():
    rows = [{"topic": "t", "hour": datetime(2025, 3, 3, h), "avg_lag_seconds": 30.0 + h} for h in range(3)]
    assert lag_figure(rows).axes[0].get_ylabel() == "average lag (seconds)"


# --- parameters -------------------------------------------------------------------------------------------


def test_since_takes_durations_and_iso_times():
    now = datetime(2025, 3, 10, 12, 0, tzinfo=UTC)
    assert parse_since("7d", now) == datetime(2025, 3, 3, 12, 0, tzinfo=UTC)
    assert parse_since("24h", now) == datetime(2025, 3, 9, 12, 0, tzinfo=UTC)
    assert parse_since("2025-03-01", now) == datetime(2025, 3, 1, tzinfo=UTC)
    assert parse_since("2025-03-01T02:00:00+02:00", now) == datetime(2025, 3, 1, tzinfo=UTC)
    for bad in ("yesterday", "7 days", "-1d", "2025-13-01", "2025-04-01"):
        with pytest.raises(InvalidInput):
            parse_since(bad, now)


def test_values_as_athena_takes_them():
    assert [athena_literal(v) for v in ("it's", None, 3)] == ["'it''s'", "NULL", "3"]
    assert topic_pattern("a_b%c") == "a\\_b\\%c" and topic_pattern(None) == "%"
    assert window(datetime(2025, 3, 3, 4, 5, 6, 789_000, tzinfo=UTC), "t") == {
        "since": "2025-03-03 04:05:06.789",
        "since_date": "2025-03-03",
        "runs_since_date": "2025-03-02",
        "topic": "t",
    }


# --- Athena -----------------------------------------------------------------------------------------------


def _athena_stack(client: Any, workgroup: str = "stack-analytics") -> dict[str, str]:
    """A stack's Athena as the template makes it: a workgroup, a named query per file; its outputs."""
    client.create_work_group(Name=workgroup)
    outputs = {OUTPUT_DATABASE: "stack", OUTPUT_WORKGROUP: workgroup}
    for name, found in queries().items():
        created = client.create_named_query(
            Name=f"leanops-{name}", Database="stack", QueryString=found.sql, WorkGroup=workgroup
        )
        outputs[named_query_output(name)] = created["NamedQueryId"]
    return outputs


def test_athena_runs_the_named_query_with_its_parameters(world):
    client = boto3.client("athena", region_name="us-east-1")
    outputs = _athena_stack(client)
    columns = [
        {"Name": n, "Type": t} for n, t in (("topic", "varchar"), ("hour", "timestamp"), ("runs", "bigint"))
    ]
    columns.append({"Name": "avg_lag_seconds", "Type": "double"})
    header = {"Data": [{"VarCharValue": c["Name"]} for c in columns]}
    row = {"Data": [{"VarCharValue": v} for v in ("alpha", "2025-03-03 04:00:00.000", "12", "61.5")]}
    athena_backends["123456789012"]["us-east-1"].query_results_queue.append(
        QueryResults([header, row], columns)
    )
    polls: list[float] = []
    athena = dataclasses.replace(AthenaQueries.from_outputs(client, outputs, "stack"), sleep=polls.append)
    rows = athena.run("lag", window(SINCE, "alpha"))
    assert rows == [{"topic": "alpha", "hour": datetime(2025, 3, 3, 4), "runs": 12, "avg_lag_seconds": 61.5}]
    [execution_id] = client.list_query_executions(WorkGroup="stack-analytics")["QueryExecutionIds"]
    execution = client.get_query_execution(QueryExecutionId=execution_id)["QueryExecution"]
    assert execution["Query"] == query("lag").sql
    assert execution["QueryExecutionContext"]["Database"] == "stack"
    assert execution["WorkGroup"] == "stack-analytics"
    assert execution["ExecutionParameters"] == ["'2025-03-02 00:00:00.000'", "'2025-03-02'", "'alpha'"]


def test_athena_needs_the_stacks_analytics_outputs(world):
    client = boto3.client("athena", region_name="us-east-1")
    with pytest.raises(Exception, match="GlueDatabaseName"):
        AthenaQueries.from_outputs(client, {}, "stack s")


# --- the command ------------------------------------------------------------------------------------------


@pytest.fixture
def cli(world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    """`leanops report` on the generated history: the local target is the moto state table, the archive
    the project home's."""
    monkeypatch.setenv(ENV_HOME, str(world.home))
    topics = tmp_path / "topics.yaml"
    names = [*TOPICS, "delta", "epsilon"]
    entries = {
        name: {
            "source": {"type": "files", "uri": f"./in/{name}"},
            "sink": {"type": "files", "uri": f"./out/{name}"},
        }
        for name in names
    }
    topics.write_text(yaml.safe_dump({"topics": entries}))
    record = StackRecord(0, "http://127.0.0.1:9", "http://127.0.0.1:9", TABLE, str(topics), "", "")
    target = Target(
        description="the test stack",
        session=boto3.session.Session(region_name="us-east-1"),
        table=TABLE,
        state_machine_arn="arn:aws:states:us-east-1:123456789012:stateMachine:TopicRun",
        topics=load_topics(str(topics)),
        local=record,
    )
    monkeypatch.setattr("leanopsctl.cli.common.local_target", lambda config: target)
    monkeypatch.setattr("leanopsctl.cli.common._route_local_clients", lambda target: None)

    def leanops(*args: str) -> Any:
        return CliRunner().invoke(main, ["report", *args, "--config", str(topics)])

    return world.history, leanops


def test_report_runs_json_answers_from_archive_and_table(cli):
    history, leanops = cli
    result = leanops("runs", "--since", SINCE.date().isoformat(), "--json")
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert document["report"] == "runs" and document["since"] == "2025-03-02T00:00:00.000Z"
    assert sum(r["runs"] for r in document["runs"]) == len(history.counted())


def test_report_lag_png_draws_the_chart(cli, tmp_path):
    _history, leanops = cli
    path = tmp_path / "lag.png"
    result = leanops("lag", "--since", "2025-03-02", "--png", str(path))
    assert result.exit_code == 0, result.output
    assert "Lag per topic per hour" in result.stdout
    assert _png_size(path)[0] >= 800 and path.stat().st_size > 10_000


def test_report_failures_and_prove_print_tables(cli):
    _history, leanops = cli
    failures = leanops("failures", "--since", "2025-03-02", "--topic", "delta")
    assert failures.exit_code == 0, failures.output
    for text in ("ProcessorError", "30m 15s", "15m 5s", "not yet"):  # delta-2, delta-3, delta-6
        assert text in failures.stdout
    prove = leanops("prove", "--since", "2025-03-02", "--position", "part-0001.jsonl#701", "--json")
    assert prove.exit_code == 0, prove.output
    assert [r["seq"] for r in json.loads(prove.stdout)["prove"]] == [2]


def test_report_with_stack_runs_athenas_named_query(cli, world, monkeypatch):
    _history, leanops = cli
    client = boto3.client("athena", region_name="us-east-1")
    outputs = _athena_stack(client, workgroup="cli-analytics")

    def stack_target(config: str, stack: str, **_: Any) -> Target:
        return Target(
            description=f"stack {stack} (us-east-1)",
            session=boto3.session.Session(region_name="us-east-1"),
            table=TABLE,
            state_machine_arn="arn:aws:states:us-east-1:123456789012:stateMachine:TopicRun",
            topics=load_topics(config),
            outputs=outputs,
        )

    monkeypatch.setattr("leanopsctl.cli.common.stack_target", stack_target)
    monkeypatch.setattr("leanopsctl.analytics.athena.POLL_SECONDS", 0.0)  # moto's query is done at once
    result = leanops("runs", "--stack", "s", "--topic", "beta", "--json")
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert document["where"] == "Athena, stack s (us-east-1)" and document["runs"] == []
    [execution_id] = client.list_query_executions(WorkGroup="cli-analytics")["QueryExecutionIds"]
    execution = client.get_query_execution(QueryExecutionId=execution_id)["QueryExecution"]
    assert execution["Query"] == query("runs").sql
    assert execution["ExecutionParameters"][2] == "'beta'"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("lag", "--since", "last week"), "invalid --since 'last week'"),
        (("prove",), "give --position or --object"),
        (("runs", "--topic", "nosuch"), "unknown topic 'nosuch'"),
        (("runs", "--topic", "a/b"), "invalid topic name 'a/b'"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(cli, args, message):
    _history, leanops = cli
    result = leanops(*args)
    assert result.exit_code == 2
    assert result.stderr.count("\n") == 1 and message in result.stderr, result.stderr


def test_an_empty_history_is_one_clear_line(cli):
    _history, leanops = cli
    result = leanops("lag", "--since", "1h")
    assert result.exit_code == 0, result.output
    assert result.stdout == ""
    assert "no runs with a lag of any topic since" in result.stderr
