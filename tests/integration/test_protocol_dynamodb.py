"""The protocol against DynamoDB Local, the official engine: the shared contract, races, lost responses,
and the items' physical shape (TTL attributes)."""

from __future__ import annotations

import json
import math
import multiprocessing
import sys
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest
from botocore.exceptions import ReadTimeoutError
from botocore.httpsession import URLLib3Session
from leanopsctl.cost import OUTPUT_ITEM_WRITE_UNITS

from leanops.errors import LockLost
from leanops.protocol import Acquired, Advance, Protocol, Release, Retention, RunRecord, TopicRef
from leanops.protocol.dynamodb import CHECKPOINT_SK, LOCK_SK, DynamoDBStore
from leanops.protocol.model import PushedTopic
from leanops.protocol.service import DEFAULT_LOCK_GC_GRACE_SECONDS
from leanops.protocol.table import PARTITION_KEY, SORT_KEY, TTL_ATTRIBUTE
from tests.support.clock import FakeClock
from tests.support.protocol_contract import (
    LEASE_S,
    SKEW_MS,
    ProtocolContract,
    acquired,
    batch_output,
    commit_batches,
    new_topic,
)
from tests.support.race import race_acquire

pytestmark = pytest.mark.integration


@pytest.fixture
def make_protocol(state_table):
    def make(clock=None, skew_margin_ms=SKEW_MS, client=None):
        store = DynamoDBStore(state_table.name, client or state_table.client)
        return Protocol(store, clock=clock or FakeClock(), skew_margin_ms=skew_margin_ms)

    return make


class TestProtocolDynamoDB(ProtocolContract):
    """Every contract test, on DynamoDB Local."""


def raw_item(state_table, topic: TopicRef, sort_key: str) -> dict:
    response = state_table.client.get_item(
        TableName=state_table.name,
        Key={PARTITION_KEY: {"S": topic.key}, SORT_KEY: {"S": sort_key}},
        ConsistentRead=True,
    )
    return response.get("Item", {})


# --- I1: exactly one winner, every round ---------------------------------------------------------------


def test_threads_racing_to_acquire_have_exactly_one_winner_every_round(state_table, ddb_client_factory):
    threads, rounds = 8, 60
    protocols = [Protocol(DynamoDBStore(state_table.name, ddb_client_factory())) for _ in range(threads)]
    barrier = threading.Barrier(threads)
    prefix = f"race-{uuid.uuid4().hex[:8]}"

    def contender(index: int) -> list[bool]:
        wins = []
        for round_no in range(rounds):
            barrier.wait()
            result = protocols[index].acquire(TopicRef(f"{prefix}-{round_no}"), f"exec-{index}", 60)
            wins.append(isinstance(result, Acquired))
        return wins

    previous = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # preempt threads as often as possible (design §6)
    try:
        with ThreadPoolExecutor(threads) as pool:
            results = list(pool.map(contender, range(threads)))
    finally:
        sys.setswitchinterval(previous)
    winners_per_round = [sum(result[r] for result in results) for r in range(rounds)]
    assert winners_per_round == [1] * rounds


def test_processes_racing_to_acquire_have_exactly_one_winner_every_round(state_table):
    processes, rounds = 4, 40
    context = multiprocessing.get_context("spawn")
    barrier = context.Manager().Barrier(processes)
    prefix = f"prace-{uuid.uuid4().hex[:8]}"
    with context.Pool(processes) as pool:
        pending = [
            pool.apply_async(
                race_acquire,
                (state_table.endpoint_url, state_table.name, prefix, rounds, f"exec-{i}", barrier),
            )
            for i in range(processes)
        ]
        results = [p.get(timeout=120) for p in pending]
    winners_per_round = [sum(result[r] for result in results) for r in range(rounds)]
    assert winners_per_round == [1] * rounds


# --- I7: a write that landed but whose response was lost is recognised as ours -------------------------


def lose_first_response(client, operation: str) -> dict:
    """Make the first ``operation`` land but its response time out, so botocore retries it."""
    http = URLLib3Session()
    seen = {"lost": 0}

    def handler(request, **_):
        if seen["lost"] == 0:
            seen["lost"] += 1
            http.send(request)  # the request reaches DynamoDB and takes effect...
            raise ReadTimeoutError(endpoint_url=request.url)  # ...but the caller never hears back

    client.meta.events.register(f"before-send.dynamodb.{operation}", handler)
    return seen


