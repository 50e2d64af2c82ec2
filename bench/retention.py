"""The hot store stays flat: a simulated month of topics running every minute, the table's items counted each
simulated day, every TTL deletion archived by the real archive handler (docs/decisions/0014).

What is real: the items a run leaves (run key, run record, output record; an operator's audit record now
and then) are built by the state store's own item builders, with their TTLs from the stack's retention; the
TTL deletions reach :func:`leanops.handlers.archive.handler` as Lambda delivers them (AWS's record shape, the
event source mapping's filter, batches of its BatchSize), and the archive is read back with DuckDB. What is
modelled: DynamoDB's TTL deletes an item at the first hourly sweep after it expired (AWS takes up to a few
days: the live count is then higher by that delay's worth of items), and the items are rebuilt from their
(topic, minute) at deletion instead of being kept in memory.

    python bench/retention.py [--quick] [--topics 100] [--days 30] [--output bench/results/retention.json]
"""

from __future__ import annotations

import collections
import json
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import common
import duckdb
from boto3.dynamodb.types import TypeSerializer
from leanopsctl.local.invocation import LambdaContext

from leanops import archive
from leanops.handlers.archive import handler
from leanops.protocol import AuditRecord, Retention, RunRecord, TopicRef
from leanops.protocol.dynamodb import audit_item, output_item, run_key_item, run_record_item
from leanops.protocol.service import DEFAULT_RUN_KEY_TTL_SECONDS
from leanops.protocol.table import PARTITION_KEY, SORT_KEY, TTL_ATTRIBUTE

#: 2026-01-01T00:00:00Z: the simulated month's first minute.
START_MS = 1_767_225_600_000
MINUTE_MS = 60_000
#: Items every topic keeps whatever its history: lock, checkpoint, its pushed settings.
STATIC_ITEMS_PER_TOPIC = 3
#: A run finds no new data every 4th minute (no output record), fails every 500th.
UP_TO_DATE_EVERY, FAILED_EVERY = 4, 500
#: An operator changes a topic once a simulated week (pause, resume: two audit records).
AUDIT_EVERY_MINUTES = 7 * 1440
STREAM_ARN = "arn:aws:dynamodb:us-east-1:123456789012:table/leanops-state/stream/2026-01-01T00:00:00.000"


