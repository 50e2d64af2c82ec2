"""The protocol on the in-memory store: the shared contract plus request-budget and value checks."""

from __future__ import annotations

import pytest

from leanops.errors import InvalidInput
from leanops.protocol import Advance, Lease, Protocol, TopicRef
from leanops.protocol.memory import InMemoryStore
from leanops.protocol.model import MAX_OUTPUT_BYTES, RESERVED_OUTPUT_NAMES, position_order
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


class TestProtocolInMemory(ProtocolContract):
    @pytest.fixture
    def store(self):
        return InMemoryStore()

    @pytest.fixture
    def make_protocol(self, store):
        def make(clock=None, skew_margin_ms=SKEW_MS):
            return Protocol(store, clock=clock or FakeClock(), skew_margin_ms=skew_margin_ms)

        return make

    def test_steady_state_run_takes_two_requests(self, make_protocol, store):
        protocol, topic = make_protocol(), new_topic()
        first = acquired(protocol.acquire(topic, "exec-a", LEASE_S))
        protocol.commit(first.lease, first.checkpoint, Advance("k#1"), release=True)
        # WHEN a later run acquires, processes one batch, commits and releases
        before = store.requests
        run = acquired(protocol.acquire(topic, "exec-b", LEASE_S))
        protocol.commit(run.lease, run.checkpoint, Advance("k#2", output=batch_output("k#2")), release=True)
        # THEN the checkpoint came with the acquire, the output with the commit: two requests in all
        assert store.requests - before == 2

    def test_first_run_reads_the_checkpoint_once(self, make_protocol, store):
        protocol, topic = make_protocol(), new_topic()
        run = acquired(protocol.acquire(topic, "exec-a", LEASE_S))
        protocol.commit(run.lease, run.checkpoint, Advance("k#1"), release=True)
        assert store.requests == 3

    def test_extra_batch_costs_one_request(self, make_protocol, store):
        protocol, topic = make_protocol(), new_topic()
        run = acquired(protocol.acquire(topic, "exec-a", LEASE_S))
        before = store.requests
        one = protocol.commit(
            run.lease, run.checkpoint, Advance("k#1", output=batch_output("k#1")), lease_seconds=LEASE_S
        )
        assert store.requests - before == 1 and one.lease is not None

    def test_outputs_take_one_request_per_page(self, make_protocol, store):
        protocol, topic = make_protocol(), new_topic()
        commit_batches(protocol, topic, 5)
        before = store.requests
        assert len(list(store.outputs(topic, newest_first=False, limit=None, page_size=2))) == 5
        assert store.requests - before == 3

    def test_continuing_commit_requires_a_lease_length(self, make_protocol):
        protocol, topic = make_protocol(), new_topic()
        run = acquired(protocol.acquire(topic, "exec-a", LEASE_S))
        with pytest.raises(InvalidInput, match="lease_seconds"):
            protocol.commit(run.lease, run.checkpoint, Advance("k#1"))


@pytest.mark.parametrize(
    ("smaller", "larger"),
    [
        ("a#9", "a#10"),
        ("a#10", "b#0"),
        ("2026/11/25/10:00.jsonl#3", "2026/11/25/10:00.jsonl#4"),
        ("a.jsonl#5", "a.jsonl.gz#0"),
        ("key-without-offset", "key-without-offset#1"),
    ],
)
def test_position_order(smaller, larger):
    assert position_order(smaller) < position_order(larger)


def test_lease_round_trips_through_json():
    lease = Lease(TopicRef("vehicle_telemetry", "p1"), "arn:exec", 3, 1_800_000_000_000)
    assert Lease.from_json(lease.to_json()) == lease


@pytest.mark.parametrize(
    "data",
    [{}, {"topic": "t", "owner": "o", "fence": 0, "expires_at_ms": 1}, {"topic": "a b", "owner": "o"}],
)
def test_malformed_leases_are_refused(data):
    with pytest.raises(InvalidInput):
        Lease.from_json(data)


def test_empty_position_is_refused():
    with pytest.raises(InvalidInput, match="position"):
        Advance("")


def test_negative_skew_margin_is_refused():
    with pytest.raises(InvalidInput, match="skew margin"):
        Protocol(InMemoryStore(), skew_margin_ms=-1)


@pytest.mark.parametrize(
    ("output", "message"),
    [
        ([("object", "x")], "mapping"),
        ({1: "x"}, "string names"),
        ({"": "x"}, "string names"),
        *(({name: 1}, "reserved") for name in sorted(RESERVED_OUTPUT_NAMES)),
        ({"ratio": float("nan")}, "JSON"),
        ({"at": object()}, "JSON"),
        ({"records": list(range(MAX_OUTPUT_BYTES // 2))}, "name objects"),
    ],
)
def test_outputs_that_cannot_be_a_manifest_entry_are_refused(output, message):
    with pytest.raises(InvalidInput, match=message):
        Advance("k#1", output=output)


def test_advance_keeps_a_json_copy_of_its_output():
    given = {"source_keys": ("a.jsonl", "b.jsonl"), "details": {"n": 1}}
    advance = Advance("k#1", output=given)
    given["details"]["n"] = 2
    # tuples become lists (as DynamoDB returns them) and the caller's later changes do not leak in
    assert advance.output == {"source_keys": ["a.jsonl", "b.jsonl"], "details": {"n": 1}}


def test_output_records_read_back_are_copies():
    store = InMemoryStore()
    protocol, topic = Protocol(store, clock=FakeClock()), new_topic()
    commit_batches(protocol, topic, 1)
    [record] = protocol.outputs(topic)
    record.data["source_keys"].append("c.jsonl")
    [again] = protocol.outputs(topic)
    assert again.data["source_keys"] == ["a.jsonl", "b.jsonl"]


def test_a_transaction_conflict_is_retryable_not_a_verdict_on_the_conditions():
    # GIVEN DynamoDB cancels a commit because another transaction touched the items (TransactionConflict)
    import boto3
    from botocore.stub import Stubber

    from leanops.errors import StoreThrottled
    from leanops.protocol import Advance, Checkpoint, Lease
    from leanops.protocol.dynamodb import DynamoDBStore

    client = boto3.client("dynamodb", region_name="us-east-1")
    stubber = Stubber(client)
    stubber.add_client_error(
        "transact_write_items",
        service_error_code="TransactionCanceledException",
        service_message="Transaction cancelled, please refer cancellation reasons for specific reasons "
        "[TransactionConflict, None, None]",
        http_status_code=400,
        modeled_fields={
            "CancellationReasons": [{"Code": "TransactionConflict"}, {"Code": "None"}, {"Code": "None"}]
        },
    )
    protocol = Protocol(DynamoDBStore("t", client))
    lease = Lease(TopicRef("t"), "exec-1", 1, 2**40)
    # WHEN it commits, THEN the error is the retryable StoreThrottled, never LockLost or CheckpointConflict
    with stubber, pytest.raises(StoreThrottled):
        protocol.commit(lease, Checkpoint(), Advance("k#1", output={"object": "o"}), release=True)