def test_acquire_whose_response_was_lost_is_recognised_as_ours(make_protocol, ddb_client_factory):
    client = ddb_client_factory()
    seen = lose_first_response(client, "UpdateItem")
    protocol, topic = make_protocol(client=client), new_topic()
    # WHEN the acquire lands, its response is lost, and the SDK retries it
    got = protocol.acquire(topic, "exec-a", LEASE_S)
    # THEN the retry's failed condition shows our own lock (ALL_OLD), and we hold it under the fence of our
    # one acquisition (not bumped by the retry)
    assert seen["lost"] == 1
    assert (
        isinstance(got, Acquired) and got.lease.fence == protocol.status(topic).lock.fence and got.reentrant
    )
    assert protocol.status(topic).lock.owner == "exec-a"


def test_commit_whose_response_was_lost_commits_once(make_protocol, ddb_client_factory):
    client = ddb_client_factory()
    protocol, topic = make_protocol(client=client), new_topic()
    run = acquired(protocol.acquire(topic, "exec-a", LEASE_S))
    seen = lose_first_response(client, "TransactWriteItems")
    output = batch_output("k#10")
    done = protocol.commit(run.lease, run.checkpoint, Advance("k#10", output=output), release=True)
    assert seen["lost"] == 1
    assert done.checkpoint.position == "k#10" and done.released
    assert protocol.read_checkpoint(topic).seq == 1
    # the retried transaction was cancelled by its own landed checkpoint: one output record
    assert [record.data for record in protocol.outputs(topic)] == [output]


# --- output records: in the commit's transaction, expiring after their retention, paged by Query ---------


def count_calls(client) -> list[tuple[str, dict]]:
    """Every API call the client makes from now on: (operation, parameters)."""
    calls: list[tuple[str, dict]] = []
    client.meta.events.register(
        "provide-client-params.dynamodb", lambda params, model, **_: calls.append((model.name, params))
    )
    return calls


def test_output_rides_in_the_commit_transaction_and_expires_after_the_outputs_retention(
    make_protocol, state_table, ddb_client_factory
):
    client = ddb_client_factory()
    clock = FakeClock()
    protocol, topic = make_protocol(clock=clock, client=client), new_topic()
    run = acquired(protocol.acquire(topic, "exec-a", LEASE_S))
    calls = count_calls(client)
    protocol.commit(run.lease, run.checkpoint, Advance("k#10", output=batch_output("k#10")), release=True)
    # one request: the transaction writes checkpoint, lock and output items
    assert [(name, len(params["TransactItems"])) for name, params in calls] == [("TransactWriteItems", 3)]
    item = raw_item(state_table, topic, "output#000000000001")
    assert int(item[TTL_ATTRIBUTE]["N"]) == clock.now_ms // 1000 + Retention().outputs_days * 86_400
    assert item["committed_at"] == {"N": str(clock.now_ms)}
    assert item["quarantine"] == {"NULL": True} and item["ratio"] == {"N": "0.99"}
    # the cost model's 2 write units: a transactional write of an item under 1 KB (its low-level JSON is
    # longer than DynamoDB's count of names and values)
    assert 2 * math.ceil(len(json.dumps(item)) / 1024) == OUTPUT_ITEM_WRITE_UNITS


def test_outputs_query_no_more_than_the_limit_needs(make_protocol, ddb_client_factory):
    client = ddb_client_factory()
    protocol, topic = make_protocol(client=client), new_topic()
    commit_batches(protocol, topic, 5)
    calls = count_calls(client)
    assert [r.seq for r in protocol.store.outputs(topic, newest_first=True, limit=4, page_size=2)] == [
        5,
        4,
        3,
        2,
    ]
    assert [r.seq for r in protocol.outputs(topic, limit=2)] == [1, 2]
    assert [(name, params.get("Limit"), params["ConsistentRead"]) for name, params in calls] == [
        ("Query", 2, True),
        ("Query", 2, True),
        ("Query", 2, True),
    ]


