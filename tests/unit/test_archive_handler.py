"""The archive's stream consumer end to end (leanops.handlers.archive): records are delivered as Lambda's
event source mapping delivers them (a shard's records in order, each batch starting at the checkpoint; a
retry from the first record the partial-batch response names; bisected halves; duplicate deliveries;
shards in any order), to a local folder and to S3 (moto), and the archive is read back with
pyarrow.dataset and DuckDB. Records come from the AWS-shaped fixture (see test_archive.py).
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import boto3
import duckdb
import pyarrow.dataset as ds
import pytest
from leanopsctl.local.invocation import LambdaContext
from moto import mock_aws

from leanops import archive
from leanops.errors import ConfigError
from leanops.handlers import archive as archive_handler
from tests.unit.test_archive import (
    KIND_ORDER,
    fixture_records,
    group_objects,
    history_items,
    put_failures,
    read_back,
    sequence_numbers,
    shard_records,
)

__all__ = ["put_failures"]  # the fixture, shared with test_archive.py

N = 24  # items of each kind in a history (outputs: every third an override)
BUCKET, PREFIX = "leanops-archive", "archive/"


def context() -> LambdaContext:
    """What Lambda passes the handler (the local runtime's context: the attributes Powertools reads)."""
    return LambdaContext(
        function_name="ArchiveFunction",
        function_version="$LATEST",
        invoked_function_arn="arn:aws:lambda:us-east-1:123456789012:function:ArchiveFunction",
        memory_limit_in_mb=1024,
        aws_request_id="8f5c4b1e-2d3a-4e5f-9a0b-1c2d3e4f5a6b",
        log_group_name="/aws/lambda/ArchiveFunction",
        log_stream_name="2026/04/10/[$LATEST]0123456789abcdef",
        deadline=time.monotonic() + 120,
    )


def deliver(records: list[dict[str, Any]]) -> list[str]:
    """One invocation with ``records``: the sequence numbers the partial-batch response hands back."""
    response = archive_handler.handler({"Records": records}, context())
    return [failure["itemIdentifier"] for failure in response["batchItemFailures"]]


def from_first_failure(records: list[dict[str, Any]], failed: list[str]) -> list[dict[str, Any]]:
    """What Lambda delivers next: the records from the lowest sequence number the response named."""
    numbers = sequence_numbers(records)
    return records[numbers.index(min(failed, key=int)) :]


@pytest.fixture(params=["local", "s3"])
def archive_folder(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Callable[[], Path]]:
    """Points LEANOPS_ARCHIVE at a local folder or an S3 prefix (moto); yields how to get a local folder
    holding the archive as it is now (S3: its objects downloaded, keys as paths)."""
    if request.param == "local":
        root = tmp_path / "archive"
        monkeypatch.setenv(archive.ENV_ARCHIVE, str(root))
        yield lambda: root
        return
    with mock_aws():
        client = boto3.client("s3", region_name="us-east-1")
        client.create_bucket(Bucket=BUCKET)
        monkeypatch.setenv(archive.ENV_ARCHIVE, f"s3://{BUCKET}/{PREFIX}")

        def download() -> Path:
            copy = tmp_path / f"download-{time.monotonic_ns()}"
            for page in client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=PREFIX):
                for entry in page.get("Contents", ()):
                    path = copy / entry["Key"][len(PREFIX) :]
                    path.parent.mkdir(parents=True, exist_ok=True)
                    path.write_bytes(client.get_object(Bucket=BUCKET, Key=entry["Key"])["Body"].read())
            return copy

        yield download


