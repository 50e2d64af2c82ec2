"""The payments questions in Athena (examples/payments/athena.py, athena.yaml): the committed template is the
generated one, its named queries are the query files' text, its tables' columns are what the export of the
topic payment_changes writes (checked on a Parquet file written by leanops' own writer from a change item of
the store), partition projection matches the export's folders, and cfn-lint passes it.
"""

from __future__ import annotations

import io
import re
import subprocess
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
import yaml
from boto3.dynamodb.types import TypeDeserializer, TypeSerializer
from leanopsctl.analytics.athena import (
    OUTPUT_DATABASE,
    OUTPUT_WORKGROUP,
    AthenaQueries,
    named_query_output,
    named_query_resource,
)
from leanopsctl.deploy.analytics import glue_type
from leanopsctl.local.template import load_yaml

from examples.payments import Change, Method, PaymentStore, Status
from examples.payments import athena as generator
from examples.payments.reports import CHANGE_SCHEMA, CURRENT_SCHEMA, questions
from leanops.config import PARTITION_FOLDER, load_topics
from leanops.data.dynamodb_source import plain
from leanops.data.files import DAY_FOLDER
from leanops.schema import arrow_type, conform, merge_declared, write_parquet

REPO = Path(__file__).resolve().parents[2]
TEMPLATE = REPO / "examples" / "payments" / "athena.yaml"
TOPICS = REPO / "examples" / "payments" / "topics.yaml"
QUERIES = REPO / "examples" / "payments" / "queries"
CFN_LINT = REPO / ".venv" / "deploy" / "bin" / "cfn-lint"


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    """The committed template, CloudFormation's short tags read as their long forms (``{"Ref": ...}``)."""
    return load_yaml(TEMPLATE)


def _table(template: dict[str, Any], name: str) -> dict[str, Any]:
    [found] = [
        r["Properties"]["TableInput"]
        for r in template["Resources"].values()
        if r["Type"] == "AWS::Glue::Table" and r["Properties"]["TableInput"]["Name"] == name
    ]
    return found


def _columns(table: dict[str, Any]) -> dict[str, str]:
    return {c["Name"]: c["Type"] for c in table["StorageDescriptor"]["Columns"]}


def _sub(value: Any) -> str:
    """A ``!Sub`` text as Athena gets it: ``${!x}`` is CloudFormation's escape of a literal ``${x}``."""
    assert isinstance(value, dict) and set(value) == {"Fn::Sub"}, value
    text = value["Fn::Sub"]
    assert isinstance(text, str), text
    return text.replace("${!", "${")


# --- generated, and current -------------------------------------------------------------------------------


def test_the_committed_template_is_current():
    lines: list[str] = []
    assert generator.main(["--check"], out=lines.append) == 0, lines


def test_check_finds_a_stale_template_and_writing_makes_it_current(tmp_path):
    path = tmp_path / "athena.yaml"
    assert generator.main(["--check", "--template", str(path)], out=lambda _: None) == 1  # missing
    path.write_text("Resources: {}\n")
    assert generator.main(["--check", "--template", str(path)], out=lambda _: None) == 1
    assert path.read_text() == "Resources: {}\n"  # --check writes nothing
    assert generator.main(["--template", str(path)], out=lambda _: None) == 0
    assert generator.main(["--check", "--template", str(path)], out=lambda _: None) == 0
    assert path.read_text() == TEMPLATE.read_text()


def test_the_template_parses_with_cloudformation_tags(template):
    assert template["AWSTemplateFormatVersion"] == "2010-09-09"
    assert set(template) >= {"Parameters", "Conditions", "Resources", "Outputs"}
    types = sorted(r["Type"] for r in template["Resources"].values())
    assert types.count("AWS::Glue::Database") == 1
    assert types.count("AWS::Glue::Table") == 2
    assert types.count("AWS::Athena::WorkGroup") == 1
    assert types.count("AWS::Athena::NamedQuery") == len(list(QUERIES.glob("*.sql")))
    # every Ref names a parameter, a resource or a pseudo parameter; every !If a condition
    names = set(template["Parameters"]) | set(template["Resources"])
    for ref in _intrinsics(template, "Ref"):
        assert ref in names or ref.startswith("AWS::"), ref
    for condition, *_ in _intrinsics(template, "Fn::If"):
        assert condition in template["Conditions"], condition


