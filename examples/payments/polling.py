"""The payments' polling topic: the processor that asks the payment provider about pending payments, and
the callbacks' consumer that applies the provider's pushed events, both with the store's guarded,
idempotent transitions, so they can race.

The topic is ``payment_polling`` in this folder's topics.yaml (leanops reads the source; this module is its
processor): the ``by_status`` index's ``PENDING`` partition, ``min_age_seconds: 3600``, every 5 minutes.

The source reads the store's sparse ``by_status`` index (README.md): the ``PENDING`` payments whose
``status_key`` (``<ms:13>#<id>``: the time it entered PENDING, or was last requeued) is after the topic's
checkpoint and at least ``min_age_seconds`` old. For each record :func:`poll` reads the payment (strongly:
the index is eventually consistent), asks the provider, and

- ``settled`` / ``failed``: moves it to SETTLED / FAILED (with the provider's code) with the request id
  ``poll:<id>:<status>`` under the graph's guard (PENDING at the version just read). A batch processed again
  (a retry) sends the same request id: ``duplicate``, nothing written. A callback that settled it first makes
  the guard refuse this one (``conflict``): the payment is read again and found final (``already_final``).
  So each payment is settled at most once, whoever races.
- ``pending``: :meth:`PaymentStore.requeue` moves its ``status_key`` to now, after the checkpoint: the topic
  sees it again once it is ``min_age_seconds`` old. Not a transition (no version, no change item).
- a provider error (5XX, a timeout: :class:`PollError`, :class:`ProviderUnavailable`) or a payment the
  provider does not know: requeued too (``provider_error``, ``unknown_at_provider``).

Everything is idempotent: a batch may run twice, a record may come twice (the index may still show an old
key of a requeued payment), a callback may have come first.

Wiring: :func:`configure` (tests, local runs) sets the store, the provider and the clock. Without it, the
first batch builds a default from the environment: ``PAYMENTS_TABLE`` (default ``payments``),
``PAYMENTS_SHARDS`` (8), ``PAYMENTS_DYNAMODB_ENDPOINT`` (none: AWS, or boto3's
``AWS_ENDPOINT_URL_DYNAMODB``), ``PAYMENTS_PROVIDER_SEED`` (0). Its provider is the simulator
(:mod:`examples.payments.provider`) **in process**: it knows only the payments submitted to it in the same
process, so a deployed poller answers ``unknown_at_provider`` for every payment until it is given a client
of a real provider (over HTTP: anything with ``poll(payment_id) -> Pending | Settled | Failed | PollError``,
raising :class:`UnknownPayment` or :class:`ProviderUnavailable`).
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Protocol

from examples.payments.graph import TERMINAL, Status
from examples.payments.provider import (
    Callback,
    Failed,
    PaymentProvider,
    Pending,
    PollAnswer,
    PollError,
    ProviderConfig,
    Settled,
    UnknownPayment,
    WallClock,
)
from examples.payments.provider import Status as ProviderStatus
from examples.payments.store import (
    DEFAULT_SHARDS,
    STATUS_KEY,
    Outcome,
    Payment,
    PaymentStore,
    RequestIdReused,
    iso_ms,
    make_client,
    now_ms,
)

logger = logging.getLogger(__name__)

#: Reads of a payment per record: the first, then one after each refused write (the payment changed
#: meanwhile). A PENDING payment changes once at most (to a terminal status): 2 suffice, the rest is margin.
MAX_ATTEMPTS = 4
#: Request ids go into keys: at most 128 characters (longer ones are hashed).
_MAX_ID = 128


class PollOutcome(StrEnum):
    """What handling a record (a poll) or a callback came to: the ``outcome`` column."""

    #: This call wrote the transition (SETTLED or FAILED; PENDING for a callback of a SUBMITTED payment).
    APPLIED = "applied"
    #: The same request id was applied before (a batch or a callback processed again): nothing written.
    DUPLICATE = "duplicate"
    #: The payment was terminal already (settled or failed by a callback, or an earlier poll).
    ALREADY_FINAL = "already_final"
    #: The provider says pending: the payment is back at the end of the queue (requeue).
    REQUEUED = "requeued"
    #: The provider failed (5XX, timeout): requeued, polled again later.
    PROVIDER_ERROR = "provider_error"
    #: The provider does not know the payment: requeued (and logged), polled again later.
    UNKNOWN_AT_PROVIDER = "unknown_at_provider"
    #: The payment is open but not PENDING (not submitted yet): nothing to ask or apply.
    NOT_PENDING = "not_pending"
    #: A callback that tells nothing new (a ``pending`` event of a payment already PENDING or beyond).
    STALE = "stale"
    #: No such payment in the store.
    NOT_FOUND = "not_found"


class ProviderUnavailable(Exception):
    """A real provider client's transient failure (a timeout, a refused connection, a 5XX): poll later."""


