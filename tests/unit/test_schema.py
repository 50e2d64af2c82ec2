"""leanops.schema: no dropped field, stable types, rejects with their column and reason."""

from __future__ import annotations

import io
import json
import math
import subprocess
import sys
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from leanops.errors import ConfigError
from leanops.schema import (
    Column,
    Conformed,
    Rejected,
    Schema,
    UnwritableValue,
    arrow_schema,
    conform,
    encode_json_line,
    merge_declared,
    parse_declared,
    write_parquet,
)

WHERE = "topics.yaml: topic 'telemetry': schema"
Records = list[dict[str, Any]]


def declared(**types: str) -> Schema:
    return parse_declared(types, WHERE)


def write(path: Path, conformed: Conformed, compression: str = "snappy") -> Path:
    with path.open("wb") as out:
        write_parquet(out, conformed.rows, conformed.schema, compression)
    return path


def duck(sql: str, *params: object) -> list[tuple[Any, ...]]:
    with duckdb.connect() as con:
        return con.execute(sql, list(params)).fetchall()


def types_of(schema: Schema) -> dict[str, str]:
    return {c.name: c.type for c in schema.columns}


# ------------------------------------------------------------------------------------- never drop a field


def test_a_field_missing_from_the_first_record_is_kept(tmp_path: Path) -> None:
    # GIVEN a first record without `note` and a second one with it
    records: Records = [{"id": 1}, {"id": 2, "note": "keep me"}]
    # WHEN they are conformed to an empty schema and written as Parquet
    conformed = conform(records, Schema())
    path = write(tmp_path / "a.parquet", conformed)
    # THEN the schema has both columns, and both records are read back with both fields
    assert conformed.rejected == []
    assert conformed.schema.names == ("id", "note")
    assert pq.read_table(path).to_pylist() == [{"id": 1, "note": None}, {"id": 2, "note": "keep me"}]
    assert duck("SELECT id, note FROM read_parquet(?) ORDER BY id", str(path)) == [(1, None), (2, "keep me")]


def test_every_row_holds_every_column_of_the_schema() -> None:
    # GIVEN records with different fields, one of them null only
    records: Records = [{"a": 1}, {"b": "x"}, {"c": None, "a": 2}]
    # WHEN conformed
    conformed = conform(records, Schema())
    # THEN each row has every column (missing: None), in the order of first appearance
    assert conformed.schema.names == ("a", "b", "c")
    assert conformed.rows == [
        {"a": 1, "b": None, "c": None},
        {"a": None, "b": "x", "c": None},
        {"a": 2, "b": None, "c": None},
    ]
    assert types_of(conformed.schema) == {"a": "int64", "b": "string", "c": "null"}


def test_an_all_null_column_is_written_as_null_type_and_takes_a_later_type_in_duckdb(tmp_path: Path) -> None:
    # GIVEN a first batch where `x` is only ever null, then a second where it holds ints
    first = conform([{"id": 1, "x": None}], Schema())
    second = conform([{"id": 2, "x": 2**40}], first.schema)
    # WHEN both are written
    a = write(tmp_path / "a.parquet", first)
    b = write(tmp_path / "b.parquet", second)
    # THEN the first file's column has the null type, the schema widened null -> int64 (version + 1)
    assert pq.read_schema(a).field("x").type == pa.null()
    assert types_of(second.schema)["x"] == "int64"
    assert second.schema.version == first.schema.version + 1
    # AND DuckDB reading both by name sees one BIGINT column
    rows = duck(
        "SELECT id, x, typeof(x) FROM read_parquet(?, union_by_name=true) ORDER BY id", [str(a), str(b)]
    )
    assert rows == [(1, None, "BIGINT"), (2, 2**40, "BIGINT")]


# ------------------------------------------------------------------------------------------- stable types