def _intrinsics(value: Any, key: str) -> list[Any]:
    if isinstance(value, dict):
        found = [value[key]] if key in value and len(value) == 1 else []
        return found + [x for v in value.values() for x in _intrinsics(v, key)]
    if isinstance(value, list):
        return [x for v in value for x in _intrinsics(v, key)]
    return []


def test_the_parameters_take_the_exports_uri_and_refuse_others(template):
    parameters = template["Parameters"]
    export = re.compile(parameters["ExportUri"]["AllowedPattern"])
    assert "Default" not in parameters["ExportUri"]  # required
    for good in ("s3://bucket/prefix/payment_changes", "s3://my.bucket-1/payment_changes", "s3://bkt"):
        assert export.fullmatch(good), good
    for bad in (
        "s3://bucket/prefix/payment_changes/",  # the template adds the /
        "https://bucket.s3.amazonaws.com/payment_changes",
        "s3://Bucket/payment_changes",
        "s3://bucket//payment_changes",
        "s3://bucket/${AWS::Region}",
        "",
    ):
        assert not export.fullmatch(bad), bad
    for optional in ("CurrentUri", "ResultsUri"):
        pattern = re.compile(parameters[optional]["AllowedPattern"])
        assert parameters[optional]["Default"] == ""
        assert pattern.fullmatch("") and pattern.fullmatch("s3://bucket/somewhere")
        assert not pattern.fullmatch("s3://bucket/somewhere/")
    first = re.compile(parameters["FirstDate"]["AllowedPattern"])
    assert first.fullmatch(parameters["FirstDate"]["Default"]) and first.fullmatch("2026-11-30")
    assert not first.fullmatch("2026-13-01") and not first.fullmatch("30/11/2026")
    shards = parameters["Shards"]
    topic = load_topics(TOPICS).topics["payment_changes"]
    assert shards["Default"] == len(topic.partitions) == 8
    assert shards["MinValue"] == 1


# --- the named queries ------------------------------------------------------------------------------------


def test_each_named_query_is_its_files_text(template):
    files = sorted(QUERIES.glob("*.sql"))
    assert {path.stem for path in files} == set(questions())
    resources = template["Resources"]
    for path in files:
        query = resources[named_query_resource(path.stem)]
        assert query["Type"] == "AWS::Athena::NamedQuery"
        props = query["Properties"]
        assert props["QueryString"] == path.read_text(encoding="utf-8"), path.name
        assert props["Name"] == f"payments-{path.stem}"
        assert props["Database"] == {"Ref": generator.DATABASE}
        assert props["WorkGroup"] == {"Ref": generator.WORKGROUP}
        assert len(props["Description"]) <= 1024
        assert template["Outputs"][named_query_output(path.stem)]["Value"] == {
            "Ref": named_query_resource(path.stem)
        }


def test_the_queries_read_the_templates_tables_and_never_an_unquoted_partition_column(template):
    tables = {
        r["Properties"]["TableInput"]["Name"]
        for r in template["Resources"].values()
        if r["Type"] == "AWS::Glue::Table"
    }
    assert tables == {generator.CHANGES_TABLE, generator.CURRENT_TABLE}
    # `date` is reserved in Athena's DDL and a type name in its SQL: a query must quote it ("date"), as it
    # does "at"; the type in CAST(... AS DATE) is no column.
    partition = re.compile(r'(?<![\w"])(?<!AS )(date|part)(?![\w"(])', re.IGNORECASE)
    for name, question in questions().items():
        read = set(re.findall(r"\b(?:FROM|JOIN)\s+([a-z_]+)", question.sql))
        ctes = set(re.findall(r"\b([a-z_]+) AS \(", question.sql))
        assert read - ctes <= tables and read - ctes, (name, read - ctes)
        body = "\n".join(line for line in question.sql.splitlines() if not line.lstrip().startswith("--"))
        assert not partition.search(body), (name, partition.search(body))
        assert body.count("?") == len(question.params), name  # one ExecutionParameter per placeholder
    assert "payments_current" in questions()["reconciliation"].sql


