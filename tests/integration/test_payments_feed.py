"""The payments change feed exported by a partitioned leanops topic (one lock and checkpoint per shard) into
Parquet by day, and the seed's questions answered over that export (DuckDB), against DynamoDB Local.

One export per module: payments are created and moved along the graph across a UTC midnight, the feed's
topic runs each shard until it is up to date (the four tasks, as the state machine calls them, on a state
table in DynamoDB Local), and each test asks one question of the export and compares the answer with the
one computed from the payment store itself.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import itertools
import random
import statistics
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from leanopsctl.local.dynamodb_local import local_client

from examples.payments import TERMINAL, TRANSITIONS, PaymentStore, create_table, shard_of
from examples.payments.reports import Reports
from examples.payments.simulate import Clock, walk
from leanops import tasks
from leanops.config import parse_topics
from leanops.constants import ENV_DYNAMODB_ENDPOINT
from leanops.protocol import Protocol, TopicRef
from leanops.protocol.dynamodb import DynamoDBStore
from leanops.protocol.table import create_table as create_state_table
from tests.conftest import unique_table_name
from tests.support.clock import FakeClock

pytestmark = pytest.mark.integration

SHARDS = 4
MINUTE_MS = 60_000
#: The feed's writes start two hours before a UTC midnight and end two hours after it.
START_MS = int(dt.datetime(2026, 11, 30, 22, tzinfo=dt.UTC).timestamp() * 1000)
PAYMENTS = 80


@dataclass
class Export:
    store: PaymentStore
    protocol: Protocol
    topics: Any
    clock: FakeClock
    root: Path
    payments: list[str]

    def current(self) -> list[dict[str, Any]]:
        found = [self.store.get(p) for p in self.payments]
        return [
            {"payment_id": p.payment_id, "status": str(p.status), "version": p.version} for p in found if p
        ]

    def run_shards(self) -> list[dict[str, Any]]:
        """Each shard's run until it is up to date; the last run state of each."""
        ends = []
        for shard in range(SHARDS):
            for n in itertools.count():
                state = run(self, f"exec-{shard}-{self.clock.now_ms}-{n}", str(shard))
                if state["outcome"] == "up_to_date":
                    break
            ends.append(state)
        return ends


def run(export: Export, execution: str, partition: str) -> dict[str, Any]:
    """Acquire -> (ProcessBatch -> AdvanceCheckpoint)* as the ASL does; the final run state."""
    event = {
        "input": {"topic": "payment_changes", "partition": partition},
        "execution": execution,
        "execution_name": execution,
    }
    state = tasks.acquire(event, export.protocol, export.topics).to_json()
    while state["outcome"] == "acquired" and not state["released"]:
        batch = tasks.process(
            tasks.RunState.from_json(state), export.protocol, export.topics, lambda: 60_000
        ).to_json()
        state = tasks.advance(
            tasks.RunState.from_json(state), batch, export.protocol, export.topics
        ).to_json()
    return state


TOPIC = {
    "partitions": SHARDS,
    "source": {
        "type": "dynamodb",
        "partition_key": "pk",
        "partition_value": "changes#{partition}",
        "sort_key": "sk",
        "min_age_seconds": 60,
    },
    "timestamp_field": "at",
    "batch_size": 25,
    "isolation": "none",
    "schema": {"at": "timestamp", "version": "int64", "at_ms": "int64", "amount_cents": "int64"},
}


@pytest.fixture(scope="module")
def export(dynamodb_local: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Export]:
    client = local_client(dynamodb_local.endpoint_url)
    payments_table, state_table = unique_table_name("payments-feed"), unique_table_name("feed-state")
    create_table(client, payments_table)
    create_state_table(client, state_table)
    root = tmp_path_factory.mktemp("feed")
    settings = {
        **TOPIC,
        "source": {**TOPIC["source"], "table": payments_table},
        "sink": {"type": "files", "uri": str(root / "out"), "format": "parquet", "partition_by": "day"},
    }
    topics = parse_topics({"topics": {"payment_changes": settings}}, root / "topics.yaml")
    writes = Clock(START_MS)
    store = PaymentStore(client, payments_table, shards=SHARDS, clock=writes)
    walk(store, writes, random.Random(14), PAYMENTS, every_ms=3 * MINUTE_MS)
    payments = [f"pay-{n:06d}" for n in range(PAYMENTS)]
    clock = FakeClock(writes.now_ms + 3 * MINUTE_MS)  # every change at least a minute old
    with pytest.MonkeyPatch.context() as env:
        env.setenv(ENV_DYNAMODB_ENDPOINT, dynamodb_local.endpoint_url)  # the source's own client
        found = Export(
            store,
            Protocol(DynamoDBStore(state_table, client), clock=clock),
            topics,
            clock,
            root / "out",
            payments,
        )
        found.run_shards()
        yield found
    for table in (payments_table, state_table):
        with contextlib.suppress(client.exceptions.ResourceNotFoundException):
            client.delete_table(TableName=table)


def changes(export: Export) -> list[dict[str, Any]]:
    """Every change in the store, from each payment's history (the truth the export is checked against)."""
    return [
        {
            "payment_id": c.payment_id,
            "to_status": str(c.to_status),
            "version": c.version,
            "at_ms": c.at_ms,
            "error_code": c.error_code,
            "fee_type": c.fee_type,
            "amount_cents": c.amount_cents,
            "method": str(c.method),
        }
        for p in export.payments
        for c in export.store.history(p)
    ]


def latest(export: Export) -> dict[str, dict[str, Any]]:
    last: dict[str, dict[str, Any]] = {}
    for change in sorted(changes(export), key=lambda c: c["version"]):
        last[change["payment_id"]] = change
    return last