def test_int64_widens_to_double_when_a_float_arrives_and_ints_stay_exact(tmp_path: Path) -> None:
    # GIVEN a column kept as int64, and a batch with an exact-in-double int then a float
    kept = conform([{"speed": 1}], Schema()).schema
    records: Records = [{"speed": 2**53}, {"speed": 1.5}, {"speed": 3}]
    # WHEN conformed and written
    conformed = conform(records, kept)
    path = write(tmp_path / "a.parquet", conformed)
    # THEN the column is double, the version grew by one, and every value is exact
    assert conformed.rejected == []
    assert types_of(conformed.schema) == {"speed": "double"}
    assert conformed.schema.version == kept.version + 1
    assert [type(r["speed"]) for r in conformed.rows] == [float, float, float]
    assert pq.read_table(path).column("speed").to_pylist() == [float(2**53), 1.5, 3.0]
    assert int(pq.read_table(path).column("speed")[0].as_py()) == 2**53


def test_an_int_not_exact_in_a_double_column_is_rejected() -> None:
    # GIVEN a double column
    kept = conform([{"v": 0.5}], Schema()).schema
    # WHEN ints at and beyond 2**53 arrive
    conformed = conform([{"v": 2**53}, {"v": 2**53 + 1}], kept)
    # THEN the exact one is written, the other rejected with the column and why
    assert conformed.rows == [{"v": float(2**53)}]
    assert conformed.rejected == [
        Rejected(1, "v", "column 'v': int 9007199254740993 is not exact in a double column (|value| > 2**53)")
    ]


def test_widening_to_double_is_refused_when_the_batch_holds_an_int_not_exact_in_a_double() -> None:
    # GIVEN a batch whose int64 column holds 2**60, then meets a float
    records: Records = [{"v": 2**60}, {"v": 0.5}]
    # WHEN conformed
    conformed = conform(records, Schema())
    # THEN the float's record is rejected (the int stays exact), and the column stays int64
    assert conformed.rows == [{"v": 2**60}]
    assert types_of(conformed.schema) == {"v": "int64"}
    assert [r.index for r in conformed.rejected] == [1]
    assert "cannot widen to double" in conformed.rejected[0].reason


def test_a_string_among_numbers_is_rejected_with_column_and_reason_and_the_others_are_written(
    tmp_path: Path,
) -> None:
    # GIVEN numbers with one "N/A"
    records: Records = [{"id": 1, "speed": 10}, {"id": 2, "speed": "N/A"}, {"id": 3, "speed": 12}]
    # WHEN conformed and written
    conformed = conform(records, Schema())
    path = write(tmp_path / "a.parquet", conformed)
    # THEN only that record is rejected, naming the column, the expected type and the value
    assert conformed.rejected == [Rejected(1, "speed", "column 'speed': expected int64, got str 'N/A'")]
    assert duck("SELECT id, speed FROM read_parquet(?) ORDER BY id", str(path)) == [(1, 10), (3, 12)]
    assert types_of(conformed.schema) == {"id": "int64", "speed": "int64"}


@pytest.mark.parametrize(
    ("first", "then", "reason"),
    [
        (1, True, "column 'c': expected int64, got bool True"),
        (1.5, True, "column 'c': expected double, got bool True"),
        ("a", 5, "column 'c': expected string, got int 5"),
        ("a", 1.5, "column 'c': expected string, got float 1.5"),
        (True, 1, "column 'c': expected boolean, got int 1"),
        ({"a": 1}, "x", "column 'c': expected json, got str 'x'"),
        (date(2024, 1, 1), datetime(2024, 1, 1), "column 'c': expected date, got datetime"),
        (1.5, "2.5", "column 'c': expected double, got str '2.5'"),
    ],
)
def test_no_widening_but_int64_to_double(first: object, then: object, reason: str) -> None:
    # GIVEN a column typed by its first value
    kept = conform([{"c": first}], Schema()).schema
    # WHEN a value of another type arrives
    conformed = conform([{"c": then}], kept)
    # THEN the record is rejected, naming the column and both types, and the schema is unchanged
    assert conformed.rows == []
    assert len(conformed.rejected) == 1
    assert conformed.rejected[0].reason.startswith(reason)
    assert conformed.schema is kept


