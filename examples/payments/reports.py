"""The payments seed's reporting questions, as SQL over the exported change feed, run locally by DuckDB.

    python -m examples.payments.reports QUESTION --archive DIR [--fee-type X] [--min-amount N]
                                        [--method M] [--current PATH] [--json]

    run("error_4xx", "exports/payment_changes")                        # -> list of dicts
    run("failed_above", root, min_amount=50_000)
    run("reconciliation", root, current=[{"payment_id": ..., "status": ..., "version": ...}, ...])

The questions (one file each in ``queries/``, its leading comment says exactly what it answers):

=================  =========================================================  ===============
question           answers                                                    parameters
=================  =========================================================  ===============
error_4xx          payments whose latest error code is 4XX, count per code
by_fee_type        payments of one fee type, with their current status        fee_type
settlement_time    settlement time of a method's payments: avg, p50, p95      method (ACH)
fee_month          payments by fee type and month: count, total amount
failed_above       failed payments above an amount (cents)                    min_amount
reconciliation     payments whose current status/version differ from the      (``current``)
                   last exported change (no row: reconciled)
=================  =========================================================  ===============

They read the table ``payment_changes``: the store's change items (one per status transition:
:data:`CHANGE_SCHEMA`, ``at`` the UTC time of ``at_ms``) exported as Parquet under
``<root>/date=YYYY-MM-DD/*.parquet`` (``date`` a partition column, the UTC day); the reconciliation also
reads ``payments_current`` (``payment_id``, ``status``, ``version``: the payments as the table holds them
now). An export may hold a change more than once (a batch exported again); copies of a change are alike,
and every query keeps one change per payment (its last, by version) or the earliest time of a status, so a
copy changes no answer.

The same text runs in Athena (Trino) over a Glue table ``payment_changes`` of the same columns partitioned
by ``date``: parameters are positional ``?`` (Athena's ``ExecutionParameters``, in the order of the file's
``-- params:`` line), and the SQL keeps to what both engines spell alike; ``approx_percentile`` is a macro
here (leanops' reports' :data:`~leanopsctl.analytics.engine.TRINO_MACROS`: exact, linear interpolation),
Athena's own is approximate. Questions are read as leanops reads its report queries
(:class:`leanopsctl.analytics.Query`).

Files whose path under the root has a part starting with ``_`` or ``.`` (a writer's temporary object, a
quarantine folder) are not read.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, TextIO

import duckdb
import pyarrow as pa
from leanopsctl.analytics import Query, read_params
from leanopsctl.analytics.engine import TRINO_MACROS

#: The exported change items' columns (``date``, the partition, comes from the path).
CHANGE_SCHEMA = pa.schema(
    [
        ("payment_id", pa.string()),
        ("from_status", pa.string()),
        ("to_status", pa.string()),
        ("version", pa.int64()),
        ("at_ms", pa.int64()),
        ("error_code", pa.string()),
        ("fee_type", pa.string()),
        ("amount_cents", pa.int64()),
        ("method", pa.string()),
        ("request_id", pa.string()),
        ("at", pa.timestamp("ms", tz="UTC")),
    ]
)
#: The payments as the table holds them now, for the reconciliation.
CURRENT_SCHEMA = pa.schema([("payment_id", pa.string()), ("status", pa.string()), ("version", pa.int64())])

#: What each question answers, in a line (its file's leading comment says it exactly).
SUMMARIES: Mapping[str, str] = {
    "error_4xx": "payments whose latest error code is 4XX, with a count per code",
    "by_fee_type": "payments of one fee type (--fee-type), with their current status",
    "settlement_time": "settlement time of a method's payments (--method, ACH): avg, p50, p95",
    "fee_month": "payments by fee type and month of creation: count, total amount",
    "failed_above": "failed payments above an amount (--min-amount, cents)",
    "reconciliation": "payments whose current status/version (--current) differ from the export",
}
#: Parameters that have a default.
DEFAULTS: Mapping[str, Any] = {"method": "ACH"}
QUERIES_FOLDER = Path(__file__).parent / "queries"


class Question(Query):
    """One question: its name (the file's stem), SQL text and parameters' names, in ``?`` order (leanops'
    report queries, read the same way)."""

    def values(self, given: Mapping[str, Any]) -> list[Any]:
        """The values of the parameters, in order (defaults for those not given).

        Raises
        ------
        ValueError
            A parameter the question does not take, or one it takes with no value.
        """
        unknown = sorted(set(given) - set(self.params))
        if unknown:
            takes = ", ".join(self.params) or "no parameters"
            raise ValueError(f"{self.name} takes {takes}, not {', '.join(unknown)}")
        merged = {**DEFAULTS, **given}
        missing = [name for name in self.params if merged.get(name) is None]
        if missing:
            raise ValueError(f"{self.name} needs a value for {', '.join(missing)}")
        return [merged[name] for name in self.params]


def questions() -> dict[str, Question]:
    """Every question of ``queries/``, by name."""
    found = {}
    for path in sorted(QUERIES_FOLDER.glob("*.sql")):
        sql = path.read_text(encoding="utf-8")
        found[path.stem] = Question(path.stem, sql, read_params(sql))
    return found


def parquet_files(root: Path) -> list[Path]:
    """The Parquet files under ``root``, leaving out any path with a part starting with ``_`` or ``.``."""
    return sorted(
        path
        for path in root.rglob("*.parquet")
        if path.is_file() and not any(part.startswith(("_", ".")) for part in path.relative_to(root).parts)
    )


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _read_parquet(files: Sequence[Path], hive: bool) -> str:
    listed = ", ".join(_literal(str(path)) for path in files)
    options = ", hive_partitioning = true, hive_types = {'date': VARCHAR}" if hive else ""
    return f"read_parquet([{listed}], union_by_name = true{options})"


class Reports:
    """A DuckDB database whose view ``payment_changes`` is the export under ``root`` and whose table
    ``payments_current`` is ``current`` (Parquet files under a folder, a file, an Arrow table or rows; none:
    empty)."""

    def __init__(
        self,
        root: Path | str,
        current: Path | str | pa.Table | Iterable[Mapping[str, Any]] | None = None,
    ) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(f"no export folder {self.root}")
        self.connection = duckdb.connect(":memory:")
        self.connection.execute("SET TimeZone = 'UTC'")
        for macro in TRINO_MACROS:
            self.connection.execute(macro)
        self.connection.register("_no_changes", CHANGE_SCHEMA.empty_table())
        files = parquet_files(self.root)
        source = _read_parquet(files, hive=True) if files else "_no_changes"
        self.connection.execute(
            f'CREATE VIEW payment_changes AS SELECT * REPLACE (CAST("at" AS TIMESTAMP) AS "at") FROM {source}'
        )
        self._current = _current_table(current)
        if isinstance(self._current, pa.Table):
            self.connection.register("_current", self._current)
            self.connection.execute("CREATE VIEW payments_current AS SELECT * FROM _current")
        else:
            self.connection.execute(f"CREATE VIEW payments_current AS SELECT * FROM {self._current}")

    def run(self, question: str | Question, **params: Any) -> list[dict[str, Any]]:
        """The question's rows, as dicts (timestamps naive UTC ``datetime``s, months ``date``s)."""
        found = question if isinstance(question, Question) else _question(question)
        cursor = self.connection.execute(found.sql, found.values(params))
        names = [column[0] for column in cursor.description or ()]
        return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]

    def close(self) -> None:
        self.connection.close()

    def __enter__(self) -> Reports:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _current_table(current: Path | str | pa.Table | Iterable[Mapping[str, Any]] | None) -> pa.Table | str:
    """An Arrow table, or the ``read_parquet(...)`` of the files named."""
    if current is None:
        return CURRENT_SCHEMA.empty_table()
    if isinstance(current, pa.Table):
        return current
    if isinstance(current, str | Path):
        path = Path(current)
        files = parquet_files(path) if path.is_dir() else [path]
        if not files or not all(f.is_file() for f in files):
            raise FileNotFoundError(f"no Parquet files of the current payments at {path}")
        return _read_parquet(files, hive=False)
    return pa.Table.from_pylist([dict(row) for row in current], schema=CURRENT_SCHEMA)