def test_each_shard_exports_into_its_own_folder_by_day_every_change_once(export):
    folders = sorted({(p.parent.parent.name, p.parent.name) for p in export.root.rglob("*.parquet")})
    days = {"date=2026-11-30", "date=2026-12-01"}
    assert {part for part, _ in folders} == {f"part={s}" for s in range(SHARDS)}
    assert {day for _, day in folders} <= days and len({day for _, day in folders}) == 2
    with Reports(export.root) as reports:
        exported = reports.connection.execute(
            'SELECT payment_id, version, strftime("at", \'%Y-%m-%d\') AS day, "date", part '
            "FROM payment_changes"
        ).fetchall()
    truth = changes(export)
    assert sorted((p, v) for p, v, *_ in exported) == sorted((c["payment_id"], c["version"]) for c in truth)
    assert all(day == date for _, _, day, date, _ in exported)  # each change lies in its own day's folder
    shard_of_payment = {p: shard_of(p, SHARDS) for p, *_ in exported}
    assert all(part == shard_of_payment[p] for p, _, _, _, part in exported)  # and in its payment's shard


def test_every_shard_is_up_to_date_with_a_lag_under_the_age_it_waits_for(export):
    for shard in range(SHARDS):
        status = export.protocol.status(TopicRef("payment_changes", str(shard)))
        assert status.checkpoint.position is not None
        lag_s = export.clock() / 1000 - float(status.checkpoint.last_ingested_ts)
        assert 60 <= lag_s < 60 * 60 * 4


def test_error_4xx_lists_payments_whose_latest_error_is_a_4xx(export):
    expected = {}
    for payment, history in itertools.groupby(
        sorted(changes(export), key=lambda c: (c["payment_id"], c["version"])), key=lambda c: c["payment_id"]
    ):
        errors = [c for c in history if c["error_code"]]
        if errors and errors[-1]["error_code"].startswith("4"):
            expected[payment] = errors[-1]["error_code"]
    with Reports(export.root) as reports:
        rows = reports.run("error_4xx")
    assert {r["payment_id"]: r["error_code"] for r in rows} == expected
    assert expected  # the data set has some


def test_by_fee_type_lists_each_payment_of_the_fee_type_with_its_current_status(export):
    current = {p: c for p, c in latest(export).items() if c["fee_type"] == "renewal"}
    with Reports(export.root) as reports:
        rows = reports.run("by_fee_type", fee_type="renewal")
    assert {r["payment_id"]: (r["status"], r["version"]) for r in rows} == {
        p: (c["to_status"], c["version"]) for p, c in current.items()
    }


def test_settlement_time_of_ach_payments(export):
    created = {c["payment_id"]: c["at_ms"] for c in changes(export) if c["to_status"] == "CREATED"}
    durations = [
        (c["at_ms"] - created[c["payment_id"]]) / 1000
        for c in changes(export)
        if c["to_status"] == "SETTLED" and c["method"] == "ACH"
    ]
    with Reports(export.root) as reports:
        (row,) = reports.run("settlement_time", method="ACH")
    assert durations and row["payments"] == len(durations)
    assert row["avg_seconds"] == pytest.approx(statistics.mean(durations))
    assert row["p50_seconds"] == pytest.approx(statistics.median(durations))


def test_fee_month_counts_and_sums_payments_by_fee_type_and_month(export):
    expected: dict[tuple[str, dt.date], list[int]] = {}
    created = {c["payment_id"]: c["at_ms"] for c in changes(export) if c["to_status"] == "CREATED"}
    for payment, last in latest(export).items():
        month = dt.datetime.fromtimestamp(created[payment] / 1000, dt.UTC).date().replace(day=1)
        entry = expected.setdefault((last["fee_type"], month), [0, 0, 0])
        entry[0] += 1
        entry[1] += last["amount_cents"]
        entry[2] += last["to_status"] == "SETTLED"
    with Reports(export.root) as reports:
        rows = reports.run("fee_month")
    assert {
        (r["fee_type"], r["month"]): [r["payments"], r["total_amount_cents"], r["settled_payments"]]
        for r in rows
    } == expected
    assert len({month for _, month in expected}) == 2  # November and December


def test_failed_above_lists_failed_payments_over_the_amount(export):
    expected = sorted(
        (c["amount_cents"], c["payment_id"])
        for c in latest(export).values()
        if c["to_status"] == "FAILED" and c["amount_cents"] > 9_900
    )
    with Reports(export.root) as reports:
        rows = reports.run("failed_above", min_amount=9_900)
    assert sorted((r["amount_cents"], r["payment_id"]) for r in rows) == expected
    assert expected


def test_the_reconciliation_finds_no_difference_and_then_the_one_the_export_has_not_caught_up_with(export):
    with Reports(export.root, export.current()) as reports:
        assert reports.run("reconciliation") == []
    open_one = next(p for p in map(export.store.get, export.payments) if p and p.status not in TERMINAL)
    export.store.clock = lambda: export.clock() - 30_000  # a change younger than the export waits for
    target = sorted(TRANSITIONS[open_one.status])[0]
    moved = export.store.transition(
        "late-change", open_one.payment_id, target, expected_version=open_one.version
    )
    assert moved.applied
    with Reports(export.root, export.current()) as reports:
        (row,) = reports.run("reconciliation")
    assert (row["payment_id"], row["difference"]) == (open_one.payment_id, "status")
    export.run_shards()  # too young: not exported yet
    with Reports(export.root, export.current()) as reports:
        assert len(reports.run("reconciliation")) == 1
    export.clock.advance(MINUTE_MS)
    export.run_shards()
    with Reports(export.root, export.current()) as reports:
        assert reports.run("reconciliation") == []
