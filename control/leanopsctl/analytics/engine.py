"""The queries run locally: DuckDB over the archive's Parquet files and the items still in the state table.

Each table a query reads (:data:`leanopsctl.analytics.TABLES`; no other kind of the archive, e.g. its
``unparsed`` records, is ever read) is a view: the archive's files of its kind
(``<root>/kind=<kind>/date=<day>/*.parquet``; none yet: no rows) and the live rows, the state table's items of
that kind turned into rows by :func:`leanops.archive.row` (the rule the archive function writes them by).
The views are the rows as they are, as Athena's tables are: an item can be there twice (archived twice, or
deleted while it was read: archived and live), and the queries themselves count each ``(topic, partition,
key)`` once, so both engines give the same answers. Timestamps are UTC without a zone, as Athena reads them;
``date`` is the UTC day of the kind's own time.

DuckDB takes the queries as Athena (Trino) spells them: the few functions whose names differ are macros
(:data:`TRINO_MACROS`), defined here once.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
from boto3.dynamodb.types import TypeDeserializer

from leanops import archive
from leanops.protocol.dynamodb import BACKFILL_SK_PREFIX
from leanops.protocol.model import TopicRef
from leanops.protocol.table import PARTITION_KEY, SORT_KEY
from leanopsctl.analytics import TABLES, Query, parameters, query, window

#: Trino's names for what DuckDB calls otherwise. approx_percentile is exact here (linear interpolation, as
#: numpy's default); Athena's is an approximation.
TRINO_MACROS = (
    "CREATE OR REPLACE MACRO approx_percentile(x, p) AS quantile_cont(x, p)",
    "CREATE OR REPLACE MACRO regexp_like(s, p) AS regexp_matches(s, p)",
)
#: The archive's folder in a project's local state (``<home>/archive``).
ARCHIVE_FOLDER = "archive"
#: Before the archive's first day (the template's partition projection starts on 2025-01-01).
ARCHIVE_START = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)
#: State-table queries at once while reading live items (each topic's partitions, one kind each).
READERS = 16

_deserializer = TypeDeserializer()


def local_archive_root(home: Path) -> Path:
    """Where the local stack's archive lives: ``<home>/archive``."""
    return home / ARCHIVE_FOLDER


def archive_glob(root: Path, kind: str) -> str | None:
    """The pattern of ``kind``'s archived files under ``root``, or None if there are none yet."""
    folder = root / f"kind={kind}"
    if not any(folder.glob("*/*.parquet")):
        return None
    return str(folder / "*" / "*.parquet")


def prefixes(kinds: Iterable[str]) -> dict[str, str]:
    """The sort-key prefix of each archived kind in ``kinds``."""
    wanted = set(kinds)
    return {kind: prefix for prefix, kind in archive.KINDS.items() if kind in wanted}


def live_items(
    client: Any,
    table: str,
    topics: Iterable[str],
    kinds: Iterable[str],
    *,
    partitions: Mapping[str, Iterable[str]] | None = None,
    readers: int = READERS,
) -> dict[str, list[dict[str, Any]]]:
    """The state table's items of ``kinds`` for ``topics``, their ``partitions`` (by topic) and their
    backfills, by kind: a paginated Query per state and kind on ``begins_with(sk, prefix)`` (plus one per
    topic for its backfills)."""
    wanted = prefixes(kinds)
    names = sorted(set(topics))
    found: dict[str, list[dict[str, Any]]] = {kind: [] for kind in wanted}
    if not wanted or not names:
        return found
    with ThreadPoolExecutor(max_workers=readers) as pool:
        backfills = pool.map(
            lambda name: _query(client, table, TopicRef(name).key, BACKFILL_SK_PREFIX), names
        )
        keys = [
            key
            for name, items in zip(names, backfills, strict=True)
            for key in [
                TopicRef(name).key,
                *(TopicRef(name, str(i[SORT_KEY]).removeprefix(BACKFILL_SK_PREFIX)).key for i in items),
                *(TopicRef(name, p).key for p in (partitions or {}).get(name, ())),
            ]
        ]
        jobs = [(key, kind, prefix) for key in keys for kind, prefix in wanted.items()]
        for (_key, kind, _prefix), items in zip(
            jobs, pool.map(lambda job: _query(client, table, job[0], job[2]), jobs), strict=True
        ):
            found[kind].extend(items)
    return found


def _query(client: Any, table: str, partition_key: str, prefix: str) -> list[dict[str, Any]]:
    pages = client.get_paginator("query").paginate(
        TableName=table,
        KeyConditionExpression="#pk = :pk AND begins_with(#sk, :prefix)",
        ExpressionAttributeNames={"#pk": PARTITION_KEY, "#sk": SORT_KEY},
        ExpressionAttributeValues={":pk": {"S": partition_key}, ":prefix": {"S": prefix}},
    )
    return [
        {name: _deserializer.deserialize(value) for name, value in item.items()}
        for page in pages
        for item in page.get("Items", [])
    ]


