"""The payments questions (examples/payments/queries, run by examples/payments/reports.py): each one's exact
answer on a data set whose answers are known by construction.

The data set: 18 payments, each written out below with its method, fee type, amount, creation time and path
through the status graph (times as minutes after creation, error codes where a change carries one). Their
change items are written as Parquet under ``date=YYYY-MM-DD/`` (the UTC day of each change), as the export
lays them out; some changes are written twice (a batch exported again), and a writer's temporary file of
garbage lies among them (never read). The answers in the tests are worked out by hand from the table (the
comments show the sums), not computed from the rows.
"""

from __future__ import annotations

import datetime as dt
import json
import statistics
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from examples.payments import reports
from examples.payments.reports import CHANGE_SCHEMA, main, questions, run

UTC = dt.UTC
#: A payment's path after its creation: (to_status, minutes after creation, error code).
Steps = tuple[tuple[str, int, str | None], ...]


@dataclass(frozen=True)
class Spec:
    """One payment: created at ``created``, then each step ``(to_status, minutes after creation, code)``."""

    payment_id: str
    method: str
    fee_type: str
    amount_cents: int
    created: dt.datetime
    steps: Steps


def t(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text).replace(tzinfo=UTC)


def settled(minutes: int, code: str | None = None) -> Steps:
    """SUBMITTED (+1 min), PENDING (+2 min, ``code`` on it: a transient error retried), SETTLED."""
    return (("SUBMITTED", 1, None), ("PENDING", 2, code), ("SETTLED", minutes, None))


def failed(minutes: int, code: str, pending_code: str | None = None) -> Steps:
    return (("SUBMITTED", 1, None), ("PENDING", 2, pending_code), ("FAILED", minutes, code))


PENDING: Steps = (("SUBMITTED", 1, None), ("PENDING", 2, None))
CANCELLED_AFTER_SUBMISSION: Steps = (("SUBMITTED", 1, None), ("CANCELLED", 5, None))

PAYMENTS = [
    # ACH settled: 60, 120, 180, 240 and 600 minutes after creation
    Spec("p01", "ACH", "standard", 10_000, t("2026-01-10 09:00"), settled(60)),
    Spec("p02", "ACH", "standard", 25_000, t("2026-01-12 10:00"), settled(120)),
    Spec("p03", "ACH", "express", 5_000, t("2026-01-31 23:30"), settled(180, code="503")),  # settles on Feb 1
    Spec("p04", "ACH", "international", 150_000, t("2026-02-03 08:00"), settled(240)),
    Spec("p05", "ACH", "standard", 7_500, t("2026-02-14 12:00"), settled(600)),
    Spec("p06", "ACH", "standard", 90_000, t("2026-02-20 09:00"), failed(300, "402")),
    Spec("p07", "ACH", "express", 12_000, t("2026-03-01 10:00"), PENDING),
    # CARD
    Spec("p08", "CARD", "standard", 3_000, t("2026-01-11 15:00"), settled(5)),
    Spec("p09", "CARD", "express", 4_500, t("2026-01-20 16:00"), settled(10, code="503")),
    Spec("p10", "CARD", "international", 200_000, t("2026-02-05 11:00"), failed(7, "422")),
    Spec("p11", "CARD", "standard", 60_000, t("2026-02-10 13:00"), failed(6, "402")),
    Spec("p12", "CARD", "standard", 1_000, t("2026-03-02 08:00"), (("CANCELLED", 1, None),)),
    # WIRE
    Spec("p13", "WIRE", "international", 500_000, t("2026-01-25 14:00"), settled(90)),
    Spec("p14", "WIRE", "international", 75_000, t("2026-02-28 23:00"), failed(120, "503")),  # fails in March
    Spec("p15", "WIRE", "express", 300_000, t("2026-03-03 09:00"), CANCELLED_AFTER_SUBMISSION),
    # error codes in sequence: a 4XX then a 5XX (latest 503), a 5XX then a 4XX (latest 402)
    Spec("p16", "CARD", "express", 40_000, t("2026-03-04 10:00"), failed(9, "503", pending_code="429")),
    Spec("p17", "CARD", "standard", 50_001, t("2026-03-05 10:00"), failed(9, "402", pending_code="503")),
    # exactly the failed_above threshold of the tests (not above it)
    Spec("p18", "ACH", "standard", 50_000, t("2026-03-06 10:00"), failed(400, "402")),
]

