"""The payments' polling topic against DynamoDB Local, without leanops: the store's ``by_status`` index (open
payments in, terminal ones out, requeue moving a key under its guard), the processor and the callbacks'
consumer on a few payments, and the acceptance: a generated day, polled every 5 simulated minutes as the
topic would be (each batch processed twice, as a retried batch is) while callbacks, duplicated and out of
order, are applied in another thread, settles every payment the simulator settles, exactly once."""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pyarrow.parquet as pq
import pytest
import yaml

from examples.payments import polling
from examples.payments.day import Day, DayConfig
from examples.payments.graph import Status
from examples.payments.polling import apply_callbacks, configure, poll, poll_one
from examples.payments.provider import (
    MINUTE_MS,
    Callback,
    Method,
    PaymentProvider,
    ProviderConfig,
    SimulatedClock,
)
from examples.payments.provider import Status as ProviderStatus
from examples.payments.store import (
    STATUS_INDEX,
    InvalidRequest,
    PaymentNotFound,
    PaymentStore,
    create_table,
    iso_ms,
    shard_of,
    status_key,
)
from leanops import tasks
from leanops.config import parse_topics
from leanops.protocol import Protocol, TopicRef
from leanops.protocol.dynamodb import DynamoDBStore
from tests.conftest import unique_table_name
from tests.integration import test_payments_store as store_tests
from tests.integration.test_payments_store import Table

pytestmark = pytest.mark.integration

#: A new payments table (with its index) per test, deleted afterwards: the store tests' fixture.
payments_table = store_tests.payments_table

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "payments"

START_MS = 1_795_910_400_000  # 2026-11-29T00:00:00Z
SETTLED, PENDING = ProviderStatus.SETTLED, ProviderStatus.PENDING
#: A provider that accepts every submission and settles every payment (the ids here are not the same twice).
RELIABLE: dict[str, Any] = {"client_error_share": 0.0, "server_error_share": 0.0, "decline_share": 0.0}


@pytest.fixture(autouse=True)
def _unconfigured() -> Iterator[None]:
    yield
    polling.reset()


def ctx() -> Any:
    return SimpleNamespace(
        logger=logging.getLogger("test.payment_polling"), topic="payment_polling", batch_id="b"
    )


_ids = itertools.count()


def new_payment(store: PaymentStore, method: str = "CARD") -> str:
    n = next(_ids)
    payment_id = f"pp-{n}-{time.time_ns()}"
    store.create(f"c-{payment_id}", payment_id, 1_000 + n, "USD", "filing", method, f"t-{payment_id}")
    return payment_id


def to_pending(store: PaymentStore, provider: PaymentProvider | None, payment_id: str) -> None:
    """SUBMITTED, then (accepted by ``provider`` when given) PENDING."""
    assert store.transition(f"s-{payment_id}", payment_id, "SUBMITTED", 1).applied
    if provider is not None:
        assert provider.submit(payment_id, 1_000, "CARD").status == "accepted"
    assert store.transition(f"p-{payment_id}", payment_id, "PENDING", 2).applied


def index_keys(store: PaymentStore, status: str) -> dict[str, str]:
    return {str(i["payment_id"]): str(i["status_key"]) for i in store.by_status(status, limit=1_000)}


def count_items(table: Table) -> int:
    return sum(page["Count"] for page in table.client.get_paginator("scan").paginate(TableName=table.name))


# --- the index ---------------------------------------------------------------------------------------------


