"""The payment store of examples/payments against DynamoDB Local: the declared graph and its checks, every
pair of statuses allowed or refused by the guard, paid once, idempotent requests, unique tracking ids
under a race, the change feed, errors; and the acceptance stress (issue 14): 20 workers, 100 payments,
random transitions with retries and re-sent requests, then every invariant checked on the whole table."""

from __future__ import annotations

import contextlib
import importlib
import itertools
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from types import ModuleType
from typing import Any, NamedTuple

import pytest
from botocore.exceptions import ReadTimeoutError
from botocore.httpsession import URLLib3Session

from examples.payments import (
    PAYMENT_GRAPH,
    Graph,
    GraphError,
    InvalidRequest,
    Method,
    Outcome,
    PaymentExists,
    PaymentNotFound,
    PaymentStore,
    RequestIdReused,
    Status,
    TrackingIdTaken,
    create_table,
    shard_of,
)
from examples.payments.graph import TERMINAL, TRANSITIONS
from leanops.errors import StoreUnavailable
from tests.conftest import unique_table_name

pytestmark = pytest.mark.integration

BENCH = Path(__file__).resolve().parents[2] / "bench"
#: Transition attempts of the stress here: every payment reaches a terminal state within a few hundred, so
#: 3,000 race as much as more would, in a third of the time; the acceptance's 10,000 and more run in
#: `make bench` (bench/payments_store.py: 20,000, bench/results/payments.json).
STRESS_ATTEMPTS = int(os.environ.get("LEANOPS_PAYMENTS_STRESS_ATTEMPTS", "3000"))


class Table(NamedTuple):
    name: str
    client: Any


@pytest.fixture
def payments_table(
    dynamodb_local: Any, ddb_client_factory: Callable[..., Any], request: Any
) -> Iterator[Table]:
    """A new payments table per test, deleted afterwards."""
    client = ddb_client_factory()
    name = unique_table_name(request.node.name)
    create_table(client, name)
    try:
        yield Table(name, client)
    finally:
        with contextlib.suppress(client.exceptions.ResourceNotFoundException):
            client.delete_table(TableName=name)


@pytest.fixture
def store(payments_table: Table) -> PaymentStore:
    return PaymentStore(payments_table.client, payments_table.name)


@pytest.fixture(scope="module")
def stress() -> ModuleType:
    """bench/payments_store.py, imported as the script imports it (bench/ on sys.path, for ``common``)."""
    sys.path.insert(0, str(BENCH))
    try:
        return importlib.import_module("payments_store")
    finally:
        sys.path.remove(str(BENCH))


_ids = itertools.count()


def new_payment(store: PaymentStore, **overrides: Any) -> str:
    """A new payment in CREATED; returns its id."""
    n = next(_ids)
    fields: dict[str, Any] = {
        "request_id": f"create-{n}-{time.time_ns()}",
        "payment_id": f"pay-{n}-{time.time_ns()}",
        "amount_cents": 12_345,
        "currency": "USD",
        "fee_type": "filing",
        "method": Method.ACH,
        "tracking_id": f"trk-{n}-{time.time_ns()}",
        **overrides,
    }
    return store.create(**fields).payment_id


def walk_to(store: PaymentStore, payment_id: str, status: str) -> None:
    """Move a new payment along the graph's shortest path to ``status``."""
    for version, target in enumerate(PAYMENT_GRAPH.path_to(status)[1:], start=1):
        result = store.transition(f"walk-{payment_id}-{version}", payment_id, target, version)
        assert result.outcome is Outcome.APPLIED, result


def items(table: Table) -> list[dict[str, Any]]:
    found, start = [], None
    while True:
        page = table.client.scan(TableName=table.name, **({"ExclusiveStartKey": start} if start else {}))
        found += page["Items"]
        start = page.get("LastEvaluatedKey")
        if not start:
            return found


# --- the graph -------------------------------------------------------------------------------------------