#: Changes written a second time, in another file: (payment, version).
EXPORTED_TWICE = [("p01", 1), ("p01", 4), ("p10", 4), ("p04", 4), ("p14", 1)]


def changes(spec: Spec) -> list[dict[str, Any]]:
    """The payment's change items, as the store writes them (version 1: the creation)."""
    rows = []
    path = [("CREATED", 0, None), *spec.steps]
    previous = None
    for version, (status, minutes, code) in enumerate(path, start=1):
        at = spec.created + dt.timedelta(minutes=minutes)
        rows.append(
            {
                "payment_id": spec.payment_id,
                "from_status": previous,
                "to_status": status,
                "version": version,
                "at_ms": int(at.timestamp() * 1000),
                "error_code": code,
                "fee_type": spec.fee_type,
                "amount_cents": spec.amount_cents,
                "method": spec.method,
                "request_id": f"req-{spec.payment_id}-{version}",
                "at": at,
            }
        )
        previous = status
    return rows


def current(specs: list[Spec]) -> list[dict[str, Any]]:
    """The payments as a table consistent with the export holds them: the last change's status and version."""
    return [
        {"payment_id": s.payment_id, "status": changes(s)[-1]["to_status"], "version": len(s.steps) + 1}
        for s in specs
    ]


def write_export(root: Path, specs: list[Spec]) -> Path:
    """The changes as Parquet under ``root/date=YYYY-MM-DD/part-0.parquet``, the changes of
    :data:`EXPORTED_TWICE` again in ``part-1.parquet`` files, and a temporary file that is not Parquet."""
    rows = [row for spec in specs for row in changes(spec)]
    by_day: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        by_day[row["at"].strftime("%Y-%m-%d")].append(row)
    for day, day_rows in by_day.items():
        folder = root / f"date={day}"
        folder.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.Table.from_pylist(day_rows, schema=CHANGE_SCHEMA), folder / "part-0.parquet")
    again = [row for row in rows if (row["payment_id"], row["version"]) in EXPORTED_TWICE]
    assert len(again) == len(EXPORTED_TWICE)
    for row in again:
        folder = root / f"date={row['at'].strftime('%Y-%m-%d')}"
        name = f"part-1-{row['payment_id']}-{row['version']}.parquet"
        pq.write_table(pa.Table.from_pylist([row], schema=CHANGE_SCHEMA), folder / name)
    (root / "date=2026-03-06" / "_tmp-part-2.parquet").write_bytes(b"half a write")
    return root


