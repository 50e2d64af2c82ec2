"""The sample pipeline's generator and processor (examples/vehicle_telemetry)."""

from __future__ import annotations

import gzip
import json
import logging
import math
import re
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from examples.vehicle_telemetry import generate as gen
from examples.vehicle_telemetry.processor import problem, process


class FakeContext:
    """The processor context, recording ``reject`` calls."""

    def __init__(self, batch_id: str = "date=2025-11-25/hour=00/part-00000.jsonl#0") -> None:
        self.topic = "vehicle_telemetry"
        self.batch_id = batch_id
        self.fence = 3
        self.logger = logging.getLogger("test_vehicle_telemetry")
        self.rejected: list[tuple[dict[str, Any], str]] = []

    def reject(self, record: dict[str, Any], reason: str) -> None:
        self.rejected.append((record, reason))


def reading(**changes: Any) -> dict[str, Any]:
    record: dict[str, Any] = {
        "event_id": "evt-000000001",
        "vehicle_id": "veh-0001",
        "ts": 1_764_028_801,
        "speed_mps": 10.0,
        "lat": 52.1,
        "lon": 13.2,
        "battery_pct": 50.5,
        "odometer_km": 10_000.01,
    }
    record.update(changes)
    return {k: v for k, v in record.items() if v is not ...}


def object_paths(out: Path) -> list[Path]:
    """Input objects in the order a files source reads them (lexical key order, ``_`` names skipped)."""
    return sorted(
        (p for p in out.rglob("*") if p.is_file() and not p.name.startswith(("_", "."))),
        key=lambda p: p.relative_to(out).as_posix(),
    )


def lines(out: Path) -> Iterator[str]:
    for path in object_paths(out):
        opener = gzip.open if path.name.endswith(".gz") else open
        with opener(path, "rt", encoding="utf-8") as stream:
            yield from (line.rstrip("\n") for line in stream)


def parse(line: str) -> Any:
    try:
        return json.loads(line)
    except json.JSONDecodeError:
        return None


# --- generator ------------------------------------------------------------------------------------------


def test_writes_the_requested_counts_and_the_manifest(tmp_path: Path) -> None:
    summary = gen.generate(tmp_path, 1_050, 100, seed=3, malformed=0.1)

    assert summary.records == 1_050 and summary.objects == 11
    assert summary.valid + summary.malformed_json + summary.invalid == 1_050
    paths = object_paths(tmp_path)
    assert len(paths) == 11
    assert [p.read_text().count("\n") for p in paths] == [100] * 10 + [50]
    manifest = json.loads((tmp_path / gen.MANIFEST).read_text())
    assert manifest == summary.to_json()
    assert {"records", "valid", "malformed_json", "invalid", "objects", "seed"} <= manifest.keys()
    assert manifest["seed"] == 3 and manifest["stale_objects"] == 0


def test_no_records_writes_only_the_manifest(tmp_path: Path) -> None:
    summary = gen.generate(tmp_path, 0, 100)
    assert summary.objects == 0 and summary.valid == 0
    assert object_paths(tmp_path) == []
    assert (tmp_path / gen.MANIFEST).is_file()


def test_keys_sort_in_arrival_order_across_hours_and_days(tmp_path: Path) -> None:
    gen.generate(tmp_path, 100_000, 4_000, malformed=0)  # 100,000 s: two dates; last object from 96,000 s

    keys = [p.relative_to(tmp_path).as_posix() for p in object_paths(tmp_path)]
    assert len(keys) == 25
    assert keys[0] == "date=2025-11-25/hour=00/part-00000.jsonl"
    assert keys[-1] == "date=2025-11-26/hour=02/part-00024.jsonl"
    assert all(re.fullmatch(r"date=\d{4}-\d\d-\d\d/hour=\d\d/part-\d{5}\.jsonl", k) for k in keys)
    assert [int(k[-11:-6]) for k in keys] == list(range(25))  # sorted keys = written order
    ids, stamps = [], []
    for line in lines(tmp_path):
        record = json.loads(line)
        ids.append(record["event_id"])
        stamps.append(record["ts"])
    assert ids == [f"evt-{i:09d}" for i in range(100_000)]
    assert stamps == [gen.START_TS + i for i in range(100_000)]
    assert ids == sorted(ids)
    # each object sits under the date and hour of its first reading
    for path in object_paths(tmp_path):
        with path.open() as stream:
            first = json.loads(stream.readline())
        assert (
            path.relative_to(tmp_path)
            .as_posix()
            .startswith(gen.object_key(0, first["ts"]).rsplit("/", 1)[0] + "/")
        )


