"""The queries run in AWS: a deployed stack's Athena named queries over its archive's Glue tables.

The stack's outputs name the Glue database, the Athena workgroup (results in the archive bucket, at most
10 GB scanned per query) and each named query (:func:`named_query_output`). A query runs as deployed (its
text from ``GetNamedQuery``, so its parameters are the deployed ones), with the values as
``ExecutionParameters``; Athena sees the archive only: items still in the state table are not in it.
"""

from __future__ import annotations

import datetime as dt
import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from leanops.errors import ConfigError, LeanopsError
from leanopsctl.analytics import athena_literal, parameters, read_params

#: The stack outputs naming the Glue database and the Athena workgroup (template.yaml ``Outputs``).
OUTPUT_DATABASE = "GlueDatabaseName"
OUTPUT_WORKGROUP = "AthenaWorkGroupName"
#: Seconds between two looks at a running query, and at most this long in all.
POLL_SECONDS = 1.0
TIMEOUT_SECONDS = 600.0


def camel(name: str) -> str:
    """``recovery`` -> ``Recovery``, ``runs_per_day`` -> ``RunsPerDay``."""
    return "".join(part.capitalize() for part in name.split("_"))


def named_query_resource(name: str) -> str:
    """The template's logical id of the named query of ``queries/<name>.sql``."""
    return f"{camel(name)}NamedQuery"


def named_query_output(name: str) -> str:
    """The stack output holding that named query's id."""
    return f"{named_query_resource(name)}Id"


@dataclass(frozen=True)
class AthenaQueries:
    """A stack's Athena: its workgroup and database, and the ids of its named queries by name."""

    client: Any
    database: str
    workgroup: str
    outputs: Mapping[str, str]
    sleep: Callable[[float], None] = time.sleep
    timeout: float = TIMEOUT_SECONDS

    @classmethod
    def from_outputs(cls, client: Any, outputs: Mapping[str, str], description: str) -> AthenaQueries:
        missing = [key for key in (OUTPUT_DATABASE, OUTPUT_WORKGROUP) if key not in outputs]
        if missing:
            raise ConfigError(
                f"{description} has no {' or '.join(missing)} output: deploy this version of the template "
                "first (`sam build && sam deploy`)"
            )
        return cls(client, outputs[OUTPUT_DATABASE], outputs[OUTPUT_WORKGROUP], outputs)

    def run(self, name: str, values: Mapping[str, Any]) -> list[dict[str, Any]]:
        """Run the named query ``name`` with ``values``; its rows as dicts (typed by Athena's columns)."""
        output = named_query_output(name)
        if output not in self.outputs:
            raise ConfigError(
                f"the stack has no {output} output: deploy this version of the template first "
                "(`sam build && sam deploy`)"
            )
        sql = self.client.get_named_query(NamedQueryId=self.outputs[output])["NamedQuery"]["QueryString"]
        started = self.client.start_query_execution(
            QueryString=sql,
            QueryExecutionContext={"Database": self.database},
            WorkGroup=self.workgroup,
            ExecutionParameters=[athena_literal(v) for v in parameters(read_params(sql), values)],
        )
        execution_id = started["QueryExecutionId"]
        self._wait(execution_id)
        return self._results(execution_id)

    def _wait(self, execution_id: str) -> None:
        deadline = time.monotonic() + self.timeout
        while True:
            status = self.client.get_query_execution(QueryExecutionId=execution_id)["QueryExecution"][
                "Status"
            ]
            state = status["State"]
            if state == "SUCCEEDED":
                return
            if state in ("FAILED", "CANCELLED"):
                reason = status.get("StateChangeReason") or status.get("AthenaError", {}).get("ErrorMessage")
                raise LeanopsError(f"Athena query {execution_id} {state.lower()}: {reason}")
            if time.monotonic() > deadline:
                raise LeanopsError(
                    f"Athena query {execution_id} still {state.lower()} after {self.timeout:.0f}s"
                )
            self.sleep(POLL_SECONDS)

    def _results(self, execution_id: str) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = []
        names: list[str] = []
        types: list[str] = []
        for page in self.client.get_paginator("get_query_results").paginate(QueryExecutionId=execution_id):
            result = page["ResultSet"]
            data = result.get("Rows", [])
            if not names:
                columns = result.get("ResultSetMetadata", {}).get("ColumnInfo", [])
                names = [c["Name"] for c in columns]
                types = [c.get("Type", "varchar") for c in columns]
                data = data[1:]  # a SELECT's first row holds the column names
            for row in data:
                cells = [cell.get("VarCharValue") for cell in row.get("Data", [])]
                rows.append(
                    {name: typed(cell, kind) for name, cell, kind in zip(names, cells, types, strict=False)}
                )
        return rows


def typed(text: str | None, kind: str) -> Any:
    """One result cell (Athena gives text) as the column's type says."""
    if text is None:
        return None
    kind = kind.lower()
    if kind in ("bigint", "integer", "int", "smallint", "tinyint"):
        return int(text)
    if kind in ("double", "float", "real") or kind.startswith("decimal"):
        return float(text)
    if kind == "boolean":
        return text.lower() == "true"
    if kind.startswith("timestamp"):
        return dt.datetime.fromisoformat(text.removesuffix(" UTC"))
    if kind == "date":
        return dt.date.fromisoformat(text)
    if kind in ("array", "json"):
        return _array(text)
    return text


def _array(text: str) -> Any:
    """Athena writes an array as ``[a, b]``: a list of its items' text (items holding ``, `` are split)."""
    try:
        return json.loads(text)
    except ValueError:
        inner = text.strip()
        if not (inner.startswith("[") and inner.endswith("]")):
            return text
        inner = inner[1:-1]
        return [] if not inner else inner.split(", ")
