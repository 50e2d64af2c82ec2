"""A generated day of payments, for the polling topic's simulations and its acceptance check.

    day = Day(client, "payments", DayConfig(payments=300, seed=7))   # one SimulatedClock: store + provider
    t = day.start_ms
    while not day.finished or still_pending(...):
        day.advance_to(t)           # create and submit the payments planned up to t
        ...                         # run the polling topic at t (its source: store.by_status(...))
        t += 5 * MINUTE_MS
    day.check()                     # {"settled_by_provider": ..., "settled_in_store": ..., "missing": 0, ...}

:func:`plan` draws the day from its seed alone (pure): ``payments`` payments at random times over
``length_ms`` from ``start_ms``, with their amounts, fee types, methods and ids. :class:`Day` plays it: each
payment, at its time, is created, moved to SUBMITTED, submitted to the provider simulator (resubmitted on a
5XX), then moved to PENDING when accepted, or to CANCELLED with the 4XX code when refused (the graph has no
edge SUBMITTED -> FAILED: FAILED is a decline of an accepted payment, entered from PENDING). The store and the
provider share one :class:`SimulatedClock`, which the day moves to each payment's time (and each provider
call moves by its latency). Every write has a request id of its own (``day:<id>:<step>``): playing a payment
again changes nothing.

:func:`check` compares the store with what the simulator knows: the payments it settled against those
SETTLED in the store, and the number of SETTLED change items of each (exactly 1 for a settled payment, 0 for
any other).
"""

from __future__ import annotations

import random
import threading
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from examples.payments.graph import TERMINAL, Status
from examples.payments.polling import request_id
from examples.payments.provider import (
    HOUR_MS,
    Accepted,
    Failed,
    PaymentProvider,
    Pending,
    ProviderConfig,
    Settled,
    SimulatedClock,
)
from examples.payments.store import DEFAULT_SHARDS, Outcome, PaymentStore

#: 2026-11-29T00:00:00Z.
DAY_START_MS = 1_795_910_400_000
DAY_MS = 24 * HOUR_MS
#: Examples kept per kind of mismatch in :func:`check`'s figures.
EXAMPLES = 5


@dataclass(frozen=True)
class DayConfig:
    """A day: ``provider`` is the simulator's settings (default: its defaults, seeded by ``seed``)."""

    payments: int = 300
    seed: int = 0
    start_ms: int = DAY_START_MS
    length_ms: int = DAY_MS
    #: The share of each method (CARD settles in minutes, WIRE in hours, ACH in up to a day).
    methods: Mapping[str, float] = field(default_factory=lambda: {"CARD": 0.5, "WIRE": 0.2, "ACH": 0.3})
    fee_types: tuple[str, ...] = ("filing", "renewal", "late_fee", "search")
    amount_cents: tuple[int, int] = (500, 250_000)
    currency: str = "USD"
    #: Submissions of one payment at most (the first and the resubmissions after a 5XX).
    submit_attempts: int = 20
    provider: ProviderConfig | None = None

    def __post_init__(self) -> None:
        if self.payments < 0 or self.length_ms <= 0 or self.submit_attempts < 1:
            raise ValueError("payments >= 0, length_ms > 0 and submit_attempts >= 1, please")
        if not self.methods or min(self.methods.values()) < 0 or sum(self.methods.values()) <= 0:
            raise ValueError(f"methods must have non-negative shares, not all 0: {dict(self.methods)}")

    @property
    def provider_config(self) -> ProviderConfig:
        return self.provider if self.provider is not None else ProviderConfig(seed=self.seed)


@dataclass(frozen=True)
class Planned:
    """A payment of the day: created (and submitted) at ``at_ms``."""

    payment_id: str
    at_ms: int
    amount_cents: int
    currency: str
    fee_type: str
    method: str
    tracking_id: str