def test_open_payments_are_in_the_index_terminal_ones_leave_it_and_requeue_moves_a_key(
    payments_table: Table,
) -> None:
    clock = SimulatedClock(START_MS)
    store = PaymentStore(payments_table.client, payments_table.name, clock=clock.now_ms)
    # GIVEN a payment created at START, submitted a second later, pending a second after that
    payment_id = new_payment(store)
    assert index_keys(store, "CREATED") == {payment_id: status_key(START_MS, payment_id)}
    clock.advance(1_000)
    assert store.transition("r-s", payment_id, "SUBMITTED", 1).applied
    clock.advance(1_000)
    assert store.transition("r-p", payment_id, "PENDING", 2).applied
    # THEN it is in the index once, under PENDING, keyed by the time it entered PENDING
    assert index_keys(store, "CREATED") == index_keys(store, "SUBMITTED") == {}
    assert index_keys(store, "PENDING") == {payment_id: f"{START_MS + 2_000:013d}#{payment_id}"}
    (item,) = store.by_status("PENDING")
    assert set(item) == {"pk", "sk", "status", "status_key", "payment_id", "version"}  # INCLUDE projection
    assert item["version"] == 3
    described = payments_table.client.describe_table(TableName=payments_table.name)["Table"]
    assert [i["IndexName"] for i in described["GlobalSecondaryIndexes"]] == [STATUS_INDEX]
    # WHEN it is requeued a minute later
    before, history, items = store.get(payment_id), store.history(payment_id), count_items(payments_table)
    clock.advance(MINUTE_MS)
    requeued = store.requeue(payment_id, 3)
    # THEN its key moved to now, and nothing else changed: no version, no change item, no request item
    assert requeued.moved and requeued.status_key == status_key(START_MS + 2_000 + MINUTE_MS, payment_id)
    assert index_keys(store, "PENDING") == {payment_id: requeued.status_key}
    assert requeued.payment == before == store.get(payment_id)
    assert store.history(payment_id) == history and count_items(payments_table) == items
    # AND a requeue at a stale version or another status is refused, with the payment as it is
    clock.advance(MINUTE_MS)
    for version, status in ((2, "PENDING"), (3, "SUBMITTED")):
        refused = store.requeue(payment_id, version, status)
        assert not refused.moved and refused.status_key is None and refused.payment == before
    assert index_keys(store, "PENDING") == {payment_id: requeued.status_key}
    # WHEN it is settled
    assert store.transition("r-settle", payment_id, "SETTLED", 3).applied
    # THEN it left the index, and cannot be requeued into it
    assert all(index_keys(store, s) == {} for s in ("CREATED", "SUBMITTED", "PENDING", "SETTLED"))
    refused = store.requeue(payment_id, 3)
    assert not refused.moved and refused.payment.status == "SETTLED"
    assert index_keys(store, "PENDING") == {}
    with pytest.raises(InvalidRequest):
        store.requeue(payment_id, 4, "SETTLED")
    with pytest.raises(PaymentNotFound):
        store.requeue("no-such-payment", 3)
    # AND every change item carries its time as ISO 8601 UTC with milliseconds
    raw = payments_table.client.scan(TableName=payments_table.name)["Items"]
    ats = sorted(i["at"]["S"] for i in raw if i["pk"]["S"].startswith("changes#"))
    assert ats[0] == "2026-11-29T00:00:00.000Z" and ats[1] == "2026-11-29T00:00:01.000Z"
    assert [c.at for c in store.history(payment_id)] == ats