def test_an_int_beyond_the_int64_range_is_rejected() -> None:
    # GIVEN ints at the int64 bounds and beyond them
    records: Records = [{"n": 2**63 - 1}, {"n": 2**63}, {"n": -(2**63)}, {"n": -(2**63) - 1}]
    # WHEN conformed
    conformed = conform(records, Schema())
    # THEN the bounds are kept, the others rejected with the range in the reason
    assert [r["n"] for r in conformed.rows] == [2**63 - 1, -(2**63)]
    assert [(r.index, r.column) for r in conformed.rejected] == [(1, "n"), (3, "n")]
    assert all("outside the int64 range" in r.reason for r in conformed.rejected)


def test_an_int_beyond_the_int64_range_as_first_value_adds_no_column() -> None:
    # GIVEN a new field whose first value is beyond int64, then a valid one
    records: Records = [{"id": 1, "big": 10**30}, {"id": 2}]
    # WHEN conformed
    conformed = conform(records, Schema())
    # THEN that record is rejected and its field is not in the schema
    assert conformed.schema.names == ("id",)
    assert [r.index for r in conformed.rejected] == [0]


def test_nan_and_infinities_are_valid_in_a_double_column(tmp_path: Path) -> None:
    # GIVEN NaN and infinities
    records: Records = [{"x": math.nan}, {"x": math.inf}, {"x": -math.inf}]
    # WHEN conformed and written
    conformed = conform(records, Schema())
    values = pq.read_table(write(tmp_path / "a.parquet", conformed)).column("x").to_pylist()
    # THEN they are all written
    assert conformed.rejected == []
    assert math.isnan(values[0]) and values[1:] == [math.inf, -math.inf]


def test_a_decimal_is_written_as_its_exact_text_unless_declared() -> None:
    # GIVEN an undeclared field holding Decimals
    records: Records = [{"price": Decimal("12.30")}, {"price": Decimal("1E+2")}, {"price": "text"}]
    # WHEN conformed
    conformed = conform(records, Schema())
    # THEN the column is a string with each Decimal's exact text
    assert types_of(conformed.schema) == {"price": "string"}
    assert [r["price"] for r in conformed.rows] == ["12.30", "1E+2", "text"]


def test_a_value_of_an_unsupported_type_is_rejected() -> None:
    # GIVEN a record holding bytes
    conformed = conform([{"id": 1, "blob": b"\x00"}], Schema())
    # WHEN / THEN it is rejected, naming the type, and adds no column
    assert conformed.rejected == [
        Rejected(0, "blob", "column 'blob': a value of type bytes cannot be written (b'\\x00')")
    ]
    assert conformed.schema.names == ()


def test_a_string_with_a_lone_surrogate_is_rejected() -> None:
    # GIVEN a string json.loads makes from "\ud800" (it cannot be encoded as UTF-8)
    records: Records = [{"s": "ok é"}, json.loads('{"s": "bad \\ud800"}')]
    # WHEN conformed
    conformed = conform(records, Schema())
    # THEN the record is rejected, the other kept
    assert conformed.rows == [{"s": "ok é"}]
    assert [r.index for r in conformed.rejected] == [1]
    assert "lone surrogate" in conformed.rejected[0].reason


def test_long_values_are_cut_in_reasons() -> None:
    # GIVEN an int64 column and a very long string
    kept = conform([{"n": 1}], Schema()).schema
    # WHEN it arrives
    reason = conform([{"n": "x" * 10_000}], kept).rejected[0].reason
    # THEN the reason shows about 80 characters of it
    assert reason.startswith("column 'n': expected int64, got str 'xxx")
    assert reason.endswith("...")
    assert len(reason) < 130


# -------------------------------------------------------------------------------- rejection is per record


def test_a_rejected_records_new_field_and_widening_do_not_reach_the_schema() -> None:
    # GIVEN an int64 column, then a record with a new field, a float (widening) and a conflict
    kept = conform([{"x": 1, "s": "a"}], Schema()).schema
    records: Records = [{"x": 1.5, "extra": "new", "s": 5}, {"x": 2, "s": "b"}]
    # WHEN conformed
    conformed = conform(records, kept)
    # THEN the record is rejected, the schema is unchanged (same object, same version), the other written
    assert conformed.rejected == [Rejected(0, "s", "column 's': expected string, got int 5")]
    assert conformed.schema is kept
    assert conformed.rows == [{"x": 2, "s": "b"}]