class ProviderClient(Protocol):
    def poll(self, payment_id: str) -> PollAnswer: ...


class PollConflict(RuntimeError):
    """A payment changed under every one of :data:`MAX_ATTEMPTS` writes: the batch fails (leanops retries
    it); dropping the record instead would leave the payment behind the topic's checkpoint."""


# --- deciding (pure) -----------------------------------------------------------------------------------


class Act(StrEnum):
    SKIP = "skip"  # nothing to write: the outcome says why
    POLL = "poll"  # ask the provider first
    TRANSITION = "transition"  # move to ``target``
    REQUEUE = "requeue"  # back to the end of the queue


@dataclass(frozen=True)
class Action:
    act: Act
    outcome: PollOutcome | None = None
    target: Status | None = None
    error_code: str | None = None


def decide(payment: Payment | None, answer: PollAnswer | BaseException | None) -> Action:
    """What to do with a polled payment, as it is now (``payment``) and as the provider answered
    (``answer``: None while not asked; an exception the provider raised). Pure."""
    if payment is None:
        return Action(Act.SKIP, PollOutcome.NOT_FOUND)
    if payment.status in TERMINAL:
        return Action(Act.SKIP, PollOutcome.ALREADY_FINAL)
    if payment.status != Status.PENDING:
        return Action(Act.SKIP, PollOutcome.NOT_PENDING)
    if answer is None:
        return Action(Act.POLL)
    if isinstance(answer, Settled):
        return Action(Act.TRANSITION, PollOutcome.APPLIED, Status.SETTLED)
    if isinstance(answer, Failed):
        return Action(Act.TRANSITION, PollOutcome.APPLIED, Status.FAILED, answer.error_code)
    if isinstance(answer, Pending):
        return Action(Act.REQUEUE, PollOutcome.REQUEUED)
    if isinstance(answer, UnknownPayment):
        return Action(Act.REQUEUE, PollOutcome.UNKNOWN_AT_PROVIDER)
    if isinstance(answer, PollError | ProviderUnavailable):
        # Transient: requeue this payment rather than fail the batch. One payment's error does not hold back
        # the batch's others, the payment comes back after min_age (a natural backoff, where a failed batch
        # would poll all of its payments again at once), and it never drops behind the checkpoint.
        return Action(Act.REQUEUE, PollOutcome.PROVIDER_ERROR)
    raise TypeError(f"not a provider's answer: {answer!r}")


def provider_status(answer: PollAnswer | BaseException | None) -> str | None:
    """The ``provider_status`` column: pending, settled, failed, error, unknown; None when not asked."""
    if answer is None:
        return None
    if isinstance(answer, UnknownPayment):
        return "unknown"
    if isinstance(answer, BaseException):
        return "error"
    return str(answer.status)


def request_id(source: str, payment_id: str, status: Status | str) -> str:
    """The request id of a transition that ``source`` (poll, callback) makes for a payment: the same on every
    retry, so a repeat is a duplicate. Hashed when too long for a key."""
    plain = f"{source}:{payment_id}:{status}"
    if len(plain) <= _MAX_ID:
        return plain
    return f"{source}:{hashlib.sha256(plain.encode()).hexdigest()}:{status}"


#: The output rows' columns, in order (Parquet: strings, ints, None as null).
ROW_COLUMNS = (
    "payment_id",
    "status_key",
    "polled_at",
    "provider_status",
    "outcome",
    "status_after",
    "version_after",
    "error_code",
    "request_id",
    "attempts",
)


def output_row(
    payment_id: str,
    record_key: str | None,
    polled_at_ms: int,
    answer: PollAnswer | BaseException | None,
    outcome: PollOutcome,
    payment: Payment | None,
    request: str | None,
    attempts: int,
) -> dict[str, Any]:
    """One output row (:data:`ROW_COLUMNS`). Pure."""
    if isinstance(answer, Failed):
        error_code: str | None = answer.error_code
    elif isinstance(answer, PollError):
        error_code = answer.code
    else:
        error_code = None
    return {
        "payment_id": payment_id,
        "status_key": record_key,
        "polled_at": iso_ms(polled_at_ms),
        "provider_status": provider_status(answer),
        "outcome": str(outcome),
        "status_after": str(payment.status) if payment is not None else None,
        "version_after": payment.version if payment is not None else None,
        "error_code": error_code,
        "request_id": request,
        "attempts": attempts,
    }


