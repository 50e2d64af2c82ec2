"""Archive: the state table's stream (TTL deletions only, by the mapping's filter) to Parquet under
``LEANOPS_ARCHIVE``, idempotently per stream record (leanops.archive).

Powertools' batch processor turns each record into its row; a record that cannot be one is archived raw
under ``kind=unparsed`` (its reason and the whole record), logged as a warning and counted, never handed
back: it would fail the same way on every retry and hold up the records after it. Only a failed write stops
the batch (leanops.archive.archive_batch): every record from that group's first record on is returned in
``batchItemFailures``, so Lambda retries from there (ReportBatchItemFailures).
Metrics: ArchivedRows (unparsed ones included), ArchiveObjects, ArchiveUnparsed (records archived raw), and
ArchiveFailures (records handed back for a retry).
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType
from aws_lambda_powertools.utilities.data_classes.dynamo_db_stream_event import DynamoDBRecord
from aws_lambda_powertools.utilities.typing import LambdaContext

from leanops import archive
from leanops.observability import logger, metrics, tracer

# record_row never raises; were a record still to fail, it is archived raw below rather than raised.
processor = BatchProcessor(event_type=EventType.DynamoDBStreams, raise_on_entire_batch_failure=False)


def record_row(record: DynamoDBRecord) -> archive.Archived:
    return archive.archived(record.raw_event)


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    root = archive.archive_root()
    records = event.get("Records") or []
    with processor(records=records, handler=record_row, lambda_context=context):
        outcomes = processor.process()
    entries = [
        result if status == "success" else archive.unparsed(records[index], f"not processed: {result}")
        for index, (status, result, _) in enumerate(outcomes)
    ]
    written = archive.archive_batch(entries, root)
    unparsed = [entry for entry in entries[: written.failure_point] if entry.kind == archive.UNPARSED]
    for entry in unparsed:
        logger.warning(
            f"stream record archived raw (kind={archive.UNPARSED}): {entry.reason}",
            extra={
                "reason": entry.reason,
                "sequence_number": entry.sequence_number,
                "event_id": entry.event_id,
                "key": entry.row["key"],
                "partition_key": entry.row["partition_key"],
                "date": entry.date,
            },
        )
    retry = records[written.failure_point :]
    metrics.add_metric(name="ArchivedRows", unit=MetricUnit.Count, value=written.rows)
    metrics.add_metric(name="ArchiveObjects", unit=MetricUnit.Count, value=written.objects)
    metrics.add_metric(name="ArchiveUnparsed", unit=MetricUnit.Count, value=len(unparsed))
    metrics.add_metric(name="ArchiveFailures", unit=MetricUnit.Count, value=len(retry))
    return {"batchItemFailures": [{"itemIdentifier": _sequence_number(record)} for record in retry]}


def _sequence_number(record: Any) -> str:
    body = record.get("dynamodb") if isinstance(record, dict) else None
    return str(body.get("SequenceNumber", "")) if isinstance(body, dict) else ""