def test_the_index_is_read_after_a_key_and_up_to_a_time_in_key_order(payments_table: Table) -> None:
    clock = SimulatedClock(START_MS)
    store = PaymentStore(payments_table.client, payments_table.name, clock=clock.now_ms)
    ids = []
    for _ in range(7):  # one payment pending every 10 s, two of them at the same millisecond
        payment_id = new_payment(store)
        to_pending(store, None, payment_id)
        ids.append(payment_id)
        if len(ids) != 3:
            clock.advance(10_000)
    keys = sorted(index_keys(store, "PENDING").values())
    assert len(keys) == 7 and {k.split("#", 1)[1] for k in keys} == set(ids)
    assert len({k[:13] for k in keys}) == 6  # two keys share their millisecond
    assert [i["status_key"] for i in store.by_status("PENDING")] == keys  # key order
    items = store.by_status("PENDING", limit=3)
    assert [i["status_key"] for i in items] == keys[:3]
    assert [i["status_key"] for i in store.by_status("PENDING", after_key=keys[2], limit=100)] == keys[3:]
    # up to a time: inclusive of that millisecond, with or without a key to start after
    until = int(keys[4][:13])
    assert [i["status_key"] for i in store.by_status("PENDING", until_ms=until)] == keys[:5]
    assert [i["status_key"] for i in store.by_status("PENDING", after_key=keys[1], until_ms=until)] == keys[
        2:5
    ]
    assert store.by_status("PENDING", after_key=keys[4], until_ms=until) == []
    assert store.by_status("PENDING", after_key=keys[6]) == []
    assert store.by_status("PENDING", until_ms=START_MS - 1) == []


def test_create_table_adds_the_index_to_a_table_created_without_it(
    payments_table: Table, ddb_client_factory: Callable[..., Any], request: Any
) -> None:
    client = ddb_client_factory()
    name = unique_table_name(request.node.name)
    client.create_table(
        TableName=name,
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}],
        AttributeDefinitions=[
            {"AttributeName": "pk", "AttributeType": "S"},
            {"AttributeName": "sk", "AttributeType": "S"},
        ],
        BillingMode="PAY_PER_REQUEST",
    )
    try:
        create_table(client, name)
        create_table(client, name)  # idempotent
        indexes = client.describe_table(TableName=name)["Table"]["GlobalSecondaryIndexes"]
        assert [(i["IndexName"], i["IndexStatus"]) for i in indexes] == [(STATUS_INDEX, "ACTIVE")]
        store = PaymentStore(client, name)
        payment_id = new_payment(store)
        assert list(index_keys(store, "CREATED")) == [payment_id]
    finally:
        client.delete_table(TableName=name)


# --- the processor and the callbacks on a few payments -----------------------------------------------------


def test_poll_requeues_until_settled_then_applies_once_and_repeats_idempotently(
    payments_table: Table,
) -> None:
    clock = SimulatedClock(START_MS)
    store = PaymentStore(payments_table.client, payments_table.name, clock=clock.now_ms)
    settlement = {Method.CARD: (10 * MINUTE_MS, 10 * MINUTE_MS), Method.WIRE: (0, 0), Method.ACH: (0, 0)}
    provider = PaymentProvider(ProviderConfig(**RELIABLE, settlement_ms=settlement), clock)
    configure(store, provider)
    settled, unknown = new_payment(store), new_payment(store)
    to_pending(store, provider, settled)
    to_pending(store, None, unknown)  # PENDING, yet never submitted to this provider
    records = store.by_status("PENDING")
    assert {r["payment_id"] for r in records} == {settled, unknown}
    # WHEN polled before the provider settled it: both requeued (keys moved to now), nothing else written
    rows = poll(records, ctx())
    by_id = {row["payment_id"]: row for row in rows}
    assert [row["payment_id"] for row in rows] == [r["payment_id"] for r in records]  # a row per record
    assert by_id[settled]["outcome"] == "requeued" and by_id[settled]["provider_status"] == "pending"
    assert (
        by_id[unknown]["outcome"] == "unknown_at_provider" and by_id[unknown]["provider_status"] == "unknown"
    )
    assert all(row["version_after"] == 3 and row["status_after"] == "PENDING" for row in rows)
    assert all(row["status_key"] == r["status_key"] for row, r in zip(rows, records, strict=True))
    moved = index_keys(store, "PENDING")
    # (each at the time of its requeue: the provider's answers took time, on the simulated clock)
    assert all(r["status_key"] < moved[r["payment_id"]] <= status_key(clock.now_ms(), "~") for r in records)
    # WHEN polled after settlement, with the batch processed a second time (a retry)
    clock.advance(11 * MINUTE_MS)
    first = poll_one({"payment_id": settled}, store, provider, clock.now_ms)
    polled_at = iso_ms(clock.now_ms())  # after the provider's answer (its latency moved the clock)
    again = poll_one({"payment_id": settled}, store, provider, clock.now_ms)
    # THEN it is settled once: applied, then already final
    assert (first["outcome"], first["provider_status"], first["version_after"]) == ("applied", "settled", 4)
    assert (first["request_id"], first["polled_at"]) == (f"poll:{settled}:SETTLED", polled_at)
    assert (again["outcome"], again["status_after"], again["request_id"]) == (
        "already_final",
        "SETTLED",
        None,
    )
    assert [c.to_status for c in store.history(settled)].count(Status.SETTLED) == 1
    assert list(index_keys(store, "PENDING")) == [unknown]
    # AND a retry that read the payment before the first attempt's write landed sends the same request id:
    # a duplicate, nothing written
    stale = store.get(settled)
    assert stale is not None
    pending_view = replace(stale, status=Status.PENDING, version=3, paid_at_ms=None)
    original_get = store.get
    store.get = lambda payment_id: pending_view  # type: ignore[method-assign]
    try:
        duplicate = poll_one({"payment_id": settled}, store, provider, clock.now_ms)
    finally:
        store.get = original_get  # type: ignore[method-assign]
    assert (duplicate["outcome"], duplicate["version_after"]) == ("duplicate", 4)
    assert [c.to_status for c in store.history(settled)].count(Status.SETTLED) == 1