def test_column_order_is_stable_across_batches() -> None:
    # GIVEN a first batch, and a second with fields in another order and a new one in the middle
    first = conform([{"b": 1, "a": "x"}], Schema())
    second = conform([{"c": True, "a": "y", "new": 1.5, "b": 2}], first.schema)
    # WHEN / THEN existing columns keep their order and new ones are appended
    assert first.schema.names == ("b", "a")
    assert second.schema.names == ("b", "a", "c", "new")
    assert second.schema.version == first.schema.version + 1
    assert arrow_schema(second.schema).names == ["b", "a", "c", "new"]


def test_without_a_change_the_schema_is_returned_as_is() -> None:
    # GIVEN a kept schema
    kept = conform([{"a": 1, "b": None}], Schema()).schema
    # WHEN a batch fits it (nulls included)
    conformed = conform([{"a": 2, "b": None}, {"a": None}], kept)
    # THEN the same schema object comes back
    assert conformed.schema is kept
    assert conformed.rows == [{"a": 2, "b": None}, {"a": None, "b": None}]


def test_a_record_that_is_not_an_object_or_has_a_bad_field_name_is_rejected() -> None:
    # GIVEN a list, an int field name and an empty field name among records
    records: list[Any] = [["x"], {1: "a"}, {"": 1}, {"ok": 1}]
    # WHEN conformed
    conformed = conform(records, Schema())
    # THEN only the last one is written
    assert [r.index for r in conformed.rejected] == [0, 1, 2]
    assert conformed.rows == [{"ok": 1}]


# ------------------------------------------------------------------------------------------ declared types


@pytest.mark.parametrize("value", ["12.34", 12.34, Decimal("12.34"), Decimal("12.340"), " 12.34"])
def test_declared_decimal_accepts_exact_values(value: object, tmp_path: Path) -> None:
    # GIVEN a declared decimal(12,2)
    schema = declared(amount="decimal(12,2)")
    # WHEN a value that is exactly 12.34 is conformed and written
    conformed = conform([{"amount": value}], schema)
    path = write(tmp_path / "a.parquet", conformed)
    # THEN it is the decimal 12.34
    assert conformed.rejected == []
    assert pq.read_schema(path).field("amount").type == pa.decimal128(12, 2)
    assert duck("SELECT amount, typeof(amount) FROM read_parquet(?)", str(path)) == [
        (Decimal("12.34"), "DECIMAL(12,2)")
    ]


@pytest.mark.parametrize(
    ("value", "text"), [(7, "7.00"), (Decimal("-0.5"), "-0.50"), ("9999999999.99", "9999999999.99")]
)
def test_declared_decimal_pads_to_its_scale(value: object, text: str) -> None:
    # GIVEN a declared decimal(12,2) WHEN an exact value is conformed
    row = conform([{"amount": value}], declared(amount="decimal(12,2)")).rows[0]
    # THEN it holds the value at scale 2
    assert str(row["amount"]) == text


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("12.345", "would round to 2 decimal places"),
        (12.345, "would round to 2 decimal places"),
        (10**12, "more than 10 digits before the point"),
        ("1234567890123.5", "more than 10 digits before the point"),
        (Decimal("NaN"), "is not a finite number"),
        (math.inf, "is not a finite number"),
        ("12,34", "not a number"),
        (True, "expected decimal(12,2), got bool True"),
    ],
)
def test_declared_decimal_rejects_what_would_round_or_not_fit(value: object, reason: str) -> None:
    # GIVEN a declared decimal(12,2)
    schema = declared(amount="decimal(12,2)")
    # WHEN a value that is not exact at 2 places, or has 13 integer digits, is conformed
    conformed = conform([{"amount": value}, {"amount": "1.5"}], schema)
    # THEN it is rejected with the column and why, and the other is written
    assert [(r.index, r.column) for r in conformed.rejected] == [(0, "amount")]
    assert reason in conformed.rejected[0].reason
    assert conformed.rows == [{"amount": Decimal("1.50")}]