@dataclass
class Simulation:
    topics: int
    days: int
    retention: Retention
    archive_root: Path
    batch_size: int = 1000

    def __post_init__(self) -> None:
        self.serializer = TypeSerializer()
        #: Live history items by kind: a queue of (expires_at, topic, minute, tag) in write order, which is
        #: expiry order within a kind (one retention each).
        self.live: dict[str, collections.deque[tuple[int, int, int, str]]] = collections.defaultdict(
            collections.deque
        )
        self.written: collections.Counter[str] = collections.Counter()
        self.deleted: collections.Counter[str] = collections.Counter()
        self.sequence = 10**20
        self.pending: list[dict[str, Any]] = []
        self.handler_seconds = 0.0
        self.invocations = 0

    # --- what a run writes ------------------------------------------------------------------------------

    def item(self, kind: str, topic: int, minute: int, tag: str) -> dict[str, Any]:
        """The item a run of ``topic`` at ``minute`` wrote, as the store builds it (rebuilt at deletion)."""
        ref, now = TopicRef(f"topic_{topic:04d}"), START_MS + minute * MINUTE_MS
        if kind == "run_key":
            gc_at_s = now // 1000 + DEFAULT_RUN_KEY_TTL_SECONDS
            return run_key_item(ref, f"scheduled:{now}", f"arn:exec:{topic}:{minute}", now, gc_at_s)
        if kind == "runs":
            outcome = tag
            record = RunRecord(
                execution=f"arn:aws:states:us-east-1:123456789012:execution:topic-run:{topic}-{minute}",
                outcome=outcome,
                started_at_ms=now,
                ended_at_ms=now + 1_800,
                batches=1 if outcome == "processed" else 0,
                records=250 if outcome == "processed" else 0,
                position=f"day={minute // 1440:02d}/part-{minute:05d}.jsonl#250",
                lag_ms=95_000,
                fence=now,
                error="SensorFault" if outcome == "failed" else None,
                cause="calibration missing" if outcome == "failed" else None,
            )
            return run_record_item(ref, record, self.retention)
        if kind == "outputs":
            key = f"day={minute // 1440:02d}/part-{minute:05d}.jsonl"
            fields = {
                "object": f"{ref.topic}.{key}.{now}-1a2b3c4d-0f0f0f0f.jsonl",
                "quarantine": None,
                "stem": key,
                "attempt": "1a2b3c4d-0f0f0f0f",
                "after": f"day={minute // 1440:02d}/part-{minute - 1:05d}.jsonl#250",
                "end": f"{key}#250",
                "records": 250,
                "written": 250,
                "quarantined": 0,
                "source_keys": [key],
                "fence": now,
                "owner": f"arn:exec:{topic}:{minute}",
                "position": f"{key}#250",
            }
            return output_item(ref, minute + 1, fields, now + 1_500, self.retention)
        audit = AuditRecord(
            f"audit#{now:013d}#{tag}",
            tag,
            "ops@example.com",
            "weekly check",
            now,
            {},
            {"paused": tag == "pause"},
        )
        return audit_item(ref, audit, self.retention)

    def write(self, kind: str, topic: int, minute: int, tag: str = "") -> None:
        item = self.item(kind, topic, minute, tag)
        self.live[kind].append((int(item[TTL_ATTRIBUTE]), topic, minute, tag))
        self.written[kind] += 1

    def run(self, topic: int, minute: int) -> None:
        self.write("run_key", topic, minute)
        turn = minute + topic  # topics do not all fail or idle in the same minute
        outcome = (
            "failed"
            if turn % FAILED_EVERY == 0
            else "up_to_date"
            if turn % UP_TO_DATE_EVERY == 0
            else "processed"
        )
        self.write("runs", topic, minute, outcome)
        if outcome == "processed":
            self.write("outputs", topic, minute)
        if (minute + topic * 37) % AUDIT_EVERY_MINUTES == 0:
            self.write("audit", topic, minute, "pause")
            self.write("audit", topic, minute, "resume")

    # --- DynamoDB's TTL, the stream and the archive function --------------------------------------------

    def sweep(self, now_ms: int) -> None:
        """Delete every item whose TTL has passed; each deletion of an archived kind is a stream record."""
        now_s = now_ms // 1000
        for kind, queue in self.live.items():
            while queue and queue[0][0] <= now_s:
                _, topic, minute, tag = queue.popleft()
                self.deleted[kind] += 1
                if kind in archive.KINDS.values():  # the mapping's filter: run keys invoke nothing
                    self.pending.append(self.removal(self.item(kind, topic, minute, tag), now_s))
                    if len(self.pending) >= self.batch_size:
                        self.invoke()

    def removal(self, item: dict[str, Any], now_s: int) -> dict[str, Any]:
        """The TTL deletion of ``item`` as Lambda delivers it (the shape of the fixture
        tests/events/dynamodb_stream_ttl_remove.json)."""
        self.sequence += 1
        image = {name: self.serializer.serialize(value) for name, value in item.items()}
        return {
            "eventID": f"{self.sequence:032x}",
            "eventName": "REMOVE",
            "eventVersion": "1.1",
            "eventSource": "aws:dynamodb",
            "awsRegion": "us-east-1",
            "dynamodb": {
                "ApproximateCreationDateTime": now_s,
                "Keys": {PARTITION_KEY: image[PARTITION_KEY], SORT_KEY: image[SORT_KEY]},
                "OldImage": image,
                "SequenceNumber": str(self.sequence),
                "SizeBytes": len(json.dumps(image)),
                "StreamViewType": "NEW_AND_OLD_IMAGES",
            },
            "userIdentity": {"type": "Service", "principalId": "dynamodb.amazonaws.com"},
            "eventSourceARN": STREAM_ARN,
        }

    def invoke(self) -> None:
        if not self.pending:
            return
        context = LambdaContext(
            function_name="ArchiveFunction",
            function_version="$LATEST",
            invoked_function_arn="arn:aws:lambda:us-east-1:123456789012:function:ArchiveFunction",
            memory_limit_in_mb=1024,
            aws_request_id=f"bench-{self.invocations}",
            log_group_name="/aws/lambda/ArchiveFunction",
            log_stream_name="bench",
            deadline=time.monotonic() + 120,
        )
        started = time.perf_counter()
        response = handler({"Records": self.pending}, context)
        self.handler_seconds += time.perf_counter() - started
        self.invocations += 1
        if response["batchItemFailures"]:
            raise common.BenchError(f"the archive handed back {len(response['batchItemFailures'])} records")
        self.pending = []

    # --- the month --------------------------------------------------------------------------------------

    def items_in_table(self) -> dict[str, int]:
        counts = {kind: len(queue) for kind, queue in self.live.items()}
        return {
            **counts,
            "static": self.topics * STATIC_ITEMS_PER_TOPIC,
            "total": sum(counts.values()) + self.topics * STATIC_ITEMS_PER_TOPIC,
        }

    def simulate(self) -> Iterator[dict[str, Any]]:
        for minute in range(self.days * 1440):
            for topic in range(self.topics):
                self.run(topic, minute)
            if minute % 60 == 59:
                self.sweep(START_MS + (minute + 1) * MINUTE_MS)
            if minute % 1440 == 1439:
                yield {"day": minute // 1440 + 1, **self.items_in_table()}
        self.invoke()


def archived_rows(root: Path) -> dict[str, int]:
    counts = {}
    for kind in archive.KINDS.values():
        if not any((root / f"kind={kind}").glob("*/*.parquet")):
            counts[kind] = 0
            continue
        pattern = str(root / f"kind={kind}" / "*" / "*.parquet")
        query = f"SELECT count(*), count(DISTINCT sequence_number) FROM read_parquet('{pattern}')"
        rows, distinct = duckdb.sql(query).fetchone() or (0, 0)
        if rows != distinct:
            raise common.BenchError(f"{kind}: {rows} rows for {distinct} stream records")
        counts[kind] = rows
    return counts


@dataclass(frozen=True)
class Settings:
    topics: int
    days: int
    runs_days: int
    outputs_days: int
    audit_days: int


def measure(settings: Settings) -> common.Results:
    watch = common.Stopwatch.start()
    retention = Retention(settings.runs_days, settings.outputs_days, settings.audit_days)
    with tempfile.TemporaryDirectory(prefix="leanops-retention-") as scratch:
        root = Path(scratch) / "archive"
        os.environ[archive.ENV_ARCHIVE] = str(root)
        sim = Simulation(settings.topics, settings.days, retention, root)
        daily = []
        for day in sim.simulate():
            daily.append(day)
            print(json.dumps(day), file=sys.stderr)
        archived = archived_rows(root)
    for kind in archive.KINDS.values():  # nothing lost, nothing twice: each item is live or archived once
        if sim.written[kind] != len(sim.live[kind]) + archived[kind]:
            raise common.BenchError(
                f"{kind}: {sim.written[kind]} written, {len(sim.live[kind])} live, {archived[kind]} archived"
            )
    run_key_days = DEFAULT_RUN_KEY_TTL_SECONDS // 86_400
    longest = max(retention.runs_days, retention.outputs_days, run_key_days)
    settled = [day["total"] for day in daily[longest + 1 :]]
    return {
        "scenario": f"{settings.topics} topics, a run a minute each, {settings.days} simulated days",
        "run_key_days": run_key_days,
        "runs": settings.topics * settings.days * 1440,
        "written": dict(sim.written),
        "items_in_table_at_end": sim.items_in_table(),
        "items_in_table_by_day": [day["total"] for day in daily],
        # After the longest retention, the table no longer grows: the peak of the days after it.
        "peak_items_after_settling": max(settled) if settled else None,
        "archived_rows": archived,
        "archive_invocations": sim.invocations,
        "archive_handler_seconds": round(sim.handler_seconds, 1),
        "archive_rows_per_handler_second": round(sum(archived.values()) / sim.handler_seconds)
        if sim.handler_seconds
        else None,
        **watch.record(
            settings,
            [
                "DynamoDB's TTL modelled as deleting at the first hourly sweep after expiry (AWS: days)",
                "items built by leanops.protocol.dynamodb's item builders; archive by the real handler",
            ],
            duckdb=duckdb.__version__,
        ),
    }


def summary(results: common.Results) -> None:
    end = results["items_in_table_at_end"]
    print(
        f"{results['scenario']}: {end['total']:,} items in the table at the end "
        f"(peak after settling {results['peak_items_after_settling']:,}); archived "
        f"{sum(results['archived_rows'].values()):,} rows in {results['archive_invocations']:,} invocations",
        file=sys.stderr,
    )


def main(argv: list[str] | None = None) -> int:
    args = common.parse_quick_args(argv, __doc__, "retention", "5 topics, 10 days, retention of 1 to 2 days")
    common.use_dummy_aws_env()
    # The handler's metrics and logs would print a line per invocation: counted here instead.
    os.environ.update(POWERTOOLS_METRICS_DISABLED="true", POWERTOOLS_LOG_LEVEL="WARNING")
    defaults = Retention()
    settings = (
        Settings(5, 10, 1, 1, 2)
        if args.quick
        else Settings(100, 30, defaults.runs_days, defaults.outputs_days, defaults.audit_days)
    )
    return common.run_and_report("retention", args.output, lambda: measure(settings), summary)


if __name__ == "__main__":
    raise SystemExit(main())