# --- wiring -----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Wiring:
    store: PaymentStore
    provider: ProviderClient
    clock: Callable[[], int]


_wiring: Wiring | None = None
_wiring_lock = threading.Lock()


def configure(
    store: PaymentStore, provider: ProviderClient, clock: Callable[[], int] | None = None
) -> Wiring:
    """Use ``store``, ``provider`` and ``clock`` (epoch ms; the store's by default) for the next batches."""
    global _wiring
    with _wiring_lock:
        _wiring = Wiring(store, provider, clock if clock is not None else store.clock)
        return _wiring


def reset() -> None:
    """Forget :func:`configure`: the next batch builds the default from the environment."""
    global _wiring
    with _wiring_lock:
        _wiring = None


def wiring() -> Wiring:
    """What :func:`poll` uses: the configured store and provider, or the default (built once)."""
    global _wiring
    with _wiring_lock:
        if _wiring is None:
            _wiring = _default_wiring(os.environ)
        return _wiring


def _default_wiring(env: Mapping[str, str]) -> Wiring:
    client = make_client(env.get("PAYMENTS_DYNAMODB_ENDPOINT") or None)
    store = PaymentStore(
        client, env.get("PAYMENTS_TABLE", "payments"), int(env.get("PAYMENTS_SHARDS", DEFAULT_SHARDS))
    )
    # In process: see the module's docstring (a deployed poller calls a real provider).
    provider = PaymentProvider(
        ProviderConfig(seed=int(env.get("PAYMENTS_PROVIDER_SEED", "0"))), WallClock(), advance_clock=False
    )
    return Wiring(store, provider, now_ms)


# --- the processor ------------------------------------------------------------------------------------


def poll(records: list[dict[str, Any]], ctx: Any) -> list[dict[str, Any]]:
    """The topic's processor: each record (an item of the ``by_status`` index: ``payment_id``, ``version``,
    ``status_key``...) polled and applied; one output row per record, in order (:data:`ROW_COLUMNS`).

    Raises (the batch fails, leanops retries it; every step is idempotent) when the store cannot answer
    (StoreThrottled, StoreUnavailable: the payment could not even be requeued, and must not drop behind the
    checkpoint) or a payment kept changing (:class:`PollConflict`).
    """
    wired = wiring()
    log = getattr(ctx, "logger", None) or logger
    rows = [poll_one(record, wired.store, wired.provider, wired.clock) for record in records]
    counts = Counter(row["outcome"] for row in rows)
    log.info("payment polls: %s", dict(sorted(counts.items())))
    for row in rows:
        if row["outcome"] == PollOutcome.UNKNOWN_AT_PROVIDER:
            log.warning("payment %s is PENDING, and unknown to the provider: requeued", row["payment_id"])
    return rows


def poll_one(
    record: Mapping[str, Any],
    store: PaymentStore,
    provider: ProviderClient,
    clock: Callable[[], int] = now_ms,
) -> dict[str, Any]:
    """Handle one record (see the module's docstring); its output row."""
    payment_id = str(record["payment_id"])
    record_key = record.get(STATUS_KEY)
    answer: PollAnswer | BaseException | None = None
    polled_at = clock()
    payment = store.get(payment_id)
    request: str | None = None
    for attempt in range(1, MAX_ATTEMPTS + 1):
        action = decide(payment, answer)
        if action.act is Act.POLL:
            answer = _ask(provider, payment_id)  # once per record: a later read reuses the answer
            polled_at = clock()
            action = decide(payment, answer)

        outcome: PollOutcome | None = action.outcome
        after: Payment | None = payment
        if action.act is Act.REQUEUE:
            assert payment is not None
            requeued = store.requeue(payment_id, payment.version, Status.PENDING)
            after = requeued.payment
            if not requeued.moved:
                outcome = None  # settled meanwhile (a callback): decide again
        elif action.act is Act.TRANSITION:
            assert payment is not None and action.target is not None
            request = request_id("poll", payment_id, action.target)
            outcome, after = _transition(store, request, payment, action.target, action.error_code)
        if outcome is not None:
            return output_row(payment_id, record_key, polled_at, answer, outcome, after, request, attempt)
        payment = after  # refused: the payment changed; decide again on it as it is now
    raise PollConflict(f"payment {payment_id} changed under {MAX_ATTEMPTS} attempts to apply its poll")


def _ask(provider: ProviderClient, payment_id: str) -> PollAnswer | BaseException:
    try:
        return provider.poll(payment_id)
    except (UnknownPayment, ProviderUnavailable) as exc:
        return exc