def _question(name: str) -> Question:
    found = questions()
    if name not in found:
        raise ValueError(f"no question {name!r}: one of {', '.join(found)}")
    return found[name]


def run(
    question: str,
    parquet_root: Path | str,
    *,
    current: Path | str | pa.Table | Iterable[Mapping[str, Any]] | None = None,
    **params: Any,
) -> list[dict[str, Any]]:
    """Answer ``question`` over the export under ``parquet_root`` (``current``: the table's payments, for
    the reconciliation). ``params``: the question's parameters by name (``fee_type``, ``min_amount`` in
    cents, ``method``, default ACH).

    Raises
    ------
    ValueError
        An unknown question, or a parameter it does not take or lacks.
    FileNotFoundError
        No folder at ``parquet_root``; no Parquet file at ``current``.
    """
    found = _question(question)
    with Reports(parquet_root, current) as reports:
        return reports.run(found, **params)


# --- the command line -----------------------------------------------------------------------------------


def jsonable(value: Any) -> Any:
    """A value as JSON takes it: times as ISO text in UTC (``...Z``), dates as ISO dates."""
    if isinstance(value, dt.datetime):
        if value.tzinfo is not None:
            value = value.astimezone(dt.UTC).replace(tzinfo=None)
        return value.isoformat(timespec="milliseconds") + "Z"
    if isinstance(value, dt.date):
        return value.isoformat()
    return value


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(jsonable(value))