# --- TTL: on locks (after the lease), never on checkpoints; never decides who holds the lock -----------


def test_lock_ttl_is_a_day_after_the_lease_and_checkpoints_have_none(make_protocol, state_table):
    protocol, topic = make_protocol(clock=FakeClock()), new_topic()
    run = acquired(protocol.acquire(topic, "exec-a", LEASE_S))
    lock = raw_item(state_table, topic, LOCK_SK)
    ttl = int(lock[TTL_ATTRIBUTE]["N"])
    assert ttl >= run.lease.expires_at_ms // 1000 + DEFAULT_LOCK_GC_GRACE_SECONDS
    protocol.commit(run.lease, run.checkpoint, Advance("k#1"), lease_seconds=LEASE_S)
    assert TTL_ATTRIBUTE not in raw_item(state_table, topic, CHECKPOINT_SK)
    protocol.release(run.lease)
    # a free lock slot keeps its fence counter and checkpoint copy, and no TTL
    assert TTL_ATTRIBUTE not in raw_item(state_table, topic, LOCK_SK)


def test_lock_item_deleted_by_ttl_loses_nothing(make_protocol, state_table):
    clock = FakeClock()
    protocol, topic = make_protocol(clock=clock), new_topic()
    dead = acquired(protocol.acquire(topic, "exec-a", LEASE_S))
    protocol.commit(dead.lease, dead.checkpoint, Advance("k#10", 5, 9), lease_seconds=LEASE_S)
    # GIVEN the run died and TTL deleted its lock item a day later (with the checkpoint copy on it)
    state_table.client.delete_item(
        TableName=state_table.name, Key={PARTITION_KEY: {"S": topic.key}, SORT_KEY: {"S": LOCK_SK}}
    )
    clock.advance((LEASE_S + DEFAULT_LOCK_GC_GRACE_SECONDS + 60) * 1000)
    # WHEN the next run acquires
    nxt = acquired(protocol.acquire(topic, "exec-b", LEASE_S))
    # THEN it starts from the authoritative checkpoint item
    assert (nxt.checkpoint.position, nxt.checkpoint.seq) == ("k#10", 1)
    with pytest.raises(LockLost):
        protocol.commit(dead.lease, dead.checkpoint, Advance("k#20"), release=True)


def test_racing_definitions_of_one_backfill_define_it_once_in_one_transaction(
    make_protocol, ddb_client_factory
):
    """Threads with clients of their own define the same sink's backfill with different bounds: one
    definition wins, every caller gets it back; its checkpoint, output record and audit record exist once."""
    topic = new_topic()

    def define(n: int):
        protocol = make_protocol(client=ddb_client_factory())
        return protocol.define_backfill(
            topic, start=f"k#{n}", end="z#0", sink="s3://lake/replay", format="jsonl", compression="none",
            actor=f"ops-{n}", reason="race",
        )  # fmt: skip

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(define, range(8)))
    winners = [backfill for backfill, created in results if created]
    assert len(winners) == 1 and {backfill for backfill, _ in results} == set(winners)
    protocol = make_protocol()
    [winner] = winners
    assert protocol.read_backfill(topic, winner.id) == winner
    assert protocol.read_checkpoint(winner.ref).position == winner.start
    assert [r.seq for r in protocol.outputs(winner.ref)] == [1]
    assert [r.action for r in protocol.audit(topic)] == ["backfill"]
    assert [b.id for b in protocol.backfills(topic)] == [winner.id]


def test_the_resume_hint_is_stored_without_repeating_the_position(make_protocol, state_table):
    """The checkpoint and the lock's copy keep the hint, but its position once: a long key twice would cost
    every lock write a second write unit."""
    protocol, topic = make_protocol(), new_topic()
    run = protocol.acquire(topic, "exec-1", LEASE_S)
    position = "day=2026-11-22/" + "k" * 300 + ".jsonl#1000"
    hint = {"position": position, "byte": 52_428_800, "size": 52_428_800, "version": '"9b2cf535f2"'}
    protocol.commit(run.lease, run.checkpoint, Advance(position, resume=hint), release=True)
    for sort_key, attribute in ((CHECKPOINT_SK, "resume"), (LOCK_SK, "cp")):
        stored = raw_item(state_table, topic, sort_key)[attribute]["M"]
        stored = stored if attribute == "resume" else stored["resume"]["M"]
        assert "position" not in stored and stored["byte"] == {"N": "52428800"}
    assert protocol.read_checkpoint(topic).resume == hint
    assert protocol.acquire(topic, "exec-2", LEASE_S).checkpoint.resume == hint


