"""The payment provider simulator (examples/payments/provider.py): errors at their shares (4XX final, 5XX
transient), eventual and final settlement (ACH slower than CARD), callbacks duplicated and reordered at
their configured shares, the same history from the same seed, and safe use from many threads."""

from __future__ import annotations

import threading
from collections import Counter
from dataclasses import dataclass
from typing import Any

import pytest

from examples.payments.provider import (
    HOUR_MS,
    MINUTE_MS,
    Accepted,
    Callback,
    Failed,
    Method,
    PaymentProvider,
    Pending,
    ProviderConfig,
    Settled,
    SimulatedClock,
    Status,
    SubmitError,
    UnknownPayment,
)

START_MS = 1_767_225_600_000  # 2026-01-01T00:00:00Z
METHODS = (Method.ACH, Method.CARD, Method.WIRE)


def provider(**config: Any) -> PaymentProvider:
    return PaymentProvider(ProviderConfig(**config), SimulatedClock(START_MS))


def submit_with_retries(p: PaymentProvider, payment_id: str, amount: int, method: Method) -> list[Any]:
    """Submit, retrying 5XX answers (at most 20 times); every answer."""
    answers: list[Any] = []
    for _ in range(20):
        answer = p.submit(payment_id, amount, method)
        answers.append(answer)
        if isinstance(answer, Accepted) or not answer.transient:
            break
    return answers


@dataclass
class Day:
    """What a scripted driver saw: every answer, in order, and every callback."""

    answers: list[Any]
    callbacks: list[Callback]


def drive(p: PaymentProvider, payments: int = 300, polls_every_ms: int = 20 * MINUTE_MS) -> Day:
    """Submit ``payments`` payments a minute apart (retrying 5XX), then poll every pending one and read the
    callbacks every ``polls_every_ms`` until the provider has nothing left to say."""
    answers: list[Any] = []
    callbacks: list[Callback] = []
    cursor = p.clock.now_ms()
    accepted = []
    for i in range(payments):
        payment_id = f"pay-{i:05d}"
        got = submit_with_retries(p, payment_id, 1_000 + i, METHODS[i % 3])
        answers.extend(got)
        if isinstance(got[-1], Accepted):
            accepted.append(payment_id)
        p.clock.advance(MINUTE_MS)
    open_ = list(accepted)
    while open_ or p.clock.now_ms() <= (p.last_delivery_ms() or 0):
        p.clock.advance(polls_every_ms)
        still = []
        for payment_id in open_:
            answer = p.poll(payment_id)
            answers.append(answer)
            if isinstance(answer, Pending):
                still.append(payment_id)
        open_ = still
        now = p.clock.now_ms()
        callbacks.extend(p.callbacks(cursor))
        cursor = now
    return Day(answers, callbacks)


# --- submission ------------------------------------------------------------------------------------------


def test_errors_come_at_their_shares_4xx_final_5xx_transient():
    # GIVEN 10% 4XX and 20% 5XX
    p = provider(seed=3, client_error_share=0.10, server_error_share=0.20)
    first = [p.submit(f"pay-{i}", 500, Method.CARD) for i in range(3000)]
    refused = [a for a in first if isinstance(a, SubmitError) and not a.transient]
    transient = [a for a in first if isinstance(a, SubmitError) and a.transient]
    # THEN the first answers split at the configured shares
    assert len(refused) / 3000 == pytest.approx(0.10, abs=0.02)
    assert len(transient) / 3000 == pytest.approx(0.20, abs=0.02)
    assert {a.code for a in refused} <= {"402", "403", "422"}
    assert {a.code for a in transient} <= {"500", "502", "503"}
    # WHEN each is submitted again
    # THEN a refusal is final (the same code), a transient error may be accepted
    for answer in refused:
        again = p.submit(answer.payment_id, 500, Method.CARD)
        assert isinstance(again, SubmitError) and again.code == answer.code
        with pytest.raises(UnknownPayment):
            p.poll(answer.payment_id)
    retried = [p.submit(a.payment_id, 500, Method.CARD) for a in transient]
    assert sum(isinstance(a, Accepted) for a in retried) / len(retried) == pytest.approx(0.70, abs=0.06)
    assert set(p.refused()) >= {a.payment_id for a in refused}