def two_shards(n: int = N) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """TTL deletions of ``n`` items of each kind, over two topics whose keys hash to two shards."""
    return (
        shard_records(list(history_items(n // 2, "vehicle_telemetry")), 0),
        shard_records(list(history_items(n - n // 2, "fleet_positions")), 1),
    )


def assert_archived_exactly(folder: Path, *shards: list[dict[str, Any]]) -> None:
    """Every record of ``shards`` archived once, nothing else (those that cannot be rows under
    kind=unparsed): read with pyarrow.dataset and DuckDB."""
    expected = {kind: [] for kind in (*KIND_ORDER, archive.UNPARSED)}  # type: dict[str, list[str]]
    for record in (record for shard in shards for record in shard):
        entry = archive.archived(record)
        expected[entry.kind].append(entry.row["sequence_number"])
    found = read_back(folder)
    for kind in expected:
        assert sorted(found[kind]) == sorted(expected[kind]), kind
    counts = duckdb.sql(
        f"SELECT kind, count(*), count(DISTINCT sequence_number) "
        f"FROM read_parquet('{folder}/*/*/*.parquet', hive_partitioning = true, union_by_name = true) "
        "GROUP BY kind"
    ).fetchall()
    assert {kind: (rows, distinct) for kind, rows, distinct in counts} == {
        kind: (len(numbers), len(numbers)) for kind, numbers in expected.items() if numbers
    }


def test_redelivered_and_reordered_batches_archive_each_record_exactly_once(
    archive_folder: Callable[[], Path],
) -> None:
    shard_a, shard_b = two_shards()
    half = len(shard_a) // 2 + 1  # not on a group boundary: kinds interleave
    first_half, second_half = shard_a[:half], shard_a[half:]
    deliveries = [
        shard_b,  # shard B before shard A (shards are independent)
        first_half,
        shard_a,  # the first half again, reaching further (the checkpoint's move was lost)
        first_half,  # bisected after a function error: the first half, then the second
        second_half,
        shard_b,  # the same batch again
    ]
    for records in deliveries:
        assert deliver(records) == []
    assert_archived_exactly(archive_folder(), shard_a, shard_b)
    assert Counter(record_kind(r) for r in shard_a + shard_b) == {kind: N for kind in KIND_ORDER}


def record_kind(record: dict[str, Any]) -> str | None:
    return archive.kind_of(record["dynamodb"]["Keys"]["sk"]["S"])


def test_a_failed_write_is_retried_from_its_groups_first_record_and_completes_the_archive(
    archive_folder: Callable[[], Path], put_failures: dict[str, set[int]]
) -> None:
    shard_a, shard_b = two_shards()
    entries = [archive.archived(record) for record in shard_a]
    first_of = group_objects(entries)
    groups = list(first_of)
    # GIVEN the first write of the second day's audit group fails; the second day's runs and outputs,
    # written before it, hold records after its first record
    failing = groups[6]
    assert failing.startswith("kind=audit/date=2026-04-02/")
    put_failures[failing] = {1}
    first = first_of[failing]
    # WHEN the shard's batch is delivered
    failed = deliver(shard_a)
    # THEN every record from that group's first record on is handed back, in order
    assert failed == sequence_numbers(shard_a)[first:]
    # AND Lambda's retry from there, then the other shard, leave each record archived once
    assert deliver(from_first_failure(shard_a, failed)) == []
    assert deliver(shard_b) == []
    assert_archived_exactly(archive_folder(), shard_a, shard_b)


def test_a_record_that_cannot_be_a_row_is_archived_raw_and_the_batch_goes_on(
    archive_folder: Callable[[], Path],
) -> None:
    shard_a, shard_b = two_shards()
    broken = 9  # an output record in the middle of the batch: its commit time is text
    assert record_kind(shard_a[broken]) == "outputs"
    shard_a[broken]["dynamodb"]["OldImage"]["committed_at"] = {"S": "yesterday"}
    # WHEN the batch holding it is delivered, THEN nothing is handed back
    assert deliver(shard_a) == []
    # AND every record is archived once: the broken one under kind=unparsed, the others as rows
    assert_archived_exactly(archive_folder(), shard_a)
    folder = archive_folder()
    (raw,) = (
        ds.dataset(folder / "kind=unparsed", format="parquet", partitioning="hive").to_table().to_pylist()
    )
    assert raw["sequence_number"] == sequence_numbers(shard_a)[broken]
    assert raw["event_id"] == shard_a[broken]["eventID"]
    assert raw["reason"] == "committed_at 'yesterday' is not a whole number of 64 bits"
    assert json.loads(raw["record"]) == shard_a[broken]
    assert (raw["key"], raw["partition_key"]) == ("output#000000000102", "topic#vehicle_telemetry")
    assert raw["expired_at"] is not None and str(raw["date"]) == raw["expired_at"].date().isoformat()
    rows = read_back(folder)
    assert sum(len(numbers) for numbers in rows.values()) == len(shard_a)
    assert sequence_numbers(shard_a)[broken] not in rows["outputs"]
    # AND redeliveries add nothing: the same batch, a batch starting at the broken record, bisected halves
    half = broken + 1
    for records in (shard_a, shard_a[broken:], shard_a[:half], shard_a[half:], shard_b):
        assert deliver(records) == []
    assert_archived_exactly(archive_folder(), shard_a, shard_b)


def test_the_handler_reports_its_metrics_and_warns_of_each_unparsed_record(
    archive_folder: Callable[[], Path],
    put_failures: dict[str, set[int]],
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    records = fixture_records()  # a run, an output batch, an override, an audit record, a config record
    records[3]["dynamodb"].pop("OldImage")
    config = archive.archived(records[4])
    put_failures[config.object_key] = {1}
    # The config record's write fails: it alone is handed back.
    assert deliver(records) == sequence_numbers(records)[4:]
    emitted: dict[str, Any] = {}
    for line in capsys.readouterr().out.splitlines():
        if line.startswith("{") and '"_aws"' in line:  # CloudWatch's embedded metric format
            emitted.update(json.loads(line))
    # Four rows (a run, an output batch, an override, the audit record raw) in three objects.
    names = ("ArchivedRows", "ArchiveObjects", "ArchiveUnparsed", "ArchiveFailures")
    assert [emitted[name] for name in names] == [[4.0], [3.0], [1.0], [1.0]]
    # One warning line for the unparsed record, with its reason.
    (warning,) = [entry for entry in caplog.records if "archived raw" in entry.getMessage()]
    assert warning.levelname == "WARNING"
    reason = "the record has no OldImage: the stream must carry old images"
    assert (getattr(warning, "reason", None), reason in warning.getMessage()) == (reason, True)
    assert getattr(warning, "sequence_number", None) == sequence_numbers(records)[3]


def test_the_handler_needs_its_archive_root(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(archive.ENV_ARCHIVE, raising=False)
    with pytest.raises(ConfigError, match="LEANOPS_ARCHIVE is not set"):
        deliver(fixture_records())