@pytest.mark.parametrize(
    "value",
    [
        "2024-05-01T10:00:00Z",
        "2024-05-01T12:00:00+02:00",
        "2024-05-01T10:00:00",
        "2024-05-01 10:00:00.000000",
        1714557600,
        1714557600.0,
        datetime(2024, 5, 1, 10, 0),
        datetime(2024, 5, 1, 5, 0, tzinfo=timezone(timedelta(hours=-5))),
    ],
)
def test_declared_timestamp_accepts_iso_strings_epoch_seconds_and_datetimes(
    value: object, tmp_path: Path
) -> None:
    # GIVEN a declared timestamp
    schema = declared(ts="timestamp")
    # WHEN a value naming 2024-05-01 10:00 UTC is conformed and written
    conformed = conform([{"ts": value}], schema)
    path = write(tmp_path / "a.parquet", conformed)
    # THEN it is that instant, in UTC, with microsecond precision
    expected = datetime(2024, 5, 1, 10, 0, tzinfo=UTC)
    assert conformed.rows == [{"ts": expected}]
    assert pq.read_schema(path).field("ts").type == pa.timestamp("us", tz="UTC")
    assert pq.read_table(path).column("ts").to_pylist() == [expected]
    assert duck("SELECT epoch_us(ts) FROM read_parquet(?)", str(path)) == [(1714557600 * 10**6,)]


@pytest.mark.parametrize(
    "value", ["yesterday", "2024-13-01T00:00:00Z", "2024-W01-1", 10**20, True, date(2024, 5, 1), math.nan]
)
def test_declared_timestamp_rejects_what_is_not_an_instant(value: object) -> None:
    # GIVEN a declared timestamp WHEN a value that is no instant is conformed
    conformed = conform([{"ts": value}], declared(ts="timestamp"))
    # THEN it is rejected, naming the column
    assert [(r.index, r.column) for r in conformed.rejected] == [(0, "ts")]
    assert conformed.rejected[0].reason.startswith("column 'ts': ")


def test_an_undeclared_timestamp_column_holds_utc_instants(tmp_path: Path) -> None:
    # GIVEN naive (UTC) and aware datetimes in an undeclared field, then an ISO string
    records: Records = [
        {"t": datetime(2024, 5, 1, 10, 0)},
        {"t": datetime(2024, 5, 1, 12, 0, tzinfo=timezone(timedelta(hours=2)))},
        {"t": "2024-05-01T10:00:00Z"},
    ]
    # WHEN conformed and written
    conformed = conform(records, Schema())
    values = pq.read_table(write(tmp_path / "a.parquet", conformed)).column("t").to_pylist()
    # THEN both datetimes are the same UTC instant; the string conflicts (only declared columns parse)
    assert values == [datetime(2024, 5, 1, 10, 0, tzinfo=UTC)] * 2
    assert [r.index for r in conformed.rejected] == [2]


def test_declared_date_accepts_dates_and_iso_dates_only(tmp_path: Path) -> None:
    # GIVEN a declared date
    records: Records = [
        {"d": date(2024, 2, 29)},
        {"d": "2024-03-01"},
        {"d": "2024-02-30"},
        {"d": datetime(2024, 1, 1)},
    ]
    # WHEN conformed and written
    conformed = conform(records, declared(d="date"))
    path = write(tmp_path / "a.parquet", conformed)
    # THEN dates and YYYY-MM-DD are written as date32, the rest rejected
    assert pq.read_schema(path).field("d").type == pa.date32()
    assert duck("SELECT d FROM read_parquet(?)", str(path)) == [(date(2024, 2, 29),), (date(2024, 3, 1),)]
    assert [r.index for r in conformed.rejected] == [2, 3]


def test_declared_columns_never_widen() -> None:
    # GIVEN declared int64 and string columns
    schema = declared(n="int64", s="string", x="double")
    # WHEN a float, a number and a bool arrive
    conformed = conform([{"n": 1.5}, {"s": 5}, {"x": True}, {"n": 1, "s": "a", "x": 2}], schema)
    # THEN they are rejected, the int to double is converted, and the schema is unchanged
    assert [(r.index, r.column) for r in conformed.rejected] == [(0, "n"), (1, "s"), (2, "x")]
    assert conformed.rows == [{"n": 1, "s": "a", "x": 2.0}]
    assert conformed.schema is schema