def test_provider_errors_requeue_and_declines_fail_with_the_providers_code(payments_table: Table) -> None:
    clock = SimulatedClock(START_MS)
    store = PaymentStore(payments_table.client, payments_table.name, clock=clock.now_ms)
    flaky = PaymentProvider(ProviderConfig(**RELIABLE, poll_error_share=1.0), clock)
    declining = PaymentProvider(ProviderConfig(**{**RELIABLE, "decline_share": 1.0}), clock)
    payment_id = new_payment(store)
    to_pending(store, None, payment_id)
    assert flaky.submit(payment_id, 1_000, "CARD").status == "accepted"
    assert declining.submit(payment_id, 1_000, "CARD").status == "accepted"
    clock.advance(60 * MINUTE_MS)  # resolved at both
    # WHEN the provider answers 5XX: requeued, with the code
    row = poll_one({"payment_id": payment_id}, store, flaky, clock.now_ms)
    assert (row["outcome"], row["provider_status"], row["status_after"]) == (
        "provider_error",
        "error",
        "PENDING",
    )
    assert row["error_code"] in ("500", "502", "503")
    # WHEN it declines: FAILED with its code, once
    row = poll_one({"payment_id": payment_id}, store, declining, clock.now_ms)
    after = store.get(payment_id)
    assert after is not None and (after.status, after.version, after.error_code) == (
        "FAILED",
        4,
        row["error_code"],
    )
    assert (row["outcome"], row["status_after"], row["provider_status"]) == ("applied", "FAILED", "failed")
    assert row["error_code"] in ("402", "422") and row["request_id"] == f"poll:{payment_id}:FAILED"
    assert poll_one({"payment_id": payment_id}, store, declining, clock.now_ms)["outcome"] == "already_final"
    assert index_keys(store, "PENDING") == {}