def live_table(kind: str, items: Iterable[Mapping[str, Any]]) -> pa.Table:
    """``items`` of ``kind`` as the archive's rows (:func:`leanops.archive.row`)."""
    return archive.table(kind, [archive.row(kind, item) for item in items])


class History:
    """A DuckDB database whose views ``leanops_<kind>`` are the archive under ``root`` (a folder; None: no
    archive) and the live items given, by kind (state-table items, as :func:`live_items` reads them): one
    view for each of ``kinds`` (default: every table a query reads), kinds of :data:`TABLES` only."""

    def __init__(
        self,
        root: Path | None,
        live: Mapping[str, Sequence[Mapping[str, Any]]] | None = None,
        kinds: Iterable[str] | None = None,
    ) -> None:
        wanted = list(TABLES) if kinds is None else sorted(set(kinds))
        unknown = [kind for kind in wanted if kind not in TABLES]
        if unknown:
            raise ValueError(f"no query reads the archive kinds {unknown}: one of {', '.join(TABLES)}")
        self.connection = duckdb.connect(":memory:")
        self.connection.execute("SET TimeZone = 'UTC'")
        for macro in TRINO_MACROS:
            self.connection.execute(macro)
        self._live: dict[str, pa.Table] = {}
        for kind in wanted:
            self._live[kind] = live_table(kind, (live or {}).get(kind, ()))
            self.connection.register(f"_live_{kind}", self._live[kind])
            self.connection.execute(self._view(kind, TABLES[kind], root))

    def _view(self, kind: str, table: str, root: Path | None) -> str:
        schema = archive.SCHEMAS[kind]
        sources = [
            f"SELECT *, strftime({archive.DATE_COLUMNS[kind]}, '%Y-%m-%d') AS \"date\" FROM _live_{kind}"
        ]
        files = archive_glob(root, kind) if root is not None else None
        if files is not None:
            sources.append(
                f"SELECT * EXCLUDE (kind) FROM read_parquet({_literal(files)}, hive_partitioning = true, "
                "union_by_name = true, hive_types = {'date': VARCHAR})"
            )
        columns = [
            f'CAST("{f.name}" AS TIMESTAMP) AS "{f.name}"' if pa.types.is_timestamp(f.type) else f'"{f.name}"'
            for f in schema
        ]
        union = "\nUNION ALL BY NAME\n".join(sources)
        # Every copy of an item: the queries count each once (their `row_number() ... = 1`), as in Athena.
        return f'CREATE OR REPLACE VIEW {table} AS\nSELECT {", ".join(columns)}, "date" FROM (\n{union}\n)'

    def run(self, query: Query, values: Mapping[str, Any]) -> list[dict[str, Any]]:
        """The query's rows as dicts (timestamps naive UTC ``datetime``s)."""
        cursor = self.connection.execute(query.sql, parameters(query.params, values))
        names = [column[0] for column in cursor.description or ()]
        return [dict(zip(names, values, strict=True)) for values in cursor.fetchall()]

    def explain(self, query: Query, values: Mapping[str, Any]) -> str:
        """DuckDB's plan of the query (it parses and binds the SQL against the views)."""
        rows = self.connection.execute("EXPLAIN " + query.sql, parameters(query.params, values)).fetchall()
        return "\n".join(str(row[-1]) for row in rows)

    def rows(self, kind: str, where: str = "TRUE", values: Sequence[Any] = ()) -> list[dict[str, Any]]:
        """The rows of ``kind``'s view matching ``where`` (``?`` parameters in ``values``): every copy of an
        item, as the table holds them (the queries count each item once)."""
        cursor = self.connection.execute(f"SELECT * FROM {TABLES[kind]} WHERE {where}", list(values))
        names = [column[0] for column in cursor.description or ()]
        return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]

    def close(self) -> None:
        self.connection.close()

    def __enter__(self) -> History:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def archived_outputs(root: Path, topic: str, partition: str | None = None) -> list[dict[str, Any]]:
    """The archived output records of ``topic`` (or of its ``partition``, a backfill's id) in the archive
    folder ``root``, by seq: the ``outputs`` query's rows (``committed_at`` a naive UTC datetime). For
    ``leanops output``: the records older than the table's retention. (In AWS, the stack's named query
    ``outputs`` answers the same with the same parameters.)"""
    found = query("outputs")
    with History(root, kinds=found.tables) as history:
        return history.run(found, outputs_values(topic, partition))


def outputs_values(topic: str, partition: str | None, since: dt.datetime = ARCHIVE_START) -> dict[str, Any]:
    """The ``outputs`` query's parameters: one topic (or backfill) since ``since``."""
    return {**window(since, topic), "partition": partition or ""}


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"
