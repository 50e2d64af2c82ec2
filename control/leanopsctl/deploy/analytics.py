"""The template's analytics resources, generated: Glue tables over the archive and Athena's named queries.

``python -m leanopsctl.deploy.analytics [--check]`` writes, between the lines ``# BEGIN generated analytics``
and ``# END generated analytics`` of ``template.yaml``:

- a Glue database named after the stack (``-`` as ``_``: Athena's names have no ``-``);
- one external Parquet table per archive kind (``leanops_<kind>``, every kind of
  :data:`leanops.archive.SCHEMAS` with its columns, also those no query reads, e.g. ``leanops_unparsed``) at
  ``s3://<archive bucket>/archive/kind=<kind>/``, partitioned by ``date``
  with partition projection (no crawler, no ``MSCK REPAIR``: every day from 2025-01-01 to today is a
  partition, and a query that filters on ``date`` reads only those days);
- an Athena workgroup (results under ``athena-results/`` in the archive bucket, its settings enforced, at
  most 10 GB scanned per query);
- one named query per file of :mod:`leanopsctl.analytics`'s ``queries/``, its text the file's (the text
  DuckDB runs locally).

``--check`` exits 1 when the block in the template differs from what would be written.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
import yaml

from leanops import archive
from leanopsctl.analytics import TABLES, Query, queries
from leanopsctl.analytics.athena import named_query_resource

TEMPLATE_PATH = Path(__file__).resolve().parents[3] / "template.yaml"
BEGIN = "  # BEGIN generated analytics (python -m leanopsctl.deploy.analytics; do not edit by hand)"
END = "  # END generated analytics"
DATABASE = "AnalyticsDatabase"
WORKGROUP = "AnalyticsWorkGroup"
#: Athena stops a query that would scan more (bytes): the archive is compressed Parquet, read by column.
BYTES_SCANNED_CUTOFF = 10 * 1024**3
#: The first day partition projection knows (the archive is younger).
FIRST_DAY = "2025-01-01"


class Sub(str):
    """``!Sub text``."""


class Ref(str):
    """``!Ref name``."""


class Join(list[Any]):
    """``!Join [delimiter, [values]]``."""


class Split(list[Any]):
    """``!Split [delimiter, text]``."""


class Flow(dict[str, Any]):
    """A mapping written on one line (``{Name: topic, Type: string}``)."""


class Literal(str):
    """A string written as a YAML literal block (``|``), line by line as it is."""


class _Dumper(yaml.SafeDumper):
    """Written as the rest of the template is: lists indented under their key, ``!Ref Name`` unquoted."""

    def increase_indent(self, flow: bool = False, indentless: bool = False) -> None:
        super().increase_indent(flow, False)

    def choose_scalar_style(self) -> str:
        event = self.event
        if isinstance(event, yaml.ScalarEvent) and event.tag in ("!Ref", "!Sub") and not event.style:
            if self.analysis is None:
                self.analysis = self.analyze_scalar(event.value)
            if self.analysis.allow_flow_plain if self.flow_level else self.analysis.allow_block_plain:
                return ""
        return str(super().choose_scalar_style())


_Dumper.add_representer(Sub, lambda dumper, value: dumper.represent_scalar("!Sub", str(value)))
_Dumper.add_representer(Ref, lambda dumper, value: dumper.represent_scalar("!Ref", str(value)))
_Dumper.add_representer(
    Join, lambda dumper, value: dumper.represent_sequence("!Join", value, flow_style=True)
)
_Dumper.add_representer(
    Split, lambda dumper, value: dumper.represent_sequence("!Split", value, flow_style=True)
)
_Dumper.add_representer(
    Flow, lambda dumper, value: dumper.represent_mapping("tag:yaml.org,2002:map", value, flow_style=True)
)
_Dumper.add_representer(
    Literal, lambda dumper, value: dumper.represent_scalar("tag:yaml.org,2002:str", str(value), style="|")
)


def glue_type(data_type: pa.DataType) -> str:
    """The Glue (Hive) type of an archive column."""
    if pa.types.is_timestamp(data_type):
        return "timestamp"
    if pa.types.is_int64(data_type) or pa.types.is_int32(data_type):
        return "bigint"
    if pa.types.is_floating(data_type):
        return "double"
    if pa.types.is_string(data_type) or pa.types.is_large_string(data_type):
        return "string"
    if pa.types.is_boolean(data_type):
        return "boolean"
    if pa.types.is_list(data_type) or pa.types.is_large_list(data_type):
        return f"array<{glue_type(data_type.value_type)}>"
    raise ValueError(f"no Glue type for the archive's column type {data_type}")


def table_resource(kind: str) -> str:
    return f"{kind.capitalize()}ArchiveTable"


def table_name(kind: str) -> str:
    """The Glue table of an archive kind: the queries' (:data:`TABLES`), else ``leanops_<kind>``."""
    return TABLES.get(kind, f"leanops_{kind}")