def test_gzip_objects_hold_the_same_lines(tmp_path: Path) -> None:
    plain, packed = tmp_path / "plain", tmp_path / "packed"
    gen.generate(plain, 500, 120, seed=5, malformed=0.2)
    summary = gen.generate(packed, 500, 120, seed=5, malformed=0.2, gz=True)

    assert summary.gz and summary.objects == 5
    paths = object_paths(packed)
    assert all(p.name.endswith(".jsonl.gz") for p in paths)
    with gzip.open(paths[0], "rt", encoding="utf-8") as stream:
        assert len(stream.readlines()) == 120
    assert list(lines(packed)) == list(lines(plain))


def test_same_seed_same_bytes_and_valid_lines_do_not_depend_on_the_malformed_share(tmp_path: Path) -> None:
    gen.generate(tmp_path / "a", 300, 100, seed=9, gz=True)
    gen.generate(tmp_path / "b", 300, 100, seed=9, gz=True)
    gen.generate(tmp_path / "c", 300, 100, seed=9, malformed=0)
    a, b = object_paths(tmp_path / "a"), object_paths(tmp_path / "b")
    assert [p.read_bytes() for p in a] == [p.read_bytes() for p in b]
    clean = list(lines(tmp_path / "c"))
    for index, line in enumerate(lines(tmp_path / "a")):
        if gen.line_kind(index, 9, 0.01) == "valid":
            assert line == clean[index]


def test_line_kind_matches_every_line_and_the_processor_agrees(tmp_path: Path) -> None:
    seed, share = 11, 0.3
    summary = gen.generate(tmp_path, 3_000, 700, seed=seed, malformed=share)

    kinds: Counter[str] = Counter()
    reasons: list[str] = []
    for index, line in enumerate(lines(tmp_path)):
        kind = gen.line_kind(index, seed, share)
        kinds[kind] += 1
        assert line.strip(), "never a blank line (blank lines are skipped, not quarantined)"
        assert "\r" not in line
        record = parse(line)
        if kind == "malformed_json":
            assert not isinstance(record, dict), line
            continue
        assert isinstance(record, dict), line
        assert record["event_id"] == f"evt-{index:09d}"
        ctx = FakeContext()
        out = process([record], ctx)
        assert (problem(record) is None) == (kind == "valid"), line
        if kind == "valid":
            assert ctx.rejected == [] and len(out) == 1, line
        else:
            assert out == [] and len(ctx.rejected) == 1 and ctx.rejected[0][0] is record, line
            reasons.append(ctx.rejected[0][1])
    assert index == 2_999
    assert kinds == {
        "valid": summary.valid,
        "malformed_json": summary.malformed_json,
        "invalid": summary.invalid,
    }
    assert len(reasons) == summary.invalid
    patterns = {
        "negative speed": r"speed_mps -\d+\.\d+ out of range 0\.\.100",
        "speed as a string": r'speed_mps "\d+\.\d\d" is not a number',
        "battery above 100": r"battery_pct \d+\.\d out of range 0\.\.100",
        "missing vehicle": r"missing vehicle_id",
    }
    seen = {name: sum(1 for r in reasons if re.fullmatch(p, r)) for name, p in patterns.items()}
    assert sum(seen.values()) == len(reasons), reasons
    assert all(count > 0 for count in seen.values()), seen


def test_malformed_lines_take_every_shape(tmp_path: Path) -> None:
    gen.generate(tmp_path, 2_000, 2_000, seed=2, malformed=0.5)
    bad = [line for i, line in enumerate(lines(tmp_path)) if gen.line_kind(i, 2, 0.5) == "malformed_json"]
    truncated = [line for line in bad if line.startswith("{")]
    garbage = [line for line in bad if line.startswith("garbage")]
    arrays = [line for line in bad if isinstance(parse(line), list)]
    assert truncated and garbage and arrays
    assert len(truncated) + len(garbage) + len(arrays) == len(bad)
    assert all(parse(line) is None for line in truncated + garbage)