def test_declared_json_holds_any_value_as_json_text() -> None:
    # GIVEN a declared json column
    records: Records = [
        {"j": "text"},
        {"j": 1.5},
        {"j": {"at": datetime(2024, 1, 1), "n": Decimal("1.10")}},
        {"j": [math.nan]},
    ]
    # WHEN conformed
    conformed = conform(records, declared(j="json"))
    # THEN scalars and objects are JSON text, and NaN is rejected
    assert [r["j"] for r in conformed.rows] == ['"text"', "1.5", '{"at":"2024-01-01T00:00:00","n":1.10}']
    assert conformed.rejected == [Rejected(3, "j", "column 'j': NaN is not valid JSON (at j[0])")]


def test_nested_values_are_a_json_column_readable_with_duckdb_json_functions(tmp_path: Path) -> None:
    # GIVEN records with a nested object and a list
    records: Records = [
        {"id": 1, "meta": {"driver": {"name": "Ana"}, "tags": ["a", "b"]}, "stops": [1, 2, 3]},
        {"id": 2, "meta": {"driver": {"name": "Bo"}}, "stops": []},
    ]
    # WHEN conformed and written
    conformed = conform(records, Schema())
    path = write(tmp_path / "a.parquet", conformed)
    # THEN both are json columns (compact text) that DuckDB's json functions read
    assert types_of(conformed.schema) == {"id": "int64", "meta": "json", "stops": "json"}
    assert conformed.rows[0]["stops"] == "[1,2,3]"
    rows = duck(
        "SELECT id, json_extract_string(meta, '$.driver.name'), json_array_length(stops) "
        "FROM read_parquet(?) ORDER BY id",
        str(path),
    )
    assert rows == [(1, "Ana", 3), (2, "Bo", 0)]


# ------------------------------------------------------------------------------------------------ Parquet


@pytest.mark.parametrize("compression", ["snappy", "zstd", "gzip", "none"])
def test_write_parquet_writes_exactly_the_schema_even_without_rows(compression: str, tmp_path: Path) -> None:
    # GIVEN a schema of every type, and no rows
    schema = Schema(
        (
            Column("b", "boolean"),
            Column("i", "int64"),
            Column("f", "double"),
            Column("s", "string"),
            Column("t", "timestamp"),
            Column("d", "date"),
            Column("m", "decimal(38,10)", declared=True),
            Column("j", "json"),
            Column("z", "null"),
        ),
        version=3,
    )
    # WHEN written
    path = write(tmp_path / "a.parquet", Conformed([], schema, []), compression)
    # THEN the file has exactly that schema, all nullable, and no rows
    written = pq.read_schema(path)
    assert written.equals(arrow_schema(schema))
    assert [f.nullable for f in written] == [True] * 9
    assert pq.read_table(path).num_rows == 0
    expected_codec = "UNCOMPRESSED" if compression == "none" else compression.upper()
    assert pq.ParquetFile(path).metadata.row_group(0).column(0).compression == expected_codec


def test_write_parquet_rejects_an_unknown_compression() -> None:
    # GIVEN / WHEN / THEN an unknown compression is refused before writing
    with pytest.raises(ValueError, match="lz4"):
        write_parquet(io.BytesIO(), [], Schema(), "lz4")