def plan(config: DayConfig) -> list[Planned]:
    """The day's payments, by time (then id): a function of ``config`` alone (its ``seed``)."""
    rng = random.Random(f"payments-day|{config.seed}")
    methods = sorted(config.methods)
    weights = [config.methods[m] for m in methods]
    times = sorted(
        rng.randrange(config.start_ms, config.start_ms + config.length_ms) for _ in range(config.payments)
    )
    planned = []
    for i, at in enumerate(times):
        payment_id = f"d{config.seed}-{i:05d}"
        planned.append(
            Planned(
                payment_id=payment_id,
                at_ms=at,
                amount_cents=rng.randint(*config.amount_cents),
                currency=config.currency,
                fee_type=rng.choice(config.fee_types),
                method=rng.choices(methods, weights)[0],
                tracking_id=f"trk-{payment_id}",
            )
        )
    return planned


@dataclass(frozen=True)
class Submission:
    """How a planned payment's submission went: ``answer`` accepted, refused (``code`` a 4XX) or gave_up
    (5XX every time: it stays SUBMITTED); ``status`` the payment's status after it."""

    payment_id: str
    at_ms: int
    answer: str
    code: str | None
    attempts: int
    status: Status


class Day:
    """A day of payments played into the store ``table`` (through ``client``) and a provider simulator, on
    one simulated clock (``clock``, starting at ``config.start_ms``)."""

    def __init__(
        self,
        client: Any,
        table: str,
        config: DayConfig | None = None,
        *,
        shards: int = DEFAULT_SHARDS,
    ) -> None:
        self.config = config if config is not None else DayConfig()
        self.clock = SimulatedClock(self.config.start_ms)
        self.provider = PaymentProvider(self.config.provider_config, self.clock)
        self.store = PaymentStore(client, table, shards=shards, clock=self.clock.now_ms)
        self.planned = plan(self.config)
        self.submissions: list[Submission] = []
        self._next = 0
        self._lock = threading.Lock()

    @property
    def start_ms(self) -> int:
        return self.config.start_ms

    @property
    def end_ms(self) -> int:
        return self.config.start_ms + self.config.length_ms

    @property
    def finished(self) -> bool:
        """Whether every planned payment was played."""
        return self._next >= len(self.planned)

    def payment_ids(self) -> list[str]:
        return [p.payment_id for p in self.planned]

    def advance_to(self, at_ms: int) -> list[Submission]:
        """Play the payments planned up to ``at_ms`` not played yet (each at its time), then move the clock
        to ``at_ms`` (if it is not past it already: provider calls move it too). What they came to."""
        with self._lock:
            played = []
            while self._next < len(self.planned) and self.planned[self._next].at_ms <= at_ms:
                planned = self.planned[self._next]
                self.clock.advance_to(planned.at_ms)
                played.append(self._play(planned))
                self._next += 1
            self.clock.advance_to(at_ms)
            self.submissions += played
            return played

    def _play(self, p: Planned) -> Submission:
        store, pid = self.store, p.payment_id
        args = (pid, p.amount_cents, p.currency, p.fee_type, p.method, p.tracking_id)
        store.create(f"day:{pid}:create", *args)
        submitted = store.transition(request_id("day", pid, Status.SUBMITTED), pid, Status.SUBMITTED, 1)
        if submitted.outcome not in (Outcome.APPLIED, Outcome.DUPLICATE_REQUEST):
            raise RuntimeError(f"payment {pid} could not be submitted: {submitted}")
        for attempt in range(1, self.config.submit_attempts + 1):
            answer = self.provider.submit(pid, p.amount_cents, p.method)
            if isinstance(answer, Accepted):
                status = self._move(pid, Status.PENDING, None)
                return Submission(pid, p.at_ms, "accepted", None, attempt, status)
            if not answer.transient:
                status = self._move(pid, Status.CANCELLED, answer.code)
                return Submission(pid, p.at_ms, "refused", answer.code, attempt, status)
        return Submission(pid, p.at_ms, "gave_up", None, self.config.submit_attempts, Status.SUBMITTED)

    def _move(self, payment_id: str, target: Status, error_code: str | None) -> Status:
        """SUBMITTED (version 2) -> ``target``; the status after (a callback may have moved it first)."""
        result = self.store.transition(
            request_id("day", payment_id, target), payment_id, target, 2, error_code
        )
        if result.payment is None:
            raise RuntimeError(f"payment {payment_id}: {result}")
        return result.payment.status

    def check(self, at_ms: int | None = None) -> dict[str, Any]:
        """:func:`check` of this day's payments."""
        return check(self.store, self.provider, self.payment_ids(), at_ms)


