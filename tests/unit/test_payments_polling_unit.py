"""The pure parts of the payments' polling topic: the generated day's plan (a function of its seed), the
poller's decisions and output rows, its request ids, the index's keys and the change items' ``at``, the
simulator's poll errors, and the poller's default wiring."""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

import pytest

from examples.payments import polling
from examples.payments.day import DAY_MS, DAY_START_MS, DayConfig, plan
from examples.payments.graph import Status
from examples.payments.polling import (
    ROW_COLUMNS,
    Act,
    PollOutcome,
    ProviderUnavailable,
    decide,
    output_row,
    request_id,
)
from examples.payments.provider import (
    Failed,
    Method,
    PaymentProvider,
    Pending,
    PollError,
    ProviderConfig,
    Settled,
    SimulatedClock,
    UnknownPayment,
    WallClock,
)
from examples.payments.store import Payment, iso_ms, status_key, status_key_ms


def payment(status: Status = Status.PENDING, version: int = 3) -> Payment:
    return Payment(
        payment_id="pay-1",
        status=status,
        version=version,
        amount_cents=1_000,
        currency="USD",
        fee_type="filing",
        method="CARD",  # type: ignore[arg-type]
        tracking_id="trk-1",
        created_at_ms=DAY_START_MS,
        updated_at_ms=DAY_START_MS + 5,
    )


# --- the generated day -------------------------------------------------------------------------------------


def test_a_days_plan_is_a_function_of_its_seed() -> None:
    # GIVEN the same configuration twice, and another seed
    first, again, other = plan(DayConfig(seed=7)), plan(DayConfig(seed=7)), plan(DayConfig(seed=8))
    # THEN the plans are equal, and another seed's differs
    assert first == again
    assert [p.at_ms for p in first] != [p.at_ms for p in other]
    # AND it holds 300 payments by default, by time, inside the day, with unique ids and tracking ids
    assert len(first) == 300
    assert [p.at_ms for p in first] == sorted(p.at_ms for p in first)
    assert all(DAY_START_MS <= p.at_ms < DAY_START_MS + DAY_MS for p in first)
    assert len({p.payment_id for p in first}) == len({p.tracking_id for p in first}) == 300
    # AND spread over the day, with every method at about its share
    hours = Counter((p.at_ms - DAY_START_MS) // 3_600_000 for p in first)
    assert len(hours) == 24
    methods = Counter(p.method for p in first)
    assert set(methods) == {"CARD", "WIRE", "ACH"}
    assert 120 <= methods["CARD"] <= 180 and 30 <= methods["WIRE"] <= 90 and 60 <= methods["ACH"] <= 120
    assert all(500 <= p.amount_cents <= 250_000 and p.currency == "USD" for p in first)


def test_a_days_configuration_is_checked_and_seeds_its_provider() -> None:
    assert DayConfig(seed=4).provider_config == ProviderConfig(seed=4)
    given = ProviderConfig(seed=1, poll_error_share=0.1)
    assert DayConfig(seed=4, provider=given).provider_config is given
    assert plan(DayConfig(payments=0)) == []
    assert len(plan(DayConfig(payments=5, length_ms=1_000))) == 5
    for bad in ({"payments": -1}, {"length_ms": 0}, {"submit_attempts": 0}, {"methods": {"ACH": 0.0}}):
        with pytest.raises(ValueError):
            DayConfig(**bad)


# --- deciding ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("current", "answer", "act", "outcome", "target", "error_code"),
    [
        (None, None, Act.SKIP, PollOutcome.NOT_FOUND, None, None),
        (payment(Status.SETTLED, 4), None, Act.SKIP, PollOutcome.ALREADY_FINAL, None, None),
        (payment(Status.FAILED, 4), Settled("pay-1", 1, 1), Act.SKIP, PollOutcome.ALREADY_FINAL, None, None),
        (payment(Status.SUBMITTED, 2), None, Act.SKIP, PollOutcome.NOT_PENDING, None, None),
        (payment(), None, Act.POLL, None, None, None),
        (payment(), Settled("pay-1", 1, 1), Act.TRANSITION, PollOutcome.APPLIED, Status.SETTLED, None),
        (payment(), Failed("pay-1", "422", 1, 1), Act.TRANSITION, PollOutcome.APPLIED, Status.FAILED, "422"),
        (payment(), Pending("pay-1", 1), Act.REQUEUE, PollOutcome.REQUEUED, None, None),
        (payment(), PollError("pay-1", "503", 1), Act.REQUEUE, PollOutcome.PROVIDER_ERROR, None, None),
        (payment(), ProviderUnavailable("timeout"), Act.REQUEUE, PollOutcome.PROVIDER_ERROR, None, None),
        (payment(), UnknownPayment("pay-1"), Act.REQUEUE, PollOutcome.UNKNOWN_AT_PROVIDER, None, None),
    ],
)
def test_decide_maps_the_payment_and_the_providers_answer_to_one_action(
    current: Payment | None, answer: Any, act: Act, outcome: Any, target: Any, error_code: Any
) -> None:
    action = decide(current, answer)
    assert (action.act, action.outcome, action.target, action.error_code) == (
        act,
        outcome,
        target,
        error_code,
    )


def test_decide_refuses_what_is_not_an_answer() -> None:
    with pytest.raises(TypeError):
        decide(payment(), "settled")  # type: ignore[arg-type]


# --- output rows -------------------------------------------------------------------------------------------


