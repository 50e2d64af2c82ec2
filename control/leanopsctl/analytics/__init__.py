"""SQL answers from the run history: the archive (Parquet, ``kind=<kind>/date=<YYYY-MM-DD>/``) and, locally,
the items still in the state table.

Each question is one file in ``queries/``, the same text run by DuckDB here (:mod:`.engine`) and by Athena in
AWS (:mod:`.athena`, the template's named queries, :mod:`leanopsctl.deploy.analytics`). The queries read the
tables ``leanops_runs``, ``leanops_outputs``, ``leanops_audit`` and ``leanops_config`` (the archive's columns,
and ``date``: the partition, the UTC day of the item's own time) and take positional ``?`` parameters, named
in order by the file's ``-- params:`` line; :func:`parameters` puts the values in that order, and
:func:`athena_literal` writes one as Athena's ``ExecutionParameters`` want it (SQL literal text).

Every query filters by ``since`` (a timestamp, ``YYYY-MM-DD HH:MM:SS.fff`` UTC, cast in the SQL), its day
``since_date`` (the partition, so Athena reads only the days asked for) and ``topic``, a ``LIKE`` pattern
with ``\\`` as its escape (:func:`topic_pattern`).

The tables may hold an item more than once: the archive admits duplicates (a batch Lambda gave up on is
archived again), and locally an item deleted while it was read is both archived and live. Every query
therefore counts each ``(topic, partition, key)`` once itself, in its SQL (``row_number() OVER (PARTITION BY
topic, "partition", "key" ...) = 1``, the archived copy that expired last first), so Athena and DuckDB give
the same answers. Only the kinds in :data:`TABLES` are read; the archive's other kinds (its ``unparsed``
records) have Glue tables of their own and no query.
"""

from __future__ import annotations

import datetime as dt
import functools
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from importlib import resources
from typing import Any

from leanops.errors import InvalidInput

#: The tables the queries read, by archive kind.
TABLES = {
    "runs": "leanops_runs",
    "outputs": "leanops_outputs",
    "audit": "leanops_audit",
    "config": "leanops_config",
}

_PARAMS_LINE = re.compile(r"^-- params:(.*)$", re.MULTILINE)


@dataclass(frozen=True)
class Query:
    """One question: its name (the file's stem), SQL text, and its parameters' names in order."""

    name: str
    sql: str
    params: tuple[str, ...]

    @property
    def description(self) -> str:
        """The file's leading comment (before its ``-- params:`` line), on one line."""
        lines = []
        for line in self.sql.splitlines():
            if not line.startswith("--") or _PARAMS_LINE.match(line):
                break
            lines.append(line.removeprefix("--").strip())
        return " ".join(lines)

    @property
    def tables(self) -> tuple[str, ...]:
        """The archive kinds the query reads."""
        return tuple(kind for kind, table in TABLES.items() if table in self.sql)


def read_params(sql: str) -> tuple[str, ...]:
    """The names on a query's ``-- params:`` line (a query's text may come from Athena's named query)."""
    found = _PARAMS_LINE.search(sql)
    if found is None:
        raise ValueError("a query names its parameters on a `-- params: a, b` line (empty: none)")
    return tuple(name.strip() for name in found.group(1).split(",") if name.strip())


@functools.cache
def queries() -> dict[str, Query]:
    """Every query of ``queries/``, by name."""
    folder = resources.files(__name__) / "queries"
    found = {}
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        if entry.name.endswith(".sql"):
            sql = entry.read_text(encoding="utf-8")
            name = entry.name.removesuffix(".sql")
            found[name] = Query(name, sql, read_params(sql))
    return found


def query(name: str) -> Query:
    return queries()[name]


def parameters(names: tuple[str, ...], values: Mapping[str, Any]) -> list[Any]:
    """The values of ``names`` in order (positional ``?``)."""
    missing = [name for name in names if name not in values]
    if missing:
        raise ValueError(f"no value for the query parameters {missing}")
    return [values[name] for name in names]


def athena_literal(value: Any) -> str:
    """``value`` as an Athena execution parameter: SQL literal text (``'text'``, ``NULL``, ``12``)."""
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, int | float):
        return repr(value)
    return "'" + str(value).replace("'", "''") + "'"


def topic_pattern(topic: str | None) -> str:
    """The ``LIKE`` pattern of one topic (its ``_`` taken literally), or of every topic."""
    if topic is None:
        return "%"
    return topic.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


_SINCE = re.compile(r"^\s*(\d+)\s*([smhdw])\s*$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_since(text: str, now: datetime) -> datetime:
    """``7d``, ``24h``, ``90m``, ``2w`` before ``now``, or an ISO date or time (UTC unless it says); UTC.

    Raises
    ------
    InvalidInput
        Anything else, or a time after ``now``.
    """
    relative = _SINCE.match(text)
    if relative is not None:
        since = now - timedelta(**{_UNITS[relative.group(2)]: int(relative.group(1))})
    else:
        try:
            since = datetime.fromisoformat(text.strip())
        except ValueError:
            raise InvalidInput(
                f"invalid --since {text!r}: expected a duration (7d, 24h, 90m, 2w) or an ISO date or time "
                "(2025-06-01, 2025-06-01T12:00)"
            ) from None
        since = since.replace(tzinfo=UTC) if since.tzinfo is None else since.astimezone(UTC)
    if since > now:
        raise InvalidInput(f"--since {text!r} is in the future")
    return since


def window(since: datetime, topic: str | None) -> dict[str, Any]:
    """The parameters every query takes: ``since``, ``since_date``, ``runs_since_date`` (a day earlier: a
    run that committed after ``since`` may have started the day before) and ``topic``."""
    since = since.astimezone(UTC)
    return {
        "since": since.strftime("%Y-%m-%d %H:%M:%S.") + f"{since.microsecond // 1000:03d}",
        "since_date": since.strftime("%Y-%m-%d"),
        "runs_since_date": (since - timedelta(days=1)).strftime("%Y-%m-%d"),
        "topic": topic_pattern(topic),
    }


def jsonable(value: Any) -> Any:
    """A query's value as JSON: times as ISO text in UTC (``...Z``; naive ones are UTC), lists by item."""
    if isinstance(value, dt.datetime):
        if value.tzinfo is not None:
            value = value.astimezone(UTC).replace(tzinfo=None)
        return value.isoformat(timespec="milliseconds") + "Z"
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    return value