def test_callbacks_duplicated_and_out_of_order_apply_once_and_race_with_polls(payments_table: Table) -> None:
    clock = SimulatedClock(START_MS)
    store = PaymentStore(payments_table.client, payments_table.name, clock=clock.now_ms)
    provider = PaymentProvider(ProviderConfig(**RELIABLE), clock)
    settled, submitted = new_payment(store), new_payment(store)
    to_pending(store, provider, settled)
    # `submitted` was accepted, but its submitter stopped before recording it: still SUBMITTED
    assert store.transition(f"s-{submitted}", submitted, "SUBMITTED", 1).applied
    assert provider.submit(submitted, 1_000, "CARD").status == "accepted"
    clock.advance(30 * MINUTE_MS)
    outcome = provider.outcomes()
    assert all(o.status == "settled" for o in outcome.values())
    feed = [
        Callback(settled, SETTLED, START_MS, None, START_MS + 1),
        Callback(settled, SETTLED, START_MS, None, START_MS + 2),  # a duplicate
        Callback(settled, PENDING, START_MS, None, START_MS + 3),  # out of order
        Callback(submitted, SETTLED, START_MS, None, START_MS + 4),
        Callback(submitted, SETTLED, START_MS, None, START_MS + 9),  # delivered after until
    ]
    source = SimpleNamespace(callbacks=lambda since_ms: [c for c in feed if c.delivered_ms > since_ms])
    run = apply_callbacks(store, source, START_MS, START_MS + 5)
    assert run.until_ms == START_MS + 5
    assert [(r["payment_id"], r["outcome"], r["status_after"]) for r in run.rows] == [
        (settled, "applied", "SETTLED"),
        (settled, "already_final", "SETTLED"),
        (settled, "already_final", "SETTLED"),
        (submitted, "applied", "SETTLED"),  # through PENDING
    ]
    assert [c.to_status for c in store.history(submitted)] == ["CREATED", "SUBMITTED", "PENDING", "SETTLED"]
    assert [c.request_id for c in store.history(submitted)][2:] == [
        f"callback:{submitted}:PENDING",
        f"callback:{submitted}:SETTLED",
    ]
    # AND a poll of the settled payment now finds it final, writes nothing
    assert poll_one({"payment_id": settled}, store, provider, clock.now_ms)["outcome"] == "already_final"
    for payment_id in (settled, submitted):
        assert [c.to_status for c in store.history(payment_id)].count(Status.SETTLED) == 1


# --- the acceptance: a generated day, polled on schedule ------------------------------------------------

#: The day's size and schedule: every 5 simulated minutes the topic reads the PENDING payments older than
#: MIN_AGE (the topic says 5 minutes; an hour here keeps a day of ACH payments, which take up to 24 h, to
#: about 12 polls each, and the test under a minute), in batches of 100, each processed twice. The day is
#: played until every payment is resolved (ACH payments of the day's last hours resolve the next day).
DAY_PAYMENTS = 100
TICK_MS = 5 * MINUTE_MS
MIN_AGE_MS = 60 * MINUTE_MS
BATCH = 100
#: Callbacks are applied every CALLBACKS_EVERY ticks, in a thread racing the polls; those of the payments
#: whose webhook is "lost" (half of them, by a stable hash) never arrive: the polls alone must settle those.
CALLBACKS_EVERY = 6