def test_an_output_row_has_the_documented_columns_and_values() -> None:
    settled = payment(Status.SETTLED, 4)
    row = output_row(
        "pay-1",
        "1795910400005#pay-1",
        DAY_START_MS + 123,
        Settled("pay-1", DAY_START_MS, 50),
        PollOutcome.APPLIED,
        settled,
        "poll:pay-1:SETTLED",
        1,
    )
    assert tuple(row) == ROW_COLUMNS
    assert row == {
        "payment_id": "pay-1",
        "status_key": "1795910400005#pay-1",
        "polled_at": "2026-11-29T00:00:00.123Z",
        "provider_status": "settled",
        "outcome": "applied",
        "status_after": "SETTLED",
        "version_after": 4,
        "error_code": None,
        "request_id": "poll:pay-1:SETTLED",
        "attempts": 1,
    }
    # the provider's code of a decline or an error; None and "unknown" where nothing was answered
    declined = output_row("p", None, 0, Failed("p", "402", 0, 1), PollOutcome.APPLIED, None, None, 1)
    assert (declined["error_code"], declined["provider_status"], declined["version_after"]) == (
        "402",
        "failed",
        None,
    )
    error = output_row("p", None, 0, PollError("p", "502", 1), PollOutcome.PROVIDER_ERROR, payment(), None, 1)
    assert (error["error_code"], error["provider_status"], error["outcome"]) == (
        "502",
        "error",
        "provider_error",
    )
    unknown = output_row(
        "p", None, 0, UnknownPayment("p"), PollOutcome.UNKNOWN_AT_PROVIDER, payment(), None, 2
    )
    assert (unknown["provider_status"], unknown["attempts"]) == ("unknown", 2)
    final = output_row("p", None, 0, None, PollOutcome.ALREADY_FINAL, settled, None, 1)
    assert (final["provider_status"], final["status_after"]) == (None, "SETTLED")
    assert all(isinstance(v, str | int | type(None)) for v in row.values())  # Parquet-friendly scalars


def test_request_ids_are_stable_and_fit_a_key() -> None:
    assert request_id("poll", "pay-1", Status.SETTLED) == "poll:pay-1:SETTLED"
    assert request_id("callback", "pay-1", "FAILED") == "callback:pay-1:FAILED"
    long_id = "p" * 128
    hashed = request_id("callback", long_id, Status.SETTLED)
    assert len(hashed) <= 128 and hashed == request_id("callback", long_id, Status.SETTLED)
    assert hashed != request_id("poll", long_id, Status.SETTLED) != request_id("callback", long_id, "FAILED")


# --- keys and times ----------------------------------------------------------------------------------------


def test_index_keys_sort_by_time_and_change_times_are_iso_utc_with_milliseconds() -> None:
    assert status_key(DAY_START_MS, "pay-1") == "1795910400000#pay-1"
    assert status_key(5, "a") == "0000000000005#a" and status_key_ms("0000000000005#a") == 5
    keys = [status_key(ms, pid) for ms, pid in ((999, "z"), (1_000, "a"), (1_000, "b"), (10_000, "a"))]
    assert sorted(keys) == keys
    assert iso_ms(0) == "1970-01-01T00:00:00.000Z"
    assert iso_ms(DAY_START_MS + 36_000_123) == "2026-11-29T10:00:00.123Z"
    assert iso_ms(DAY_START_MS - 1) == "2026-11-28T23:59:59.999Z"


# --- the simulator's poll errors, the wall clock -----------------------------------------------------------


def test_poll_errors_come_at_their_share_and_only_when_asked_for() -> None:
    def polls(config: ProviderConfig) -> list[Any]:
        p = PaymentProvider(config, SimulatedClock(DAY_START_MS))
        answers = []
        for i in range(200):
            if p.submit(f"p{i}", 100, Method.CARD).status == "accepted":
                answers.append(p.poll(f"p{i}"))
        return answers

    quiet = polls(ProviderConfig(seed=2))
    assert not any(isinstance(a, PollError) for a in quiet)
    assert quiet == polls(ProviderConfig(seed=2, poll_error_share=0.0))
    noisy = polls(ProviderConfig(seed=2, poll_error_share=0.25))
    errors = [a for a in noisy if isinstance(a, PollError)]
    assert 20 <= len(errors) <= 80 and all(a.transient and a.code in ("500", "502", "503") for a in errors)
    assert noisy == polls(ProviderConfig(seed=2, poll_error_share=0.25))  # deterministic
    with pytest.raises(ValueError):
        ProviderConfig(poll_error_share=1.5)


def test_the_wall_clock_follows_real_time_and_ignores_advances() -> None:
    clock = WallClock()
    before = time.time_ns() // 1_000_000
    assert before - 1_000 <= clock.advance(3_600_000) <= time.time_ns() // 1_000_000
    assert clock.advance_to(before + 3_600_000) < before + 3_600_000
    with pytest.raises(ValueError):
        clock.advance(-1)


# --- wiring ------------------------------------------------------------------------------------------------


def test_the_default_wiring_comes_from_the_environment(offline_aws_env: None, monkeypatch: Any) -> None:
    polling.reset()
    monkeypatch.setenv("PAYMENTS_TABLE", "payments-test")
    monkeypatch.setenv("PAYMENTS_SHARDS", "4")
    monkeypatch.setenv("PAYMENTS_PROVIDER_SEED", "9")
    try:
        wired = polling.wiring()
        assert (wired.store.table, wired.store.shards) == ("payments-test", 4)
        assert isinstance(wired.provider, PaymentProvider) and wired.provider.config.seed == 9
        assert polling.wiring() is wired  # built once
        configured = polling.configure(wired.store, wired.provider)
        assert polling.wiring() is configured and configured.clock is wired.store.clock
    finally:
        polling.reset()