# --- history: every kind expires after its retention; state never does (docs/decisions/0014) -------------


def test_history_items_expire_after_their_retention_and_state_items_never(state_table):
    clock = FakeClock()
    retention = Retention(runs_days=2, outputs_days=3, audit_days=5)
    protocol = Protocol(DynamoDBStore(state_table.name, state_table.client, retention), clock=clock)
    topic = new_topic()
    run = acquired(protocol.acquire(topic, "exec-a", LEASE_S))
    ended = RunRecord("exec-a", "processed", clock.now_ms - 5_000, clock.now_ms, batches=1, records=3)
    protocol.commit(
        run.lease, run.checkpoint, Advance("k#1", output=batch_output("k#1")), release=True, run=ended
    )
    protocol.pause(topic, actor="ops", reason="maintenance")
    pushed = PushedTopic(topic.topic, {"batch_size": 10}, 1, "d1", "ops", clock.now_ms)
    protocol.store.push_topic(pushed, expected_version=None)
    now_s = clock.now_ms // 1000
    expiry = {
        item[SORT_KEY]["S"].split("#")[0]: int(item[TTL_ATTRIBUTE]["N"]) if TTL_ATTRIBUTE in item else None
        for item in state_table.client.query(
            TableName=state_table.name,
            KeyConditionExpression="pk = :pk",
            ExpressionAttributeValues={":pk": {"S": topic.key}},
            ConsistentRead=True,
        )["Items"]
    }
    day = 86_400
    assert expiry == {
        "checkpoint": None,
        "lock": None,
        "runlog": now_s + 2 * day,
        "output": now_s + 3 * day,
        "audit": now_s + 5 * day,
        "config": now_s + 5 * day,
    }
    # the topic's current settings never expire
    assert (
        TTL_ATTRIBUTE
        not in state_table.client.get_item(
            TableName=state_table.name,
            Key={PARTITION_KEY: {"S": "leanops#topics"}, SORT_KEY: {"S": topic.topic}},
        )["Item"]
    )
    record = raw_item(state_table, topic, ended.key)
    assert record["outcome"] == {"S": "processed"} and record["lag_ms"] == {"NULL": True}


def test_a_refused_release_leaves_the_lock_alone_and_still_records_the_run(make_protocol, state_table):
    clock = FakeClock()
    protocol, topic = make_protocol(clock=clock), new_topic()
    first = acquired(protocol.acquire(topic, "exec-a", LEASE_S))
    clock.advance(LEASE_S * 1000 + SKEW_MS + 1)
    taker = acquired(protocol.acquire(topic, "exec-b", LEASE_S))  # took over
    late = RunRecord("exec-a", "up_to_date", clock.now_ms, clock.now_ms, fence=first.lease.fence)
    # the transaction of lock and record is cancelled as a whole; the record is then written alone
    assert protocol.release(first.lease, outcome="up_to_date", run=late) is Release.NOT_HELD
    assert raw_item(state_table, topic, LOCK_SK)["owner"] == {"S": "exec-b"}
    assert taker.lease.owner == "exec-b"
    assert raw_item(state_table, topic, late.key)["outcome"] == {"S": "up_to_date"}


def test_a_run_record_is_written_once(make_protocol, state_table):
    clock = FakeClock()
    protocol, topic = make_protocol(clock=clock), new_topic()
    skipped = RunRecord("exec-a", "skipped_locked", clock.now_ms, clock.now_ms)
    protocol.record_run(topic, skipped)
    protocol.record_run(topic, RunRecord("exec-a", "failed", clock.now_ms, clock.now_ms + 1, error="X"))
    assert raw_item(state_table, topic, skipped.key)["outcome"] == {"S": "skipped_locked"}
