"""A Parquet topic end to end through the tasks: every field of every record, stable types across batches
(kept in the topic's state, changed only by a commit), and a reason for each record that cannot be written.
Read back as users read it: pyarrow and DuckDB."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from decimal import Decimal

import duckdb
import pyarrow.dataset as ds
import pytest

from leanops import tasks
from leanops.config import parse_topics
from leanops.protocol import Protocol, TopicRef
from leanops.protocol.memory import InMemoryStore
from tests.support.clock import FakeClock

T = TopicRef("t")
#: Records in arrival order: fields come and go, an int column later carries a float, one value conflicts.
RECORDS = [
    {"id": 1, "speed": 10},
    {"id": 2, "speed": 11, "note": "keep me"},
    {"id": 3, "speed": 12.5, "tags": ["a", "b"]},
    {"id": 4, "speed": "N/A"},
    {"id": 5, "nested": {"x": 1}, "amount": "12.34", "at": "2026-11-25T10:00:00Z"},
    {"id": 6, "speed": None, "amount": "7"},
]


def make_world(tmp_path, records, *, schema=None, on_malformed="quarantine", batch_size=2):
    source = tmp_path / "in"
    source.mkdir()
    (source / "part-0.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    topic = {
        "source": {"type": "files", "uri": str(source)},
        "sink": {"type": "files", "uri": str(tmp_path / "out"), "format": "parquet"},
        "batch_size": batch_size,
        "on_malformed": on_malformed,
        **({"schema": schema} if schema else {}),
    }
    return {
        "topics": parse_topics({"topics": {"t": topic}}, tmp_path / "topics.yaml"),
        "protocol": Protocol(InMemoryStore(), clock=FakeClock()),
        "out": tmp_path / "out",
    }


def run(world, execution="exec-1") -> dict:
    event = {"input": {"topic": "t"}, "execution": execution, "execution_name": execution}
    state = tasks.acquire(event, world["protocol"], world["topics"]).to_json()
    while state["outcome"] == "acquired" and not state["released"]:
        batch = tasks.process(
            tasks.RunState.from_json(state), world["protocol"], world["topics"], lambda: 60_000
        )
        state = tasks.advance(
            tasks.RunState.from_json(state), batch.to_json(), world["protocol"], world["topics"]
        ).to_json()
    return state


def committed(world, field: str = "object") -> list[str]:
    return [str(world["out"] / r.data[field]) for r in world["protocol"].outputs(T) if r.data.get(field)]


def lines(path: str) -> list[dict]:
    with open(path) as stream:
        return [json.loads(line) for line in stream]


def test_every_field_of_every_record_round_trips_and_a_conflict_is_quarantined_with_its_reason(tmp_path):
    world = make_world(tmp_path, RECORDS)
    # WHEN the topic runs (three batches of two records)
    assert run(world)["outcome"] == "processed"
    files = committed(world)
    assert len(files) == 3
    # THEN DuckDB reads every accepted record with every field it had, in one table
    rows = duckdb.sql(
        'SELECT id, speed, note, tags, nested, amount, "at" '
        f"FROM read_parquet({files!r}, union_by_name=true) ORDER BY id"
    ).fetchall()
    assert [row[0] for row in rows] == [1, 2, 3, 5, 6]
    by_id = {row[0]: row for row in rows}
    assert by_id[2][2] == "keep me" and json.loads(by_id[3][3]) == ["a", "b"]
    assert by_id[1][1] == 10.0 and by_id[3][1] == 12.5  # speed widened to double; ints stay exact
    assert (
        json.loads(by_id[5][4]) == {"x": 1}
        and by_id[5][5] == "12.34"
        and by_id[5][6] == "2026-11-25T10:00:00Z"
    )
    assert by_id[6][1] is None and by_id[6][5] == "7" and by_id[6][6] is None
    # AND the record whose speed conflicts is in the quarantine, with the column and the reason
    [quarantine] = committed(world, "quarantine")
    [line] = lines(quarantine)
    assert line["raw"] == {"id": 4, "speed": "N/A"} and (line["source_key"], line["line"]) == (
        "part-0.jsonl",
        4,
    )
    assert "column 'speed'" in line["reason"] and "'N/A'" in line["reason"]


def test_types_stay_stable_across_batches_and_files_share_one_schema_with_pyarrow(tmp_path):
    # GIVEN a first batch that establishes the columns, and a later one whose first record lacks a field
    world = make_world(tmp_path, [{"id": 1, "note": "a"}, {"id": 2}, {"id": 3}, {"id": 4, "note": "d"}])
    assert run(world)["outcome"] == "processed"
    files = committed(world)
    # THEN every file carries the topic's columns with the same types, whatever its first record lacked
    schemas = {tuple((f.name, str(f.type)) for f in ds.dataset(path).schema) for path in files}
    assert schemas == {(("id", "int64"), ("note", "string"))}
    table = ds.dataset(files).to_table().to_pylist()
    assert sorted(table, key=lambda r: r["id"]) == [
        {"id": 1, "note": "a"},
        {"id": 2, "note": None},
        {"id": 3, "note": None},
        {"id": 4, "note": "d"},
    ]
    # AND the state keeps the schema the commits wrote
    kept = world["protocol"].read_schema(T)
    assert [(c["name"], c["type"]) for c in kept["columns"]] == [("id", "int64"), ("note", "string")]


def test_a_declared_schema_converts_decimals_and_timestamps_exactly(tmp_path):
    records = [
        {"id": 1, "amount": "12.34", "at": "2026-11-25T10:00:00Z"},
        {"id": 2, "amount": 7, "at": 1764064800},
        {"id": 3, "amount": "12.345", "at": "2026-11-25T12:00:00+02:00"},  # would round: quarantined
    ]
    world = make_world(
        tmp_path, records, schema={"amount": "decimal(12,2)", "at": "timestamp"}, batch_size=10
    )
    assert run(world)["outcome"] == "processed"
    table = ds.dataset(committed(world)).to_table()
    assert str(table.schema.field("amount").type) == "decimal128(12, 2)"
    rows = sorted(table.to_pylist(), key=lambda r: r["id"])
    assert [r["amount"] for r in rows] == [Decimal("12.34"), Decimal("7.00")]
    assert [r["at"] for r in rows] == [
        datetime(2026, 11, 25, 10, tzinfo=UTC),
        datetime(2025, 11, 25, 10, tzinfo=UTC),
    ]
    [quarantine] = committed(world, "quarantine")
    assert "would round" in lines(quarantine)[0]["reason"]


def test_on_malformed_fail_names_the_key_the_line_and_the_column(tmp_path):
    world = make_world(tmp_path, [{"id": 1}, {"id": "one"}], on_malformed="fail", batch_size=10)
    with pytest.raises(
        Exception, match=r"source_key=part-0.jsonl line=2: cannot be written: column 'id'"
    ) as caught:
        run(world)
    assert type(caught.value).__name__ == "MalformedInput"
    assert world["protocol"].read_checkpoint(T).position is None


def test_json_lines_write_dates_as_iso_8601_and_refuse_nan(tmp_path):
    source = tmp_path / "in"
    source.mkdir()
    (source / "part-0.jsonl").write_text('{"i": 1}\n{"i": 2}\n')

    def processor(records, ctx):
        return [{"i": 1, "at": datetime(2026, 11, 25, 10, tzinfo=UTC)}, {"i": 2, "x": math.nan}]

    topic = {
        "source": {"type": "files", "uri": str(source)},
        "sink": {"type": "files", "uri": str(tmp_path / "out")},
        "isolation": "none",  # the processor is a closure: in this process
    }
    world = {
        "topics": parse_topics({"topics": {"t": topic}}, tmp_path / "topics.yaml"),
        "protocol": Protocol(InMemoryStore(), clock=FakeClock()),
        "out": tmp_path / "out",
    }
    original = tasks.load_processor
    tasks.load_processor = lambda spec, folder: processor
    try:
        assert run(world)["outcome"] == "processed"
    finally:
        tasks.load_processor = original
    [written] = committed(world)
    assert lines(written) == [{"i": 1, "at": "2026-11-25T10:00:00+00:00"}]
    [quarantine] = committed(world, "quarantine")
    assert "column 'x': NaN is not valid JSON" in lines(quarantine)[0]["reason"]