def _table(kind: str) -> dict[str, Any]:
    location = f"s3://${{ArchiveBucket}}/archive/kind={kind}/"
    return {
        "Type": "AWS::Glue::Table",
        "Properties": {
            "CatalogId": Ref("AWS::AccountId"),
            "DatabaseName": Ref(DATABASE),
            "TableInput": {
                "Name": table_name(kind),
                "Description": f"The archive's {kind} records (leanops.archive): Parquet, a folder a day.",
                "TableType": "EXTERNAL_TABLE",
                "Parameters": {
                    "classification": "parquet",
                    "EXTERNAL": "TRUE",
                    "projection.enabled": "true",
                    "projection.date.type": "date",
                    "projection.date.format": "yyyy-MM-dd",
                    "projection.date.range": f"{FIRST_DAY},NOW",
                    "projection.date.interval": "1",
                    "projection.date.interval.unit": "DAYS",
                    # ${!date} is written ${date}: Athena fills it in, not CloudFormation.
                    "storage.location.template": Sub(location + "date=${!date}/"),
                },
                "PartitionKeys": [Flow(Name="date", Type="string")],
                "StorageDescriptor": {
                    "Location": Sub(location),
                    "InputFormat": "org.apache.hadoop.hive.ql.io.parquet.MapredParquetInputFormat",
                    "OutputFormat": "org.apache.hadoop.hive.ql.io.parquet.MapredParquetOutputFormat",
                    "SerdeInfo": Flow(
                        SerializationLibrary="org.apache.hadoop.hive.ql.io.parquet.serde.ParquetHiveSerDe"
                    ),
                    "Columns": [
                        Flow(Name=field.name, Type=glue_type(field.type)) for field in archive.SCHEMAS[kind]
                    ],
                },
            },
        },
    }


def resources() -> dict[str, Any]:
    """The generated resources, by logical id."""
    generated: dict[str, Any] = {
        DATABASE: {
            "Type": "AWS::Glue::Database",
            "Properties": {
                "CatalogId": Ref("AWS::AccountId"),
                "DatabaseInput": {
                    "Name": Join(["_", Split(["-", Ref("AWS::StackName")])]),
                    "Description": f"The leanops archive: {', '.join(archive.SCHEMAS)} records (Parquet).",
                },
            },
        },
    }
    for kind in archive.SCHEMAS:
        generated[table_resource(kind)] = _table(kind)
    generated[WORKGROUP] = {
        "Type": "AWS::Athena::WorkGroup",
        "Properties": {
            "Name": Sub("${AWS::StackName}-analytics"),
            "Description": "leanops report --stack: the archive's named queries.",
            "RecursiveDeleteOption": True,
            "WorkGroupConfiguration": workgroup_configuration(Sub("s3://${ArchiveBucket}/athena-results/")),
        },
    }
    for name, found in queries().items():
        generated[named_query_resource(name)] = named_query(f"leanops-{name}", found, DATABASE, WORKGROUP)
    return generated


def workgroup_configuration(results: Any) -> dict[str, Any]:
    """An Athena workgroup's settings, enforced: engine 3, results at ``results`` (SSE-S3), a scan cutoff."""
    return {
        "EnforceWorkGroupConfiguration": True,
        "PublishCloudWatchMetricsEnabled": True,
        "BytesScannedCutoffPerQuery": BYTES_SCANNED_CUTOFF,
        "EngineVersion": Flow(SelectedEngineVersion="Athena engine version 3"),
        "ResultConfiguration": {
            "OutputLocation": results,
            "EncryptionConfiguration": Flow(EncryptionOption="SSE_S3"),
        },
    }


def named_query(name: str, found: Query, database: str, workgroup: str) -> dict[str, Any]:
    """The named query resource of a query file: its text, as DuckDB runs it locally."""
    return {
        "Type": "AWS::Athena::NamedQuery",
        "Properties": {
            "Name": name,
            "Description": found.description[:1024],
            "Database": Ref(database),
            "WorkGroup": Ref(workgroup),
            "QueryString": Literal(found.sql),
        },
    }


def render() -> str:
    """The generated block's lines (between the markers), indented under ``Resources:``."""
    text = yaml.dump(resources(), Dumper=_Dumper, sort_keys=False, width=10_000, allow_unicode=True)
    return "".join(f"  {line}" if line.strip() else "\n" for line in text.splitlines(keepends=True))


def splice(template: str, block: str) -> str:
    """``template`` with the text between the markers replaced by ``block``."""
    lines = template.splitlines(keepends=True)
    stripped = [line.rstrip("\n") for line in lines]
    if stripped.count(BEGIN) != 1 or stripped.count(END) != 1:
        raise ValueError(f"the template needs exactly one {BEGIN.strip()!r} and one {END.strip()!r} line")
    begin, end = stripped.index(BEGIN), stripped.index(END)
    if end < begin:
        raise ValueError("the template's END generated analytics line comes before its BEGIN line")
    return "".join(lines[: begin + 1]) + block + "".join(lines[end:])


def main(argv: Sequence[str] | None = None, out: Callable[[str], Any] = print) -> int:
    """``python -m leanopsctl.deploy.analytics [--check] [--template PATH]``: 0 written or current, 1 stale
    (``--check``)."""
    parser = argparse.ArgumentParser(
        prog="python -m leanopsctl.deploy.analytics",
        description="Write the Glue tables and Athena named queries into template.yaml's generated block.",
    )
    parser.add_argument("--check", action="store_true", help="only compare: exit 1 when the block is stale")
    parser.add_argument("--template", type=Path, default=TEMPLATE_PATH, help="the SAM template")
    args = parser.parse_args(argv)
    current = args.template.read_text(encoding="utf-8")
    wanted = splice(current, render())
    if args.check:
        if wanted != current:
            out(f"{args.template.name}: the generated analytics are stale: run {parser.prog}")
            return 1
        out(f"{args.template.name}'s generated analytics are up to date")
        return 0
    if wanted != current:
        args.template.write_text(wanted, encoding="utf-8")
        out(f"wrote the generated analytics into {args.template}")
    else:
        out(f"{args.template.name}'s generated analytics are up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())