def _transition(
    store: PaymentStore, request: str, payment: Payment, target: Status, error_code: str | None
) -> tuple[PollOutcome | None, Payment | None]:
    """Apply one transition: (applied or duplicate, the payment after) or (None, the payment as it is now:
    the guard refused, decide again)."""
    try:
        result = store.transition(request, payment.payment_id, target, payment.version, error_code)
    except RequestIdReused:
        # The request id was applied before with other parameters: a request item exists only with its
        # transition, so the payment moved on. Read it and decide again.
        return None, store.get(payment.payment_id)
    if result.outcome is Outcome.APPLIED:
        return PollOutcome.APPLIED, result.payment
    if result.outcome is Outcome.DUPLICATE_REQUEST:
        return PollOutcome.DUPLICATE, result.payment
    # conflict: the payment is at another version (result.payment as it is now); invalid: at that version
    # but in another status; neither happens to a PENDING payment read just now unless another writer moved
    # it, so read it again if the answer does not carry it.
    now = result.payment if result.payment is not None else store.get(payment.payment_id)
    return None, now


# --- callbacks --------------------------------------------------------------------------------------------


class CallbackFeed(Protocol):
    def callbacks(self, since_ms: int) -> Iterable[Callback]: ...


@dataclass(frozen=True)
class CallbackRun:
    """What :func:`apply_callbacks` did: a row per delivery, and ``until_ms``, the ``since_ms`` of the next
    call (every delivery after it is still to come)."""

    rows: list[dict[str, Any]]
    until_ms: int


def apply_callbacks(store: PaymentStore, provider: CallbackFeed, since_ms: int, until_ms: int) -> CallbackRun:
    """Apply the provider's callbacks delivered in ``(since_ms, until_ms]`` (``until_ms``: the provider's now,
    read before this call; the next call's ``since_ms``), with the same guarded, idempotent transitions as
    :func:`poll` (request ids ``callback:<id>:<status>``).

    Deliveries come twice and out of order: a second copy is a duplicate (or finds the payment final); a
    ``pending`` event after the resolution tells nothing new (``stale``: nothing moves backwards); a
    resolution of a payment still SUBMITTED (its submitter has not recorded the acceptance yet) moves it to
    PENDING first, then to its resolution.
    """
    rows = []
    for callback in provider.callbacks(since_ms):
        if callback.delivered_ms > until_ms:
            break  # delivered after until_ms: the next call's
        outcome, payment, request = _apply_callback(store, callback)
        rows.append(
            {
                "payment_id": callback.payment_id,
                "callback_status": str(callback.status),
                "event_at": iso_ms(callback.at_ms),
                "delivered_at": iso_ms(callback.delivered_ms),
                "outcome": str(outcome),
                "status_after": str(payment.status) if payment is not None else None,
                "version_after": payment.version if payment is not None else None,
                "request_id": request,
            }
        )
    return CallbackRun(rows, until_ms)


_CALLBACK_TARGETS = {
    ProviderStatus.PENDING: Status.PENDING,
    ProviderStatus.SETTLED: Status.SETTLED,
    ProviderStatus.FAILED: Status.FAILED,
}


def _apply_callback(
    store: PaymentStore, callback: Callback
) -> tuple[PollOutcome, Payment | None, str | None]:
    target = _CALLBACK_TARGETS[callback.status]
    payment = store.get(callback.payment_id)
    request: str | None = None
    for _ in range(MAX_ATTEMPTS):
        if payment is None:
            return PollOutcome.NOT_FOUND, None, request
        if payment.status in TERMINAL:
            return PollOutcome.ALREADY_FINAL, payment, request
        if target is Status.PENDING and payment.status != Status.SUBMITTED:
            # PENDING already (or CREATED: not submitted, which the provider cannot have accepted)
            return PollOutcome.STALE, payment, request
        # Accepted is implied by a resolution: a SUBMITTED payment goes to PENDING first.
        step = Status.PENDING if payment.status == Status.SUBMITTED else target
        if payment.status not in (Status.SUBMITTED, Status.PENDING):
            return PollOutcome.NOT_PENDING, payment, request
        error_code = callback.error_code if step == Status.FAILED else None
        request = request_id("callback", callback.payment_id, step)
        written, now = _transition(store, request, payment, step, error_code)
        if written is not None and step == target:
            return written, now, request
        payment = now  # the first step done, or refused: decide again on the payment as it is
    raise PollConflict(f"payment {callback.payment_id} changed under {MAX_ATTEMPTS} attempts at a callback")