def test_importing_the_module_does_not_import_pyarrow() -> None:
    # GIVEN a fresh interpreter WHEN it imports the module and conforms a batch
    code = (
        "import sys; from leanops.schema import conform, Schema, encode_json_line; "
        "conform([{'a': 1, 'b': [1]}], Schema()); encode_json_line({'a': 1}); "
        "print('pyarrow' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    # THEN pyarrow was not imported
    assert out.strip() == "False"


# ------------------------------------------------------------------------------------- schema persistence


def test_schema_round_trips_through_json() -> None:
    # GIVEN a schema with declared and inferred columns
    schema = Schema(
        (Column("id", "int64"), Column("amount", "decimal(12,2)", True), Column("x", "null")), version=7
    )
    # WHEN it goes through to_json, JSON text, and from_json
    data = schema.to_json()
    again = Schema.from_json(json.loads(json.dumps(data)))
    # THEN it is equal, in the documented shape
    assert again == schema
    assert data == {
        "version": 7,
        "columns": [
            {"name": "id", "type": "int64", "declared": False},
            {"name": "amount", "type": "decimal(12,2)", "declared": True},
            {"name": "x", "type": "null", "declared": False},
        ],
    }
    assert Schema.from_json(None) == Schema()
    assert again.column("amount") == Column("amount", "decimal(12,2)", True)
    assert again.column("missing") is None


@pytest.mark.parametrize(
    "data",
    [
        {"version": 1},
        {"version": "1", "columns": []},
        {"version": 1, "columns": [{"name": "a", "type": "integer"}]},
        {"version": 1, "columns": [{"name": "a", "type": "int64"}, {"name": "a", "type": "string"}]},
    ],
)
def test_from_json_refuses_what_is_not_a_stored_schema(data: dict[str, Any]) -> None:
    # GIVEN / WHEN / THEN
    with pytest.raises(ValueError):
        Schema.from_json(data)


# ----------------------------------------------------------------------------------------- declarations


def test_parse_declared_normalises_types_and_declares_every_column() -> None:
    # GIVEN a topic's schema mapping
    raw = {"id": "int64", "amount": "Decimal(12, 2)", "ts": "timestamp", "note": "string", "tags": "json"}
    # WHEN parsed
    schema = parse_declared(raw, WHERE)
    # THEN every column is declared, in order, with its normal type, version 0
    assert schema == Schema(
        (
            Column("id", "int64", True),
            Column("amount", "decimal(12,2)", True),
            Column("ts", "timestamp", True),
            Column("note", "string", True),
            Column("tags", "json", True),
        ),
        0,
    )


@pytest.mark.parametrize(
    ("raw", "names"),
    [
        ({}, "empty mapping"),
        (["id"], "list"),
        ({1: "int64"}, "1"),
        ({"id": "integer"}, "'id'"),
        ({"id": None}, "'id'"),
        ({"amount": "decimal(39,2)"}, "'amount'"),
        ({"amount": "decimal(5,6)"}, "'amount'"),
        ({"amount": "decimal(0,0)"}, "'amount'"),
        ({"x": "null"}, "'x'"),
        ({"bad\nname": "nope"}, "'bad\\nname'"),
    ],
)
def test_parse_declared_errors_are_one_line_naming_the_column_and_the_allowed_types(
    raw: object, names: str
) -> None:
    # GIVEN an invalid declaration WHEN it is parsed
    with pytest.raises(ConfigError) as caught:
        parse_declared(raw, WHERE)
    # THEN the error is one line, starts with where, names the culprit and the allowed types
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(WHERE + ": ")
    assert names in message
    assert "decimal(P,S)" in message and "int64" in message


def test_merge_declared_adds_declared_columns_and_applies_safe_widening() -> None:
    # GIVEN a kept schema (int64, null, string) and declarations widening two of them and adding one
    kept = Schema((Column("n", "int64"), Column("z", "null"), Column("s", "string")), version=4)
    wanted = declared(n="double", z="timestamp", s="string", added="date")
    # WHEN merged
    merged = merge_declared(kept, wanted)
    # THEN kept columns keep their order, take the declared types, and the new one is appended; version kept
    assert merged == Schema(
        (
            Column("n", "double", True),
            Column("z", "timestamp", True),
            Column("s", "string", True),
            Column("added", "date", True),
        ),
        version=4,
    )


def test_merge_declared_without_changes_or_declarations() -> None:
    # GIVEN kept schemas with and without declared columns
    plain = Schema((Column("a", "int64"),), version=2)
    pinned = Schema((Column("a", "int64", True),), version=2)
    # WHEN / THEN nothing declared keeps the plain one as is, and un-declares the pinned one
    assert merge_declared(plain, None) is plain
    assert merge_declared(pinned, None) == plain
    assert merge_declared(None, None) == Schema()
    assert merge_declared(None, declared(a="int64")) == Schema((Column("a", "int64", True),), 0)


@pytest.mark.parametrize(("kept", "wanted"), [("double", "int64"), ("string", "int64"), ("int64", "string")])
def test_merge_declared_refuses_an_unsafe_change(kept: str, wanted: str) -> None:
    # GIVEN a column written as `kept`, declared as `wanted`
    schema = Schema((Column("speed", kept),), version=1)
    # WHEN merged
    with pytest.raises(ConfigError) as caught:
        merge_declared(schema, declared(speed=wanted))
    # THEN the one-line error names the column, both types and the ways out
    message = str(caught.value)
    assert "\n" not in message
    assert "'speed'" in message and kept in message and wanted in message
    assert "new sink" in message


# ------------------------------------------------------------------------------------------- JSON Lines


def test_encode_json_line_is_compact_and_keeps_non_ascii() -> None:
    # GIVEN / WHEN / THEN
    assert (
        encode_json_line({"a": 1, "b": [1.5, None, True], "c": "é"}) == '{"a":1,"b":[1.5,null,true],"c":"é"}'
    )


def test_encode_json_line_writes_datetimes_dates_decimals_and_sets() -> None:
    # GIVEN a record with values the json module does not serialise
    record = {
        "naive": datetime(2024, 5, 1, 10, 0),
        "aware": datetime(2024, 5, 1, 12, 0, tzinfo=timezone(timedelta(hours=2))),
        "day": date(2024, 5, 1),
        "amount": Decimal("12345678901234567890.10"),
        "tags": {"b", "a"},
        "pair": (1, 2),
        "nested": {"at": [date(2024, 1, 2)]},
    }
    # WHEN encoded
    line = encode_json_line(record)
    # THEN it is valid JSON with ISO dates, the exact decimal digits and sets as sorted lists
    assert line == (
        '{"naive":"2024-05-01T10:00:00","aware":"2024-05-01T12:00:00+02:00","day":"2024-05-01",'
        '"amount":12345678901234567890.10,"tags":["a","b"],"pair":[1,2],"nested":{"at":["2024-01-02"]}}'
    )
    assert json.loads(line, parse_float=Decimal)["amount"] == Decimal("12345678901234567890.10")


@pytest.mark.parametrize(
    ("record", "column", "reason"),
    [
        ({"ok": 1, "x": {"a": [1, math.nan]}}, "x", "column 'x': NaN is not valid JSON (at x['a'][1])"),
        ({"x": math.inf}, "x", "column 'x': Infinity is not valid JSON"),
        (
            {"ok": Decimal(1), "y": Decimal("-Infinity")},
            "y",
            "column 'y': Decimal '-Infinity' is not valid JSON",
        ),
        ({"o": object()}, "o", "column 'o': a value of type object cannot be written as JSON"),
        ({"s": "bad \ud800"}, "s", "column 's': string 'bad \\ud800' holds a lone surrogate"),
    ],
)
def test_encode_json_line_refuses_what_json_cannot_hold_naming_the_column(
    record: dict[str, Any], column: str, reason: str
) -> None:
    # GIVEN a record with NaN, infinity, an object or a lone surrogate somewhere
    # WHEN encoded
    with pytest.raises(UnwritableValue) as caught:
        encode_json_line(record)
    # THEN the error names the top-level field and why
    assert caught.value.column == column
    assert caught.value.reason.startswith(reason)
    assert str(caught.value) == caught.value.reason
    assert isinstance(caught.value, ValueError)


def test_encode_json_line_refuses_a_circular_record() -> None:
    # GIVEN a record that contains itself
    record: dict[str, Any] = {"a": 1}
    record["self"] = [record]
    # WHEN / THEN
    with pytest.raises(UnwritableValue, match="circular") as caught:
        encode_json_line(record)
    assert caught.value.column == "self"


def test_a_record_that_would_pass_the_column_cap_is_rejected_with_the_reason():
    from leanops.schema import MAX_COLUMNS

    # GIVEN a schema one column short of the cap
    schema = conform([{f"c{i}": i for i in range(MAX_COLUMNS - 1)}], Schema()).schema
    # WHEN records bring one more column, then two more
    result = conform([{"new": 1}, {"x": 1, "y": 2}, {"c0": 5}], schema)
    # THEN the first fits, the second is rejected with the reason, the third is written
    assert [r.index for r in result.rejected] == [1] and "would pass the 1000" in result.rejected[0].reason
    assert len(result.schema.columns) == MAX_COLUMNS and len(result.rows) == 2