def print_table(rows: Sequence[Mapping[str, Any]], out: TextIO) -> None:
    """``rows`` as aligned columns, then their count."""
    if rows:
        names = list(rows[0])
        cells = [[_cell(row[name]) for name in names] for row in rows]
        widths = [max(len(name), *(len(line[i]) for line in cells)) for i, name in enumerate(names)]
        print("  ".join(name.ljust(w) for name, w in zip(names, widths, strict=True)).rstrip(), file=out)
        for line in cells:
            print("  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip(), file=out)
    print(f"({len(rows)} row{'' if len(rows) == 1 else 's'})", file=out)


def _parser() -> argparse.ArgumentParser:
    found = questions()
    parser = argparse.ArgumentParser(
        prog="python -m examples.payments.reports",
        description="Answer a payments question over the exported change feed (Parquet, date=YYYY-MM-DD/).",
        epilog="questions:\n"
        + "\n".join(f"  {name:<16} {SUMMARIES.get(name, found[name].description)}" for name in found),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("question", choices=sorted(found), metavar="QUESTION", help=", ".join(sorted(found)))
    parser.add_argument("--archive", required=True, type=Path, metavar="DIR", help="the export's root folder")
    parser.add_argument("--fee-type", dest="fee_type", help="by_fee_type: the fee type")
    parser.add_argument("--min-amount", dest="min_amount", type=int, metavar="N", help="failed_above: cents")
    parser.add_argument("--method", help="settlement_time: ACH (default), CARD or WIRE")
    parser.add_argument(
        "--current", type=Path, metavar="PATH", help="reconciliation: Parquet of payment_id, status, version"
    )
    parser.add_argument("--json", action="store_true", help="print the rows as one JSON array")
    return parser


def main(argv: Sequence[str] | None = None, out: TextIO | None = None) -> int:
    """The command line. Exit 0 with the answer; 1 when the reconciliation finds differences; 2 on a usage
    error (an option the question does not take, a missing parameter or folder)."""
    out = out if out is not None else sys.stdout
    parser = _parser()
    args = parser.parse_args(argv)
    given = {
        name: getattr(args, name)
        for name in ("fee_type", "min_amount", "method")
        if getattr(args, name) is not None
    }
    if args.current is not None and args.question != "reconciliation":
        parser.error("--current is for the reconciliation only")
    if args.question == "reconciliation" and args.current is None:
        parser.error("the reconciliation needs --current (the payments as the table holds them)")
    try:
        rows = run(args.question, args.archive, current=args.current, **given)
    except (ValueError, FileNotFoundError) as exc:
        parser.error(str(exc))
    if args.json:
        print(json.dumps([{k: jsonable(v) for k, v in row.items()} for row in rows], indent=2), file=out)
    else:
        print_table(rows, out)
    return 1 if args.question == "reconciliation" and rows else 0


if __name__ == "__main__":
    sys.exit(main())