def test_leanops_runs_a_named_query_from_the_stacks_outputs(template):
    # The outputs are named as leanops' own stack's: its Athena runner finds the query, database and
    # workgroup, and passes the question's parameters in order.
    outputs = {key: f"id-of-{value['Value']['Ref']}" for key, value in template["Outputs"].items()}
    assert {OUTPUT_DATABASE, OUTPUT_WORKGROUP} <= set(outputs)
    client = _FakeAthena({f"id-of-{named_query_resource(n)}": q.sql for n, q in questions().items()})
    athena = AthenaQueries.from_outputs(client, outputs, "payments-analytics")
    rows = athena.run("failed_above", {"min_amount": 50_000})
    assert rows == [{"payment_id": "p06", "amount_cents": 90_000}]
    [started] = client.started
    assert started["QueryString"] == (QUERIES / "failed_above.sql").read_text(encoding="utf-8")
    assert started["ExecutionParameters"] == ["50000"]
    assert started["QueryExecutionContext"] == {"Database": f"id-of-{generator.DATABASE}"}
    assert started["WorkGroup"] == f"id-of-{generator.WORKGROUP}"
    athena.run("settlement_time", {"method": "ACH"})
    assert client.started[-1]["ExecutionParameters"] == ["'ACH'"]


class _FakeAthena:
    """Just what :class:`AthenaQueries` calls: named queries by id, and every execution succeeding with one
    row."""

    def __init__(self, named: dict[str, str]) -> None:
        self.named = named
        self.started: list[dict[str, Any]] = []

    def get_named_query(self, NamedQueryId: str) -> dict[str, Any]:
        return {"NamedQuery": {"QueryString": self.named[NamedQueryId]}}

    def start_query_execution(self, **request: Any) -> dict[str, Any]:
        self.started.append(request)
        return {"QueryExecutionId": f"exec-{len(self.started)}"}

    def get_query_execution(self, QueryExecutionId: str) -> dict[str, Any]:
        return {"QueryExecution": {"Status": {"State": "SUCCEEDED"}}}

    def get_paginator(self, operation: str) -> Any:
        assert operation == "get_query_results"
        columns = [{"Name": "payment_id", "Type": "varchar"}, {"Name": "amount_cents", "Type": "bigint"}]
        header = {"Data": [{"VarCharValue": "payment_id"}, {"VarCharValue": "amount_cents"}]}
        row = {"Data": [{"VarCharValue": "p06"}, {"VarCharValue": "90000"}]}
        page = {"ResultSet": {"ResultSetMetadata": {"ColumnInfo": columns}, "Rows": [header, row]}}

        class _Pages:
            def paginate(self, **_: Any) -> list[dict[str, Any]]:
                return [page]

        return _Pages()


# --- the tables -------------------------------------------------------------------------------------------


def _exported_parquet_schema() -> Any:
    """The schema of a Parquet file the export writes: a change item of the store (the create's: no
    from_status, no error code, so those columns hold only nulls), through DynamoDB and the dynamodb source,
    conformed to the topic's declared schema and written by leanops' Parquet writer."""
    change = Change(
        shard=3,
        sk="1764540000000#pay-1#000001",
        payment_id="pay-1",
        from_status=None,
        to_status=Status("CREATED"),
        version=1,
        at_ms=1_764_540_000_000,
        error_code=None,
        fee_type="filing",
        amount_cents=12_500,
        currency="USD",
        method=Method("ACH"),
        request_id="req-1",
    )
    item = PaymentStore(None, "payments")._change_item(change)
    serializer, deserializer = TypeSerializer(), TypeDeserializer()
    record = {name: plain(deserializer.deserialize(serializer.serialize(v))) for name, v in item.items()}
    declared = load_topics(TOPICS).topics["payment_changes"].schema
    conformed = conform([record], merge_declared(None, declared))
    assert not conformed.rejected, conformed.rejected
    out = io.BytesIO()
    write_parquet(out, conformed.rows, conformed.schema, "snappy")
    return pq.read_schema(io.BytesIO(out.getvalue()))


def test_the_changes_tables_columns_are_what_the_export_writes(template):
    columns = _columns(_table(template, generator.CHANGES_TABLE))
    written = _exported_parquet_schema()
    assert columns == {field.name: glue_type(field.type) for field in written}
    # the columns the questions read (reports.CHANGE_SCHEMA) with their types, and the topic's declared ones
    for field in CHANGE_SCHEMA:
        assert columns[field.name] == glue_type(field.type), field.name
    declared = load_topics(TOPICS).topics["payment_changes"].schema
    assert declared is not None
    for column in declared.columns:
        assert columns[column.name] == glue_type(arrow_type(column.type)), column.name
    assert columns["at"] == "timestamp" and columns["amount_cents"] == "bigint"
    assert {"pk", "sk", "currency"} <= set(columns)