def check(
    store: PaymentStore,
    provider: PaymentProvider,
    payment_ids: Iterable[str],
    at_ms: int | None = None,
) -> dict[str, Any]:
    """The store against the simulator (as of ``at_ms``, default its now), for ``payment_ids``.

    Figures: ``payments``; the provider's ``accepted``, ``settled_by_provider``, ``declined_by_provider``,
    ``pending_at_provider``, ``refused_by_provider`` (4XX); the store's ``settled_in_store``,
    ``failed_in_store``, ``cancelled_in_store``, ``still_pending``, ``still_open`` (CREATED, SUBMITTED);
    ``missing`` (settled by the provider, not SETTLED in the store), ``extra`` (SETTLED in the store, not
    settled by the provider), ``settled_twice`` (more than one SETTLED change), ``wrong_settle_counts``
    (SETTLED changes other than 1 for a settled payment, 0 for the others), ``failed_mismatches`` (declined
    by the provider xor FAILED in the store, or another code), ``refused_mismatches`` (refused xor CANCELLED);
    ``settled_by`` (who wrote each SETTLED change: its request id's first part, poll or callback...),
    ``changes`` (change items); ``examples`` (a few payment ids of each mismatch).
    """
    outcomes = provider.outcomes(at_ms)
    refused = provider.refused()
    settled_by_provider = {pid for pid, o in outcomes.items() if isinstance(o, Settled)}
    declined = {pid: o.error_code for pid, o in outcomes.items() if isinstance(o, Failed)}
    pending_at_provider = {pid for pid, o in outcomes.items() if isinstance(o, Pending)}
    ids = list(payment_ids)
    statuses: dict[str, Status | None] = {}
    error_codes: dict[str, str | None] = {}
    settles: dict[str, int] = {}
    settled_by: Counter[str] = Counter()
    changes = 0
    for pid in ids:
        history = store.history(pid)
        changes += len(history)
        statuses[pid] = history[-1].to_status if history else None
        error_codes[pid] = history[-1].error_code if history else None
        settled = [c for c in history if c.to_status == Status.SETTLED]
        settles[pid] = len(settled)
        settled_by.update(c.request_id.split(":", 1)[0] for c in settled)

    def having(status: Status) -> set[str]:
        return {pid for pid, s in statuses.items() if s == status}

    settled_in_store, failed_in_store = having(Status.SETTLED), having(Status.FAILED)
    cancelled_in_store = having(Status.CANCELLED)
    mismatches = {
        "missing": sorted(settled_by_provider - settled_in_store),
        "extra": sorted(settled_in_store - settled_by_provider),
        "settled_twice": sorted(pid for pid, n in settles.items() if n > 1),
        "wrong_settle_counts": sorted(
            pid for pid, n in settles.items() if n != (1 if pid in settled_by_provider else 0)
        ),
        "failed_mismatches": sorted(
            (set(declined) ^ failed_in_store)
            | {pid for pid in failed_in_store & set(declined) if error_codes[pid] != declined[pid]}
        ),
        "refused_mismatches": sorted(set(refused) ^ cancelled_in_store),
    }
    return {
        "payments": len(ids),
        "accepted": len(outcomes),
        "settled_by_provider": len(settled_by_provider),
        "declined_by_provider": len(declined),
        "pending_at_provider": len(pending_at_provider),
        "refused_by_provider": len(refused),
        "settled_in_store": len(settled_in_store),
        "failed_in_store": len(failed_in_store),
        "cancelled_in_store": len(cancelled_in_store),
        "still_pending": len(having(Status.PENDING)),
        "still_open": sum(
            1 for s in statuses.values() if s is not None and s not in TERMINAL and s != "PENDING"
        ),
        **{kind: len(found) for kind, found in mismatches.items()},
        "settled_by": dict(sorted(settled_by.items())),
        "changes": changes,
        "examples": {kind: found[:EXAMPLES] for kind, found in mismatches.items() if found},
    }