def test_a_submission_repeated_after_acceptance_is_idempotent():
    p = provider(seed=1, client_error_share=0.0, server_error_share=0.0)
    first = p.submit("pay-1", 700, "ACH")
    assert isinstance(first, Accepted)
    p.clock.advance(HOUR_MS)
    again = p.submit("pay-1", 700, Method.ACH)
    assert isinstance(again, Accepted) and again.at_ms == first.at_ms
    conflict = p.submit("pay-1", 701, Method.ACH)
    assert isinstance(conflict, SubmitError) and conflict.code == "409" and not conflict.transient
    assert p.submit("pay-1", 700, Method.ACH).at_ms == first.at_ms  # the payment itself is unchanged
    bad = p.submit("pay-2", 0, Method.CARD)
    assert isinstance(bad, SubmitError) and bad.code == "400"
    with pytest.raises(ValueError):
        p.submit("pay-3", 100, "CHEQUE")
    with pytest.raises(UnknownPayment):
        p.poll("pay-never")


def test_latency_is_simulated_and_moves_the_clock_only_when_asked():
    p = provider(seed=5, latency_ms=(100, 300))
    before = p.clock.now_ms()
    answer = p.submit("pay-1", 100, Method.CARD)
    assert 100 <= answer.latency_ms <= 300
    assert p.clock.now_ms() == before + answer.latency_ms  # the call took its latency, simulated
    fixed = PaymentProvider(
        ProviderConfig(seed=5, latency_ms=(100, 300)), SimulatedClock(0), advance_clock=False
    )
    got = fixed.submit("pay-1", 100, Method.CARD)
    assert fixed.clock.now_ms() == 0 and isinstance(got, Accepted) and got.at_ms == got.latency_ms


# --- settlement ------------------------------------------------------------------------------------------


def test_settlement_is_eventual_and_final():
    # GIVEN 500 accepted payments, 20% of which will be declined
    p = provider(seed=11, client_error_share=0.0, server_error_share=0.0, decline_share=0.2)
    ids = [f"pay-{i}" for i in range(500)]
    for i, payment_id in enumerate(ids):
        assert isinstance(p.submit(payment_id, 100 + i, METHODS[i % 3]), Accepted)
    # WHEN they are polled every 30 minutes for two days
    seen: dict[str, list[Any]] = {payment_id: [] for payment_id in ids}
    answered: dict[str, list[int]] = {payment_id: [] for payment_id in ids}  # the clock at each answer
    for _ in range(96):
        p.clock.advance(30 * MINUTE_MS)
        for payment_id in ids:
            seen[payment_id].append(p.poll(payment_id))
            answered[payment_id].append(p.clock.now_ms())
    # THEN each was pending, then resolved once and for all: the same answer at every later poll
    for payment_id, answers in seen.items():
        states = [(type(a), getattr(a, "at_ms", None), getattr(a, "error_code", None)) for a in answers]
        first_resolved = next(i for i, a in enumerate(answers) if not isinstance(a, Pending))
        assert all(isinstance(a, Pending) for a in answers[:first_resolved])
        assert len(set(states[first_resolved:])) == 1
        # resolved after the last poll that said pending, at or before the first that did not
        times = [START_MS, *answered[payment_id]]
        assert times[first_resolved] < answers[first_resolved].at_ms <= times[first_resolved + 1]
    final = [answers[-1] for answers in seen.values()]
    assert all(isinstance(a, Settled | Failed) for a in final)
    assert sum(isinstance(a, Failed) for a in final) / len(final) == pytest.approx(0.2, abs=0.05)
    assert {a.error_code for a in final if isinstance(a, Failed)} <= {"402", "422"}
    assert p.outcomes() == {pid: _without_latency(a) for pid, a in zip(ids, final, strict=True)}