def test_the_current_payments_table_is_what_the_reconciliation_reads(template):
    table = _table(template, generator.CURRENT_TABLE)
    assert _columns(table) == {field.name: glue_type(field.type) for field in CURRENT_SCHEMA}
    assert _columns(table) == {"payment_id": "string", "status": "string", "version": "bigint"}
    assert "PartitionKeys" not in table
    location = table["StorageDescriptor"]["Location"]["Fn::If"]
    assert location[0] == "HasCurrentUri" and _sub(location[1]) == "${CurrentUri}/"


def test_partition_projection_matches_the_exports_folders(template):
    table = _table(template, generator.CHANGES_TABLE)
    keys = {k["Name"]: k["Type"] for k in table["PartitionKeys"]}
    assert keys == {"part": "int", "date": "string"}
    assert not set(keys) & set(_columns(table))  # partition columns come from the path only
    parameters = table["Parameters"]
    assert parameters["projection.enabled"] == "true"
    projected = {
        name.split(".")[1] for name in parameters if name.startswith("projection.") and name.count(".") > 1
    }
    assert projected == set(keys)
    location = _sub(parameters["storage.location.template"])
    assert location == "${ExportUri}/part=${part}/date=${date}/"
    assert set(re.findall(r"\$\{(\w+)\}", location)) == set(keys) | {"ExportUri"}
    # the export's layout: <sink>/part=<shard>/date=YYYY-MM-DD/ (leanops' partition and day folders)
    assert location.startswith(f"${{ExportUri}}/{PARTITION_FOLDER}${{part}}/")
    assert DAY_FOLDER.fullmatch(location.split("/", 2)[2].replace("${date}", "2026-11-30"))
    assert _sub(table["StorageDescriptor"]["Location"]) == "${ExportUri}/"
    # part: the shards 0 .. Shards-1 (the Shards-th item of the list, CloudFormation having no arithmetic)
    assert parameters["projection.part.type"] == "integer"
    text, variables = parameters["projection.part.range"]["Fn::Sub"]
    assert text == "0,${Last}"
    index, values = variables["Last"]["Fn::Select"]
    assert index == {"Ref": "Shards"}
    maximum = template["Parameters"]["Shards"]["MaxValue"]
    assert len(values) == maximum + 1
    assert all(values[shards] == str(shards - 1) for shards in range(1, maximum + 1))
    # date: every UTC day from FirstDate to today, as the folders spell it
    assert parameters["projection.date.type"] == "date"
    assert parameters["projection.date.format"] == "yyyy-MM-dd"
    assert _sub(parameters["projection.date.range"]) == "${FirstDate},NOW"
    assert (parameters["projection.date.interval"], parameters["projection.date.interval.unit"]) == (
        "1",
        "DAYS",
    )


def test_the_workgroup_enforces_its_results_and_a_scan_cutoff(template):
    workgroup = template["Resources"][generator.WORKGROUP]["Properties"]
    config = workgroup["WorkGroupConfiguration"]
    assert config["EnforceWorkGroupConfiguration"] is True
    assert config["BytesScannedCutoffPerQuery"] == 10 * 1024**3
    assert config["EngineVersion"] == {"SelectedEngineVersion": "Athena engine version 3"}
    condition, given, default = config["ResultConfiguration"]["OutputLocation"]["Fn::If"]
    assert condition == "HasResultsUri" and _sub(given) == "${ResultsUri}/"
    text, variables = default["Fn::Sub"]
    assert text == "s3://${Bucket}/athena-results/"
    assert variables["Bucket"] == {"Fn::Select": [2, {"Fn::Split": ["/", {"Ref": "ExportUri"}]}]}
    assert template["Outputs"][OUTPUT_WORKGROUP]["Value"] == {"Ref": generator.WORKGROUP}
    assert template["Outputs"][OUTPUT_DATABASE]["Value"] == {"Ref": generator.DATABASE}


def test_the_yaml_has_no_anchors_and_reads_back_as_generated():
    text = TEMPLATE.read_text(encoding="utf-8")
    assert not re.search(r"[&*]id\d+", text)

    class Tagged(yaml.SafeLoader):
        pass

    Tagged.add_multi_constructor("!", lambda loader, suffix, node: suffix)
    assert yaml.load(text, Loader=Tagged)["Resources"].keys() == generator.resources().keys()


# --- cfn-lint (installed by `make deps`, as for tests/deploy) ----------------------------------------------


def test_cfn_lint_passes_the_template():
    if not CFN_LINT.exists():
        pytest.fail(f"{CFN_LINT.relative_to(REPO)} is missing: run `make deps`")
    done = subprocess.run(
        [str(CFN_LINT), "--", str(TEMPLATE)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