@pytest.mark.parametrize(("seed", "share"), [(7, 0.01), (1, 0.05), (42, 0.2)])
def test_malformed_share_is_close_to_the_requested_fraction(seed: int, share: float) -> None:
    n = 40_000
    kinds = Counter(gen.line_kind(i, seed, share) for i in range(n))
    expected = n * share
    tolerance = 5 * math.sqrt(n * share * (1 - share))
    assert abs(kinds["malformed_json"] + kinds["invalid"] - expected) < tolerance
    for kind in ("malformed_json", "invalid"):  # about half and half
        assert abs(kinds[kind] - expected / 2) < 5 * math.sqrt(n * share / 2)


def test_line_kind_extremes_and_independence_of_the_index() -> None:
    assert {gen.line_kind(i, 7, 0) for i in range(5_000)} == {"valid"}
    assert "valid" not in {gen.line_kind(i, 7, 1) for i in range(5_000)}
    kinds = [gen.line_kind(i, 7, 0.1) for i in range(2_000)]
    assert [gen.line_kind(i, 7, 0.1) for i in reversed(range(2_000))] == kinds[::-1]
    assert kinds != [gen.line_kind(i, 8, 0.1) for i in range(2_000)]  # the seed matters
    # a line malformed at a smaller share stays malformed, with the same kind, at a larger one
    for i in range(2_000):
        if gen.line_kind(i, 7, 0.05) != "valid":
            assert gen.line_kind(i, 7, 0.1) == gen.line_kind(i, 7, 0.05)


def test_generate_refuses_bad_arguments(tmp_path: Path) -> None:
    for kwargs in ({"records": -1}, {"per_object": 0}, {"malformed": 1.5}, {"malformed": math.nan}):
        args: dict[str, Any] = {"records": 10, "per_object": 5, **kwargs}
        with pytest.raises(ValueError):
            gen.generate(tmp_path, args.pop("records"), args.pop("per_object"), **args)


# --- command line ---------------------------------------------------------------------------------------