def _without_latency(answer: Any) -> Any:
    return type(answer)(**{**answer.__dict__, "latency_ms": 0})


def test_ach_settles_slower_than_card():
    p = provider(seed=2, client_error_share=0.0, server_error_share=0.0, decline_share=0.0)
    accepted = {}
    for i in range(300):
        method = METHODS[i % 3]
        answer = p.submit(f"pay-{i}", 100, method)
        assert isinstance(answer, Accepted)
        accepted[f"pay-{i}"] = (method, answer.at_ms)
    p.clock.advance(48 * HOUR_MS)
    delays: dict[Method, list[int]] = {m: [] for m in METHODS}
    for payment_id, outcome in p.outcomes().items():
        assert isinstance(outcome, Settled)
        method, at = accepted[payment_id]
        delays[method].append(outcome.at_ms - at)
    assert min(delays[Method.ACH]) > max(delays[Method.CARD])  # the defaults' ranges do not overlap
    assert sum(delays[Method.ACH]) / 100 > 10 * sum(delays[Method.CARD]) / 100
    assert max(delays[Method.CARD]) <= 10 * MINUTE_MS and min(delays[Method.ACH]) >= HOUR_MS


def test_callbacks_agree_with_polls_and_never_contradict_a_settlement():
    p = provider(seed=4, decline_share=0.3, duplicate_share=0.3, out_of_order_share=0.3)
    day = drive(p, payments=200)
    truth = p.outcomes()
    by_payment: dict[str, set[tuple[Status, int, str | None]]] = {}
    for c in day.callbacks:
        assert c.delivered_ms >= c.at_ms
        by_payment.setdefault(c.payment_id, set()).add((c.status, c.at_ms, c.error_code))
    assert set(by_payment) == set(truth)  # every accepted payment, no other
    for payment_id, events in by_payment.items():
        final = truth[payment_id]
        assert isinstance(final, Settled | Failed)  # drive() polls until every payment resolved
        resolutions = {e for e in events if e[0] is not Status.PENDING}
        assert resolutions == {(Status(final.status), final.at_ms, getattr(final, "error_code", None))}
        assert len(events) == 2  # pending and its one resolution: never settled and failed


# --- callbacks: duplicates and reordering ----------------------------------------------------------------


@pytest.mark.parametrize(("duplicates", "reordered"), [(0.1, 0.2), (0.3, 0.05), (0.0, 0.0)])
def test_duplicates_and_reordering_occur_at_the_configured_shares(duplicates, reordered):
    # GIVEN a provider delivering some events twice and some late
    p = provider(
        seed=21,
        client_error_share=0.0,
        server_error_share=0.0,
        duplicate_share=duplicates,
        out_of_order_share=reordered,
    )
    # WHEN a consumer reads every callback
    day = drive(p, payments=1500)
    # THEN a share of the events came twice, and a share came after a later event
    events = Counter(c.key for c in day.callbacks)
    assert len(events) == 2 * 1500  # pending and resolved, for each
    repeated = sum(n - 1 for n in events.values())
    assert repeated / len(events) == pytest.approx(duplicates, abs=0.02)
    seen: set[tuple[str, Status, int]] = set()
    newest = -1
    late = 0
    for c in day.callbacks:
        if c.key in seen:
            continue
        seen.add(c.key)
        if c.at_ms < newest:
            late += 1
        newest = max(newest, c.at_ms)
    assert late / len(events) == pytest.approx(reordered, abs=0.02)
    # and the deliveries come in delivery order, each once to a consumer passing its last cursor
    assert [c.delivered_ms for c in day.callbacks] == sorted(c.delivered_ms for c in day.callbacks)
    assert len(day.callbacks) == len(list(p.callbacks(START_MS - 1)))