def polling_topic(table: str, folder: Path) -> Any:
    """The polling topic (examples/payments/topics.yaml's, on ``table``), its poll log in ``folder``."""
    settings = yaml.safe_load((EXAMPLE / "topics.yaml").read_text())["topics"]["payment_polling"]
    settings["source"] = {**settings["source"], "table": table, "min_age_seconds": MIN_AGE_MS // 1000}
    settings["sink"] = {**settings["sink"], "uri": str(folder / "polls")}
    settings["batch_size"] = BATCH
    return parse_topics({"topics": {"payment_polling": settings}}, folder / "topics.yaml")


def run_polling(protocol: Protocol, topics: Any, at_ms: int, tick: int) -> tuple[int, int]:
    """The polling topic's scheduled run at ``at_ms`` as the state machine runs it: Acquire, then
    ProcessBatch and AdvanceCheckpoint until the commit releases the lock. Every 4th start is delivered twice
    (the second finds its run key claimed); every 3rd run's first batch is processed twice (a ProcessBatch
    retried after its first invocation timed out: the index is read again, its object is an orphan). The
    batches committed, and the retried batches that had records."""
    start = {"topic": "payment_polling", "scheduled_time": iso_ms(at_ms)}
    deliveries = 2 if tick % 4 == 0 else 1
    batches = retried = 0
    for delivery in range(deliveries):
        execution = f"sched-{tick}-{delivery}"
        event = {"input": start, "execution": execution, "execution_name": execution}
        state = tasks.acquire(event, protocol, topics)
        assert state.outcome in ("acquired", "up_to_date", "duplicate"), state
        assert delivery == 0 or state.outcome == "duplicate"
        while state.outcome == "acquired" and not state.released:
            batch = tasks.process(state, protocol, topics, lambda: 60_000)
            if tick % 3 == 0 and state.batches == 0:
                retried += batch.records > 0
                batch = tasks.process(state, protocol, topics, lambda: 60_000)
            state = tasks.advance(state, batch.to_json(), protocol, topics)
            batches += 1
    return batches, retried


def poll_log(folder: Path) -> list[dict[str, Any]]:
    """The committed poll log: every object in the sink (a retried batch's orphan was deleted once its
    batch committed)."""
    return [row for path in sorted(folder.rglob("*.parquet")) for row in pq.read_table(path).to_pylist()]


class LossyFeed:
    """The provider's callbacks, without those of the payments whose webhook is lost."""

    def __init__(self, provider: PaymentProvider, lost: Callable[[str], bool]) -> None:
        self.provider, self.lost = provider, lost

    def callbacks(self, since_ms: int) -> Iterable[Callback]:
        return [c for c in self.provider.callbacks(since_ms) if not self.lost(c.payment_id)]


def webhook_lost(payment_id: str) -> bool:
    return shard_of(payment_id, 2) == 0


def test_a_generated_day_polled_on_schedule_settles_every_settled_payment_exactly_once(
    payments_table: Table, ddb_client_factory: Callable[..., Any], state_table: Any, tmp_path: Path
) -> None:
    started = time.monotonic()
    day = Day(
        payments_table.client,
        payments_table.name,
        DayConfig(payments=DAY_PAYMENTS, seed=11, provider=ProviderConfig(seed=11, poll_error_share=0.03)),
    )
    configure(day.store, day.provider, day.clock.now_ms)
    topics = polling_topic(payments_table.name, tmp_path)
    protocol = Protocol(DynamoDBStore(state_table.name, state_table.client), clock=day.clock.now_ms)
    # the callbacks' consumer: its own client and store, on the same clock
    consumer = PaymentStore(ddb_client_factory(), payments_table.name, clock=day.clock.now_ms)
    feed = LossyFeed(day.provider, webhook_lost)
    outcomes: Counter[str] = Counter()
    callback_outcomes: Counter[str] = Counter()
    since, t, ticks, batches, retried = day.start_ms, day.start_ms, 0, 0, 0
    deadline = day.end_ms + 36 * 60 * MINUTE_MS
    while True:
        day.advance_to(t)
        consumer_thread = None
        if ticks % CALLBACKS_EVERY == 0:
            until = day.clock.now_ms()

            def consume(since: int = since, until: int = until) -> None:
                callback_outcomes.update(
                    r["outcome"] for r in apply_callbacks(consumer, feed, since, until).rows
                )

            consumer_thread = threading.Thread(target=consume)
            consumer_thread.start()
            since = until
        # the topic's scheduled run at t, through leanops' tasks (its lock, checkpoint and run key): a
        # duplicate delivery of some starts, a retried ProcessBatch in some runs
        committed, again = run_polling(protocol, topics, t, ticks)
        batches, retried = batches + committed, retried + again
        if consumer_thread is not None:
            consumer_thread.join()
        ticks += 1
        resolved = day.finished and not any(o.status == "pending" for o in day.provider.outcomes().values())
        if resolved and not day.store.by_status("PENDING", limit=1):
            break
        assert t < deadline, f"payments still pending at {iso_ms(t)}: {day.store.by_status('PENDING')[:5]}"
        t += TICK_MS
    figures = day.check()
    outcomes.update(row["outcome"] for row in poll_log(tmp_path / "polls"))
    elapsed = time.monotonic() - started
    print(
        {
            **figures,
            "ticks": ticks,
            "batches": batches,
            "retried_batches": retried,
            "polls": dict(outcomes),
            "callbacks": dict(callback_outcomes),
            "seconds": round(elapsed, 1),
        }
    )
    # THEN every payment the simulator settled is SETTLED in the store, by exactly one change; no other is
    assert figures["settled_by_provider"] == figures["settled_in_store"] > DAY_PAYMENTS // 2
    assert figures["missing"] == figures["extra"] == figures["settled_twice"] == 0, figures["examples"]
    assert figures["wrong_settle_counts"] == 0, figures["examples"]
    # AND the declines are FAILED with their codes, the refusals CANCELLED, nothing is left open
    assert figures["failed_mismatches"] == figures["refused_mismatches"] == 0, figures["examples"]
    assert figures["still_pending"] == figures["still_open"] == figures["pending_at_provider"] == 0
    # AND both paths settled payments, each path's repeats were answered without a write, the polls alone
    # settled every payment whose webhook was lost, and provider errors were requeued
    assert figures["settled_by"].get("poll", 0) > 0 and figures["settled_by"].get("callback", 0) > 0
    assert outcomes["requeued"] > 0 and outcomes["provider_error"] > 0
    assert outcomes["applied"] > 0
    # AND ProcessBatch was retried in runs that had records: what the first attempts wrote was deleted once
    # their batch committed, so the poll log is exactly the committed objects
    assert retried > 0
    committed = {
        o.data["object"] for o in protocol.outputs(TopicRef("payment_polling")) if o.data.get("object")
    }
    polls = tmp_path / "polls"
    assert {str(p.relative_to(polls)) for p in polls.rglob("*.parquet")} == committed
    assert callback_outcomes["already_final"] > 0
    lost = [pid for pid in day.payment_ids() if webhook_lost(pid)]
    for payment_id in lost:
        for change in day.store.history(payment_id):
            if change.to_status in ("SETTLED", "FAILED"):
                assert change.request_id.startswith("poll:"), change
    # AND the checker would see a second settlement: a copy of a SETTLED change item, one version up
    victim = next(p for p in day.payment_ids() if day.store.get(p).status == "SETTLED")  # type: ignore[union-attr]
    _forge_second_settlement(payments_table, day.store, victim)
    tampered = day.check()
    assert tampered["settled_twice"] == tampered["wrong_settle_counts"] == 1, tampered
    assert tampered["examples"]["settled_twice"] == [victim]


def _forge_second_settlement(table: Table, store: PaymentStore, payment_id: str) -> None:
    """What a poller without the guard would leave: a second change into SETTLED (version n + 1)."""
    last = store.history(payment_id)[-1]
    raw = table.client.get_item(
        TableName=table.name, Key={"pk": {"S": f"changes#{last.shard}"}, "sk": {"S": last.sk}}
    )["Item"]
    sk = f"{last.at_ms + 1:013d}#{payment_id}#{last.version + 1:06d}"
    table.client.put_item(
        TableName=table.name,
        Item={
            **raw,
            "sk": {"S": sk},
            "version": {"N": str(last.version + 1)},
            "from_status": {"S": "SETTLED"},
        },
    )
    table.client.update_item(
        TableName=table.name,
        Key={"pk": {"S": f"payment#{payment_id}"}, "sk": {"S": "payment"}},
        UpdateExpression="SET version = :v, change_sks = list_append(change_sks, :sk)",
        ExpressionAttributeValues={":v": {"N": str(last.version + 1)}, ":sk": {"L": [{"S": sk}]}},
    )