@pytest.fixture(scope="module")
def export(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_export(tmp_path_factory.mktemp("payment_changes"), PAYMENTS)


def test_the_data_set_is_laid_out_as_the_export_is(export):
    days = sorted(p.name for p in export.iterdir())
    assert days[0] == "date=2026-01-10" and "date=2026-02-01" in days and "date=2026-03-01" in days
    assert len(reports.parquet_files(export)) == len(days) + len(EXPORTED_TWICE)  # not the _tmp- file
    assert sum(len(changes(s)) for s in PAYMENTS) == 68


# --- (a) payments whose latest error code is 4XX --------------------------------------------------------


def test_error_4xx_lists_payments_whose_latest_error_is_4xx_with_counts_per_code(export):
    rows = run("error_4xx", export)
    # p06, p11, p17, p18: 402 (p17 after a 503); p10: 422 (exported twice, counted once). Not p16 (429, then
    # 503), p14 (503), p03 and p09 (503 on the way to SETTLED).
    assert [(r["payment_id"], r["error_code"], r["payments_with_code"]) for r in rows] == [
        ("p06", "402", 4),
        ("p11", "402", 4),
        ("p17", "402", 4),
        ("p18", "402", 4),
        ("p10", "422", 1),
    ]
    p10 = rows[-1]
    assert p10["status_at_error"] == "FAILED"
    assert p10["error_at"] == dt.datetime(2026, 2, 5, 11, 7)
    assert (p10["fee_type"], p10["method"], p10["amount_cents"]) == ("international", "CARD", 200_000)


# --- (b) payments of a fee type --------------------------------------------------------------------------


def test_by_fee_type_lists_the_payments_of_that_fee_type_with_their_status(export):
    rows = run("by_fee_type", export, fee_type="international")
    assert [(r["payment_id"], r["status"], r["version"], r["amount_cents"]) for r in rows] == [
        ("p04", "SETTLED", 4, 150_000),
        ("p10", "FAILED", 4, 200_000),
        ("p13", "SETTLED", 4, 500_000),
        ("p14", "FAILED", 4, 75_000),
    ]
    assert {r["fee_type"] for r in rows} == {"international"}
    p14 = rows[-1]
    assert p14["created_at"] == dt.datetime(2026, 2, 28, 23, 0)
    assert p14["updated_at"] == dt.datetime(2026, 3, 1, 1, 0)
    assert p14["error_code"] == "503"  # its creation exported twice: one row all the same
    express = run("by_fee_type", export, fee_type="express")
    assert [(r["payment_id"], r["status"]) for r in express] == [
        ("p03", "SETTLED"),
        ("p07", "PENDING"),
        ("p09", "SETTLED"),
        ("p15", "CANCELLED"),
        ("p16", "FAILED"),
    ]
    assert run("by_fee_type", export, fee_type="same-day") == []


# --- (c) average settlement time for ACH -----------------------------------------------------------------


def test_settlement_time_for_ach_averages_creation_to_settlement(export):
    # ACH settled: p01..p05, 60, 120, 180, 240, 600 minutes = 3600, 7200, 10800, 14400, 36000 s (p06 failed,
    # p07 pending, p18 failed: left out). Average 72000 / 5 = 14400; p50 the middle one, 10800; p95 at
    # rank 0.95 * 4 = 3.8: 14400 + 0.8 * (36000 - 14400) = 31680.
    [row] = run("settlement_time", export)
    assert row == {
        "payments": 5,
        "avg_seconds": 14400.0,
        "p50_seconds": 10800.0,
        "p95_seconds": pytest.approx(31680.0),
        "min_seconds": 3600.0,
        "max_seconds": 36000.0,
    }
    assert statistics.quantiles([3600, 7200, 10800, 14400, 36000], n=20, method="inclusive")[18] == 31680


def test_settlement_time_takes_the_method(export):
    # CARD settled: p08 5 min, p09 10 min (p10, p11, p16, p17 failed; p12 cancelled)
    [row] = run("settlement_time", export, method="CARD")
    assert (row["payments"], row["avg_seconds"], row["min_seconds"], row["max_seconds"]) == (
        2,
        450.0,
        300.0,
        600.0,
    )
    [wire] = run("settlement_time", export, method="WIRE")
    assert (wire["payments"], wire["avg_seconds"]) == (1, 5400.0)  # p13, 90 minutes


# --- (d) payments by fee type and month ------------------------------------------------------------------


def test_fee_month_counts_and_sums_payments_by_fee_type_and_creation_month(export):
    rows = run("fee_month", export)
    assert [
        (
            r["month"].isoformat(),
            r["fee_type"],
            r["payments"],
            r["total_amount_cents"],
            r["settled_payments"],
            r["settled_amount_cents"],
        )
        for r in rows
    ] == [
        ("2026-01-01", "express", 2, 9_500, 2, 9_500),  # p03 (created Jan 31 23:30, settled Feb 1), p09
        ("2026-01-01", "international", 1, 500_000, 1, 500_000),  # p13
        ("2026-01-01", "standard", 3, 38_000, 3, 38_000),  # p01 (exported twice), p02, p08
        ("2026-02-01", "international", 3, 425_000, 1, 150_000),  # p04 settled; p10, p14 failed
        ("2026-02-01", "standard", 3, 157_500, 1, 7_500),  # p05 settled; p06, p11 failed
        ("2026-03-01", "express", 3, 352_000, 0, 0),  # p07 pending, p15 cancelled, p16 failed
        ("2026-03-01", "standard", 3, 101_001, 0, 0),  # p12 cancelled, p17, p18 failed
    ]
    assert sum(r["payments"] for r in rows) == len(PAYMENTS)


# --- (e) failed payments above an amount -----------------------------------------------------------------


def test_failed_above_lists_failed_payments_strictly_above_the_amount_largest_first(export):
    rows = run("failed_above", export, min_amount=50_000)
    # failed: p10 200000, p06 90000, p14 75000, p11 60000, p17 50001; p18 (exactly 50000) and p16 (40000) not
    assert [(r["payment_id"], r["amount_cents"], r["error_code"]) for r in rows] == [
        ("p10", 200_000, "422"),
        ("p06", 90_000, "402"),
        ("p14", 75_000, "503"),
        ("p11", 60_000, "402"),
        ("p17", 50_001, "402"),
    ]
    assert rows[2]["failed_at"] == dt.datetime(2026, 3, 1, 1, 0)
    assert [r["payment_id"] for r in run("failed_above", export, min_amount=0)] == [
        "p10",
        "p06",
        "p14",
        "p11",
        "p17",
        "p18",
        "p16",
    ]
    assert run("failed_above", export, min_amount=200_000) == []


# --- reconciliation --------------------------------------------------------------------------------------


def test_reconciliation_finds_nothing_when_the_table_matches_the_export(export):
    assert run("reconciliation", export, current=current(PAYMENTS)) == []


def test_reconciliation_finds_exactly_the_altered_payments(export):
    table = current(PAYMENTS)
    altered = {"p07": "SETTLED", "p12": "SUBMITTED", "p13": "FAILED"}
    for row in table:
        row["status"] = altered.get(row["payment_id"], row["status"])
    rows = run("reconciliation", export, current=table)
    assert rows == [
        {
            "payment_id": "p07",
            "current_status": "SETTLED",
            "current_version": 3,
            "exported_status": "PENDING",
            "exported_version": 3,
            "difference": "status",
        },
        {
            "payment_id": "p12",
            "current_status": "SUBMITTED",
            "current_version": 2,
            "exported_status": "CANCELLED",
            "exported_version": 2,
            "difference": "status",
        },
        {
            "payment_id": "p13",
            "current_status": "FAILED",
            "current_version": 4,
            "exported_status": "SETTLED",
            "exported_version": 4,
            "difference": "status",
        },
    ]


def test_reconciliation_names_versions_behind_and_payments_on_one_side_only(export):
    table = [row for row in current(PAYMENTS) if row["payment_id"] != "p02"]
    for row in table:
        if row["payment_id"] == "p05":
            row["version"] = 5  # a change the export has not caught up with
    table.append({"payment_id": "p99", "status": "CREATED", "version": 1})
    rows = run("reconciliation", export, current=table)
    assert [
        (r["payment_id"], r["difference"], r["current_version"], r["exported_version"]) for r in rows
    ] == [
        ("p02", "not_current", None, 4),
        ("p05", "version", 5, 4),
        ("p99", "not_exported", 1, None),
    ]


def test_reconciliation_reads_the_current_payments_from_parquet(export, tmp_path):
    path = tmp_path / "current" / "payments.parquet"
    path.parent.mkdir()
    pq.write_table(pa.Table.from_pylist(current(PAYMENTS), schema=reports.CURRENT_SCHEMA), path)
    assert run("reconciliation", export, current=path) == []
    assert run("reconciliation", export, current=path.parent) == []
    assert [r["payment_id"] for r in run("reconciliation", export)] == sorted(s.payment_id for s in PAYMENTS)


# --- the SQL, the module, the command line ---------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(questions()))
def test_each_question_runs_on_an_empty_export(name, tmp_path):
    found = questions()[name]
    values = {"fee_type": "standard", "min_amount": 0, "method": "ACH"}
    rows = run(name, tmp_path, **{k: v for k, v in values.items() if k in found.params})
    if name == "settlement_time":  # an aggregate: one row, of nothing
        assert rows == [
            {
                "payments": 0,
                "avg_seconds": None,
                "p50_seconds": None,
                "p95_seconds": None,
                "min_seconds": None,
                "max_seconds": None,
            }
        ]
    else:
        assert rows == []
    assert found.sql.count("?") == len(found.params)  # one value per placeholder, in order
    assert found.description


def test_the_questions_and_their_parameters():
    assert set(reports.SUMMARIES) == set(questions())
    assert {name: q.params for name, q in questions().items()} == {
        "error_4xx": (),
        "by_fee_type": ("fee_type",),
        "settlement_time": ("method",),
        "fee_month": (),
        "failed_above": ("min_amount",),
        "reconciliation": (),
    }


def test_the_sql_keeps_to_what_athena_and_duckdb_both_take():
    for found in questions().values():
        sql = found.sql.lower()
        assert "from payment_changes" in sql, found.name
        # DuckDB-only spellings Athena (Trino) refuses, and named parameters
        for word in ("quantile_cont", "epoch_ms(", "::", "$1", "qualify", "strftime(", "date_diff(", "ilike"):
            assert word not in sql, (found.name, word)


def test_parameters_are_checked(export):
    with pytest.raises(ValueError, match="fee_type"):
        run("by_fee_type", export)
    with pytest.raises(ValueError, match="takes no parameters, not fee_type"):
        run("error_4xx", export, fee_type="standard")
    with pytest.raises(ValueError, match="no question 'nope'"):
        run("nope", export)
    with pytest.raises(FileNotFoundError):
        run("error_4xx", export / "missing")


def test_the_command_line_prints_json_rows(export, capsys):
    assert main(["failed_above", "--archive", str(export), "--min-amount", "100000", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert rows == [
        {
            "payment_id": "p10",
            "amount_cents": 200_000,
            "error_code": "422",
            "failed_at": "2026-02-05T11:07:00.000Z",
            "fee_type": "international",
            "method": "CARD",
        }
    ]
    assert main(["fee_month", "--archive", str(export), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["month"] == "2026-01-01"


def test_the_command_line_prints_a_table(export, capsys):
    assert main(["by_fee_type", "--archive", str(export), "--fee-type", "international"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split()[:3] == ["payment_id", "fee_type", "method"]
    assert [line.split()[0] for line in out[1:-1]] == ["p04", "p10", "p13", "p14"]
    assert out[-1] == "(4 rows)"
    assert main(["settlement_time", "--archive", str(export)]) == 0
    assert "14400.000" in capsys.readouterr().out


def test_the_command_line_reconciles_with_exit_code(export, tmp_path, capsys):
    path = tmp_path / "current.parquet"
    pq.write_table(pa.Table.from_pylist(current(PAYMENTS), schema=reports.CURRENT_SCHEMA), path)
    assert main(["reconciliation", "--archive", str(export), "--current", str(path)]) == 0
    assert capsys.readouterr().out.strip() == "(0 rows)"
    pq.write_table(pa.Table.from_pylist(current(PAYMENTS[1:]), schema=reports.CURRENT_SCHEMA), path)
    assert main(["reconciliation", "--archive", str(export), "--current", str(path)]) == 1
    assert "p01" in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv",
    [
        ["by_fee_type"],  # no --fee-type
        ["error_4xx", "--fee-type", "standard"],  # an option the question does not take
        ["reconciliation"],  # no --current
        ["nope"],
    ],
)
def test_the_command_line_refuses_usage_errors(export, argv, capsys):
    with pytest.raises(SystemExit) as exit_:
        main([*argv, "--archive", str(export)])
    assert exit_.value.code == 2
    assert "error:" in capsys.readouterr().err