def test_cli_writes_and_reports(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "data"
    argv = ["--records", "250", "--per-object", "100", "--out", str(out), "--seed", "4", "--malformed", "0.2"]
    assert gen.main(argv) == 0
    manifest = json.loads((out / gen.MANIFEST).read_text())
    assert manifest["records"] == 250 and manifest["objects"] == 3 and manifest["seed"] == 4
    assert manifest["malformed"] == 0.2
    err = capsys.readouterr().err
    assert f"wrote 250 records ({manifest['valid']} valid" in err and "in 3 objects" in err


@pytest.mark.parametrize(
    "argv",
    [
        ["--records", "-1"],
        ["--records", "abc"],
        ["--per-object", "0"],
        ["--malformed", "1.5"],
        ["--malformed", "-0.1"],
        ["--malformed", "nan"],
        ["--unknown"],
    ],
)
def test_cli_bad_arguments_exit_2_with_one_line(
    argv: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        gen.main([*argv, "--out", str(tmp_path / "data")])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and "error:" in err, err
    assert not (tmp_path / "data").exists()


def test_cli_out_must_be_a_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(SystemExit) as exit_info:
        gen.main(["--out", str(tmp_path / "file")])
    assert exit_info.value.code == 2 and len(capsys.readouterr().err.splitlines()) == 1


def test_clean_removes_earlier_objects_only(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "data"
    gen.generate(out, 1_000, 100)  # 10 objects
    (out / "notes.txt").write_text("keep me")
    (out / "date=2025-11-25" / "README").write_text("keep me too")

    summary = gen.generate(out, 300, 100)  # overwrites parts 0-2, parts 3-9 stay
    assert summary.stale_objects == 7
    assert len(object_paths(out)) == 10 + 2

    assert gen.main(["--records", "300", "--per-object", "100", "--out", str(out), "--clean"]) == 0
    assert "removed 10 earlier objects" in capsys.readouterr().err
    assert [p.name for p in object_paths(out)] == [
        "README",
        "part-00000.jsonl",
        "part-00001.jsonl",
        "part-00002.jsonl",
        "notes.txt",
    ]
    assert json.loads((out / gen.MANIFEST).read_text())["stale_objects"] == 0
    assert not list(out.rglob("_*.tmp"))


# --- processor ------------------------------------------------------------------------------------------


def test_valid_readings_get_derived_fields() -> None:
    records = [
        reading(speed_mps=10.0, battery_pct=14.9),
        reading(event_id="evt-2", speed_mps=0, battery_pct=15),
    ]
    ctx = FakeContext(batch_id="k#0")

    out = process(records, ctx)

    assert ctx.rejected == []
    assert out[0] == {**records[0], "speed_kmh": 36.0, "low_battery": True, "ingest_batch": "k#0"}
    assert out[1]["speed_kmh"] == 0 and out[1]["low_battery"] is False
    assert process([reading(speed_mps=12.345)], ctx)[0]["speed_kmh"] == 44.44
    assert "speed_kmh" not in records[0], "the input records are left as they were"


def test_bounds_are_inclusive() -> None:
    edges = reading(speed_mps=100, battery_pct=0, lat=-90, lon=180, odometer_km=0, ts=0.5)
    assert problem(edges) is None


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"speed_mps": -3.2}, "speed_mps -3.2 out of range 0..100"),
        ({"speed_mps": 100.01}, "speed_mps 100.01 out of range 0..100"),
        ({"speed_mps": "12.5"}, 'speed_mps "12.5" is not a number'),
        ({"speed_mps": True}, "speed_mps true is not a number"),
        ({"speed_mps": None}, "speed_mps null is not a number"),
        ({"speed_mps": math.nan}, "speed_mps NaN is not a finite number"),
        ({"odometer_km": math.inf}, "odometer_km Infinity is not a finite number"),
        ({"lat": 10**400}, f"lat 1{'0' * 36}... out of range -90..90"),
        ({"speed_mps": ...}, "missing speed_mps"),
        ({"battery_pct": 130.5}, "battery_pct 130.5 out of range 0..100"),
        ({"battery_pct": -1}, "battery_pct -1 out of range 0..100"),
        ({"vehicle_id": ...}, "missing vehicle_id"),
        ({"vehicle_id": ""}, 'vehicle_id "" is not a non-empty string'),
        ({"vehicle_id": 17}, "vehicle_id 17 is not a non-empty string"),
        ({"event_id": ...}, "missing event_id"),
        ({"ts": "2025-11-25T00:00:00Z"}, 'ts "2025-11-25T00:00:00Z" is not a number'),
        ({"ts": math.inf}, "ts Infinity is not a finite number"),
        ({"ts": ...}, "missing ts"),
        ({"lat": 90.5}, "lat 90.5 out of range -90..90"),
        ({"lon": -180.1}, "lon -180.1 out of range -180..180"),
        ({"odometer_km": -5}, "odometer_km -5 out of range >= 0"),
        ({"odometer_km": [1, 2]}, "odometer_km [1, 2] is not a number"),
        ({"speed_mps": "x" * 100}, f'speed_mps "{"x" * 36}... is not a number'),
    ],
)
def test_each_invalid_reading_is_rejected_with_its_reason(changes: dict[str, Any], reason: str) -> None:
    bad = reading(**changes)
    ctx = FakeContext()

    out = process([reading(), bad, reading(event_id="evt-3")], ctx)

    assert ctx.rejected == [(bad, reason)]
    assert ctx.rejected[0][0] is bad, "the input record itself"
    assert [r["event_id"] for r in out] == ["evt-000000001", "evt-3"]


def test_output_never_holds_a_rejected_record_and_one_line_is_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    records = [reading(event_id=f"evt-{i}", speed_mps=float(i % 150)) for i in range(600)]
    ctx = FakeContext()

    with caplog.at_level(logging.INFO, logger="test_vehicle_telemetry"):
        out = process(records, ctx)

    rejected_ids = {id(record) for record, _ in ctx.rejected}
    assert len(out) + len(ctx.rejected) == 600 and len(ctx.rejected) == 4 * 49
    assert not {r["event_id"] for r in out} & {r["event_id"] for r, _ in ctx.rejected}
    assert all(id(r) not in rejected_ids for r in out)
    [log] = caplog.records
    assert (log.readings, log.accepted, log.rejected) == (600, 404, 196)  # type: ignore[attr-defined]


def test_empty_batch() -> None:
    ctx = FakeContext()
    assert process([], ctx) == [] and ctx.rejected == []