def test_the_declared_graph_is_checked_and_compiled_into_guards() -> None:
    # GIVEN the graph as the module declares it (checked when it was imported)
    graph = PAYMENT_GRAPH
    # THEN it is the declared mapping, its terminal states have no exits, the others have
    assert {s: set(t) for s, t in graph.transitions.items()} == {s: set(t) for s, t in TRANSITIONS.items()}
    assert graph.terminal == {"SETTLED", "FAILED", "CANCELLED"} == set(TERMINAL)
    assert all(not graph.transitions[s] for s in graph.terminal)
    assert graph.longest_path == 3  # CREATED -> SUBMITTED -> PENDING -> SETTLED | FAILED
    # AND a transition to X is guarded by X's predecessors and the expected version
    assert graph.guards["SETTLED"].expression == "#status IN (:from_0) AND #version = :expected"
    assert graph.guards["SETTLED"].values_for(3) == {":from_0": {"S": "PENDING"}, ":expected": {"N": "3"}}
    assert graph.guards["CANCELLED"].expression == "#status IN (:from_0, :from_1) AND #version = :expected"
    assert graph.guards["CANCELLED"].predecessors == ("CREATED", "SUBMITTED")
    assert graph.guards["FAILED"].predecessors == graph.guards["SETTLED"].predecessors == ("PENDING",)
    assert graph.guard("CREATED") is None  # nothing moves back to the start


@pytest.mark.parametrize(
    ("transitions", "terminal", "problem"),
    [
        ({"A": {"B"}, "B": set(), "C": set()}, {"B", "C"}, "C is not reachable from A"),
        ({"A": {"B"}, "B": {"A"}}, {"B"}, "terminal state B has exits: A"),
        ({"A": {"B", "C"}, "B": set(), "C": set()}, {"B"}, "C has no exit and is not declared terminal"),
        ({"A": {"B"}, "B": {"C"}, "C": {"B", "D"}, "D": set()}, {"D"}, "cycle: B -> C -> B"),
        ({"A": {"B", "X"}, "B": set()}, {"B"}, "A -> X: X is not declared"),
        ({"A": {"B"}, "B": set()}, {"B", "Z"}, "terminal state Z is not declared"),
    ],
)
def test_a_graph_breaking_a_rule_is_refused(transitions: Any, terminal: Any, problem: str) -> None:
    with pytest.raises(GraphError, match=problem):
        Graph(transitions, initial="A", terminal=terminal)


# --- each pair of statuses -------------------------------------------------------------------------------


@pytest.mark.parametrize("from_status", list(Status))
def test_every_edge_is_allowed_and_every_other_move_refused_writing_nothing(
    payments_table: Table, from_status: Status
) -> None:
    store = PaymentStore(payments_table.client, payments_table.name)
    for to_status in Status:
        # GIVEN a payment walked to from_status
        payment_id = new_payment(store)
        walk_to(store, payment_id, from_status)
        before = store.get(payment_id)
        assert before is not None and before.status == from_status
        history_before = store.history(payment_id)
        count_before = len(items(payments_table))
        # WHEN it is asked to move to to_status from the version it is at
        result = store.transition(f"move-{payment_id}", payment_id, to_status, before.version)
        after = store.get(payment_id)
        assert after is not None
        if PAYMENT_GRAPH.is_edge(from_status, to_status):
            # THEN an edge is applied: one version up, one change, from and to as asked
            assert result.outcome is Outcome.APPLIED, (from_status, to_status, result)
            assert result.payment == after
            assert (after.status, after.version) == (to_status, before.version + 1)
            change = store.history(payment_id)[-1]
            assert (change.from_status, change.to_status, change.version) == (
                from_status,
                to_status,
                after.version,
            )
            assert len(items(payments_table)) == count_before + 2  # its change and its request
        else:
            # THEN anything else is invalid, and nothing is written
            assert result.outcome is Outcome.INVALID, (from_status, to_status, result)
            assert result.payment in (
                before,
                None,
            )  # None: no status moves to CREATED, known without a request
            assert after == before
            assert store.history(payment_id) == history_before
            assert len(items(payments_table)) == count_before