def test_callbacks_since_a_cursor_see_each_delivery_once():
    def submitted() -> PaymentProvider:
        p = provider(seed=8, duplicate_share=0.2, out_of_order_share=0.2)
        for i in range(100):
            p.submit(f"pay-{i}", 100, METHODS[i % 3])
            p.clock.advance(MINUTE_MS)
        return p

    # GIVEN the same calls to two providers of one seed
    at_once, in_steps = submitted(), submitted()
    end = at_once.clock.advance(30 * HOUR_MS)  # past the last delivery
    assert (at_once.last_delivery_ms() or 0) < end
    # WHEN one is read once at the end, the other every 7 minutes from its last cursor
    everything = list(at_once.callbacks(START_MS - 1))
    cursor, pieces = START_MS - 1, list[Callback]()
    while in_steps.clock.now_ms() < end:
        now = in_steps.clock.advance(7 * MINUTE_MS)
        pieces.extend(in_steps.callbacks(cursor))
        cursor = now
    # THEN both saw the same deliveries, each once
    assert pieces == everything and len(everything) > 200
    assert list(at_once.callbacks(end)) == []  # nothing delivered after now


# --- determinism, threads ---------------------------------------------------------------------------------


def test_the_same_seed_gives_the_same_history():
    config = {
        "decline_share": 0.1,
        "duplicate_share": 0.1,
        "out_of_order_share": 0.1,
        "server_error_share": 0.2,
    }
    first = drive(provider(seed=99, **config), payments=200)
    second = drive(provider(seed=99, **config), payments=200)
    other = drive(provider(seed=100, **config), payments=200)
    assert first == second
    assert first.answers != other.answers and first.callbacks != other.callbacks


def test_many_threads_get_the_answers_one_thread_gets():
    # GIVEN the clock left to the caller, so answers do not depend on how calls interleave
    def run(threads: int) -> tuple[dict[str, list[Any]], list[Callback], dict[str, Any]]:
        p = PaymentProvider(
            ProviderConfig(seed=6, server_error_share=0.3, duplicate_share=0.2, out_of_order_share=0.2),
            SimulatedClock(START_MS),
            advance_clock=False,
        )
        answers: dict[str, list[Any]] = {}
        ids = [f"pay-{i}" for i in range(400)]

        def work(mine: list[str]) -> None:
            for payment_id in mine:
                answers[payment_id] = submit_with_retries(p, payment_id, 250, METHODS[len(payment_id) % 3])
                answers[payment_id].append(_poll(p, payment_id))

        workers = [threading.Thread(target=work, args=(ids[i::threads],)) for i in range(threads)]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        p.clock.advance(48 * HOUR_MS)
        return answers, list(p.callbacks(0)), p.outcomes()

    # WHEN 8 threads call at once, and one thread makes the same calls
    # THEN every answer, callback and outcome is the same
    assert run(8) == run(1)


def _poll(p: PaymentProvider, payment_id: str) -> Any:
    try:
        return p.poll(payment_id)
    except UnknownPayment:
        return None


def test_the_clock_only_moves_forward():
    clock = SimulatedClock(10)
    assert clock.advance(5) == 15
    assert clock.advance_to(12) == 15 and clock.advance_to(20) == 20
    with pytest.raises(ValueError):
        clock.advance(-1)


@pytest.mark.parametrize(
    "config",
    [
        {"duplicate_share": 1.5},
        {"client_error_share": 0.6, "server_error_share": 0.6},
        {"latency_ms": (10, 5)},
        {"settlement_ms": {Method.ACH: (1, 2)}},
        {"client_error_codes": ("503",)},
        {"callback_delay_ms": -1},
    ],
)
def test_a_bad_config_is_refused(config):
    with pytest.raises(ValueError):
        ProviderConfig(**config)