def test_a_stale_version_is_a_conflict_that_returns_the_payment_and_writes_nothing(
    payments_table: Table, store: PaymentStore, ddb_client_factory: Callable[..., Any]
) -> None:
    # GIVEN a payment that another client moved to SUBMITTED after this store last saw it (at CREATED, v1)
    payment_id = new_payment(store)
    other = PaymentStore(ddb_client_factory(), payments_table.name)
    assert other.transition("r-submit", payment_id, "SUBMITTED", 1).applied
    count = len(items(payments_table))
    # WHEN this store cancels it as of version 1 (an edge from CREATED, and CANCELLED is reachable from
    # SUBMITTED too: only the version condition tells them apart)
    result = store.transition("r-cancel", payment_id, "CANCELLED", 1)
    # THEN the guard refuses it as a conflict, with the payment as it is, and writes nothing
    assert result.outcome is Outcome.CONFLICT
    assert result.payment is not None and (result.payment.status, result.payment.version) == ("SUBMITTED", 2)
    assert "version 2" in (result.reason or "")
    assert len(items(payments_table)) == count
    # AND after reading again, the same move from the current version is applied
    assert store.transition("r-cancel", payment_id, "CANCELLED", 2).applied


def test_a_payment_is_paid_once_even_when_many_settle_it_at_once(
    payments_table: Table, ddb_client_factory: Callable[..., Any]
) -> None:
    store = PaymentStore(
        payments_table.client, payments_table.name, clock=lambda: time.time_ns() // 1_000_000
    )
    for _ in range(3):
        # GIVEN a pending payment and 10 threads, each with its own client, settling or failing it at once
        payment_id = new_payment(store)
        walk_to(store, payment_id, "PENDING")
        stores = [PaymentStore(ddb_client_factory(), payments_table.name) for _ in range(10)]
        for s in stores:
            s.get(payment_id)
        barrier = threading.Barrier(len(stores))
        results: list[Any] = [None] * len(stores)

        def settle(
            i: int,
            s: PaymentStore,
            payment_id: str = payment_id,
            barrier: Any = barrier,
            results: Any = results,
        ) -> None:
            target, error_code = ("SETTLED", None) if i % 3 else ("FAILED", "402")
            barrier.wait()
            results[i] = s.transition(f"settle-{payment_id}-{i}", payment_id, target, 3, error_code)

        threads = [threading.Thread(target=settle, args=(i, s)) for i, s in enumerate(stores)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        # THEN exactly one wins; every other one is a conflict returning the winner's payment
        outcomes = sorted(r.outcome for r in results)
        assert outcomes == [Outcome.APPLIED] + [Outcome.CONFLICT] * 9, outcomes
        winner = next(r.payment for r in results if r.applied)
        assert all(r.payment == winner for r in results)
        history = store.history(payment_id)
        assert [c.to_status for c in history] == ["CREATED", "SUBMITTED", "PENDING", winner.status]
        if winner.status == "SETTLED":
            assert winner.paid_at_ms == history[-1].at_ms
        else:
            assert winner.paid_at_ms is None and winner.error_code == "402"
        # AND nothing leaves the terminal state, so paid_at_ms can never be set again
        for target in Status:
            again = store.transition(f"after-{payment_id}-{target}", payment_id, target, 4)
            assert again.outcome is Outcome.INVALID
        assert store.get(payment_id) == winner


# --- idempotent requests ---------------------------------------------------------------------------------


def test_a_repeated_request_returns_the_first_result_and_changes_nothing(
    payments_table: Table, store: PaymentStore, ddb_client_factory: Callable[..., Any]
) -> None:
    payment_id = new_payment(store)
    first = store.transition("req-1", payment_id, "SUBMITTED", 1)
    assert first.applied
    assert store.transition("req-2", payment_id, "PENDING", 2).applied
    count = len(items(payments_table))
    # WHEN req-1 is sent again, through this store and through another client that never saw the payment
    for s in (store, PaymentStore(ddb_client_factory(), payments_table.name)):
        again = s.transition("req-1", payment_id, "SUBMITTED", 1)
        # THEN the answer is the first one's payment, as req-1 left it, and nothing is written
        assert again.outcome is Outcome.DUPLICATE_REQUEST
        assert again.payment == first.payment
    assert len(items(payments_table)) == count
    assert store.get(payment_id).version == 3  # type: ignore[union-attr]
    # AND the same request id with other parameters is refused, writing nothing
    with pytest.raises(RequestIdReused):
        store.transition("req-1", payment_id, "CANCELLED", 1)
    with pytest.raises(RequestIdReused):
        store.transition("req-2", payment_id, "SETTLED", 3)
    assert len(items(payments_table)) == count


def test_a_create_sent_twice_creates_once(payments_table: Table, store: PaymentStore) -> None:
    args = ("create-once", "pay-once", 500, "USD", "renewal", "CARD", "trk-once")
    first = store.create(*args)
    count = len(items(payments_table))
    # WHEN the same create request comes again (later: another clock reading)
    again = PaymentStore(payments_table.client, payments_table.name, clock=lambda: 1).create(*args)
    # THEN it returns the payment the first one created, and writes nothing
    assert again == first
    assert len(items(payments_table)) == count
    assert [c.request_id for c in store.history("pay-once")] == ["create-once"]
    # AND another request for the same payment id is refused, as is the request id with other values
    with pytest.raises(PaymentExists):
        store.create("create-other", *args[1:])
    with pytest.raises(RequestIdReused):
        store.create("create-once", "pay-once", 501, "USD", "renewal", "CARD", "trk-once")
    assert len(items(payments_table)) == count


def lose_first_response(client: Any, operation: str) -> dict[str, int]:
    """Make the first ``operation`` land but its response time out, so botocore retries it."""
    http = URLLib3Session()
    seen = {"lost": 0}

    def handler(request: Any, **_: Any) -> None:
        if seen["lost"] == 0:
            seen["lost"] += 1
            http.send(request)  # the request reaches DynamoDB and takes effect...
            raise ReadTimeoutError(endpoint_url=request.url)  # ...but the caller never hears back

    client.meta.events.register(f"before-send.dynamodb.{operation}", handler)
    return seen


def test_a_request_whose_response_was_lost_is_written_once_and_answered_with_its_result(
    payments_table: Table, ddb_client_factory: Callable[..., Any]
) -> None:
    client = ddb_client_factory()
    store = PaymentStore(client, payments_table.name)
    payment_id = new_payment(store)
    count = len(items(payments_table))
    # WHEN the transition lands, its response is lost, and the SDK sends it again
    seen = lose_first_response(client, "TransactWriteItems")
    result = store.transition("r-lost", payment_id, "SUBMITTED", 1)
    # THEN the second sending carries the first one's ClientRequestToken (the SDK fills it in), which
    # DynamoDB answers with the first one's success: applied, and written once
    assert seen["lost"] == 1
    assert result.outcome is Outcome.APPLIED
    assert result.payment == store.get(payment_id)
    assert (result.payment.status, result.payment.version) == ("SUBMITTED", 2)  # type: ignore[union-attr]
    assert [c.request_id for c in store.history(payment_id)][1:] == ["r-lost"]
    assert len(items(payments_table)) == count + 2
    # AND the caller that never heard back sends it again (later, through another client): the first result
    again = PaymentStore(ddb_client_factory(), payments_table.name).transition(
        "r-lost", payment_id, "SUBMITTED", 1
    )
    assert again.outcome is Outcome.DUPLICATE_REQUEST and again.payment == result.payment
    assert len(items(payments_table)) == count + 2


# --- tracking ids ----------------------------------------------------------------------------------------


def test_creates_racing_for_one_tracking_id_have_exactly_one_winner(
    payments_table: Table, ddb_client_factory: Callable[..., Any]
) -> None:
    threads, rounds = 8, 10
    stores = [PaymentStore(ddb_client_factory(), payments_table.name) for _ in range(threads)]
    barrier = threading.Barrier(threads)
    outcomes: list[list[str]] = [[] for _ in range(threads)]

    def race(i: int) -> None:
        for round_no in range(rounds):
            barrier.wait()
            try:
                stores[i].create(
                    f"c-{round_no}-{i}",
                    f"p-{round_no}-{i}",
                    100,
                    "USD",
                    "filing",
                    "WIRE",
                    f"shared-{round_no}",
                )
                outcomes[i].append("won")
            except TrackingIdTaken as taken:
                assert taken.holder is not None and taken.holder.startswith(f"p-{round_no}-")
                outcomes[i].append(f"lost to {taken.holder}")

    workers = [threading.Thread(target=race, args=(i,)) for i in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    store = stores[0]
    for round_no in range(rounds):
        results = [outcomes[i][round_no] for i in range(threads)]
        assert results.count("won") == 1, results
        winner = f"p-{round_no}-{results.index('won')}"
        assert all(r in ("won", f"lost to {winner}") for r in results)
        created = [i for i in range(threads) if store.get(f"p-{round_no}-{i}") is not None]
        assert created == [results.index("won")]  # the losers wrote nothing


# --- the feed, errors ------------------------------------------------------------------------------------


def test_the_change_feed_pages_through_each_shard_and_holds_every_history(
    payments_table: Table, store: PaymentStore
) -> None:
    ticks = itertools.count(1_800_000_000_000)
    store = PaymentStore(payments_table.client, payments_table.name, shards=4, clock=lambda: next(ticks))
    ids = [new_payment(store) for _ in range(12)]
    for i, payment_id in enumerate(ids):
        walk_to(store, payment_id, ["SUBMITTED", "SETTLED", "CANCELLED"][i % 3])
    fed = []
    for shard in range(4):
        page, after = [], None
        while True:
            page = store.changes(shard, after_sk=after, limit=3)
            assert len(page) <= 3
            fed += page
            if len(page) < 3:
                break
            after = page[-1].sk
        in_shard = [c for c in fed if c.shard == shard]
        assert [c.sk for c in in_shard] == sorted(c.sk for c in in_shard)
        assert all(shard_of(c.payment_id, 4) == shard for c in in_shard)
    assert len({c.shard for c in fed}) > 1
    histories = [c for payment_id in ids for c in store.history(payment_id)]
    assert sorted(fed, key=lambda c: c.sk) == sorted(histories, key=lambda c: c.sk)
    settled = [c for c in fed if c.to_status == "SETTLED"]
    assert len(settled) == 4 and all(c.from_status == "PENDING" and c.amount_cents == 12_345 for c in settled)


def test_errors_are_outcomes_or_one_clear_exception(
    payments_table: Table, store: PaymentStore, ddb_client_factory: Callable[..., Any]
) -> None:
    with pytest.raises(PaymentNotFound):
        store.transition("r-missing", "no-such-payment", "SUBMITTED", 1)
    assert store.get("no-such-payment") is None and store.history("no-such-payment") == []
    payment_id = new_payment(store)
    for bad in (
        lambda: store.transition("r", payment_id, "PAID", 1),
        lambda: store.transition("r", payment_id, "SUBMITTED", 0),
        lambda: store.transition("r#1", payment_id, "SUBMITTED", 1),
        lambda: store.create("r", "p", -5, "USD", "filing", "ACH", "t"),
        lambda: store.create("r", "p", 5, "usd", "filing", "ACH", "t"),
        lambda: store.create("r", "p", 5, "USD", "filing", "CHEQUE", "t"),
    ):
        with pytest.raises(InvalidRequest):
            bad()
    missing = PaymentStore(ddb_client_factory(), "no-such-table")
    with pytest.raises(StoreUnavailable, match="does not exist"):
        missing.transition("r", payment_id, "SUBMITTED", 1)


# --- the acceptance stress -------------------------------------------------------------------------------


def test_stress_twenty_workers_random_transitions_keep_every_invariant(
    stress: ModuleType, payments_table: Table, ddb_client_factory: Callable[..., Any]
) -> None:
    # GIVEN 20 workers, each with its own client, 100 payments (and 20 rival creates for their tracking ids)
    settings = replace(stress.FULL, attempts=STRESS_ATTEMPTS)
    assert (settings.workers, settings.payments) == (20, 100)
    # WHEN they apply random transitions, with retries after conflicts and re-sent requests
    run = stress.run_stress(ddb_client_factory, payments_table.name, settings)
    results = stress.figures(run, payments_table.client, payments_table.name)
    print({k: v for k, v in results.items() if not isinstance(v, dict | list)})
    # THEN every attempt was answered, and every kind of answer occurred
    assert results["errors"] == 0, results["error_examples"]
    assert results["attempts"] == STRESS_ATTEMPTS
    assert min(results[k] for k in ("applied", "conflicts", "duplicates", "invalid")) > 0, results
    assert results["creates"]["created"] == 100 and results["creates"]["tracking_id_taken"] == 20
    # AND no payment left a terminal state, none was paid twice, every history is a path of the graph with
    # versions 1..n, no tracking id is shared, and the answers match the table
    assert stress.violations(results) == {}, {
        **results["violation_examples"],
        **results["request_violation_examples"],
    }
    assert results["items"]["payments"] == 100
