"""A local payment provider simulator: what the payments workload's polling topic talks to.

    provider = PaymentProvider(ProviderConfig(seed=7))
    provider.submit("pay-001", 12_500, "ACH")   # Accepted(...) or SubmitError(code="503", ...)
    provider.poll("pay-001")                    # Pending(...), Settled(at_ms=...) or Failed(error_code=...)
    provider.clock.advance(6 * HOUR_MS)
    for event in provider.callbacks(since_ms=cursor): ...   # Callback(payment_id, status, at_ms, ...)

Time is simulated (:class:`SimulatedClock`, epoch milliseconds): nothing sleeps. Each call has a latency
drawn from ``latency_ms``; by default the call moves the clock forward by it, as a caller waiting for the
answer would see time pass (``advance_clock=False`` leaves the clock to the caller, e.g. a simulation that
steps it itself while many threads call).

What a real provider does, and this one too:

- **Submission errors.** A share of submissions is refused with a 4XX code (``client_error_share``): final,
  the same code again on every retry. Another share fails with a 5XX code (``server_error_share``):
  transient, a retry draws again and may be accepted. A submission repeated after acceptance is idempotent
  (the first acceptance again); one with another amount or method is refused ``409``; an amount that is not
  positive is refused ``400`` (final). A share of polls (``poll_error_share``, 0 by default) fails with a 5XX
  code (:class:`PollError`, transient: poll again later).
- **Eventual settlement.** An accepted payment resolves after a delay drawn per method
  (``settlement_ms``: CARD in minutes, WIRE in hours, ACH slowest), to ``settled`` or, for a share of them
  (``decline_share``), to ``failed`` with a decline code. The resolution is drawn once, at acceptance: a
  payment's answer never changes after it resolved (settled is final, and never later failed).
- **Callbacks, duplicated and out of order.** Each accepted payment produces two events, ``pending`` at its
  acceptance and its resolution at its resolution time, each delivered ``callback_delay_ms`` after it
  happened. A share of events (``out_of_order_share``) is delivered late (``late_by_ms`` more), after events
  that happened later; a share (``duplicate_share``) is delivered a second time (``duplicate_after_ms`` after
  the first). :meth:`PaymentProvider.callbacks` yields the events delivered in ``(since_ms, now]``, in order
  of delivery: a consumer that passes the previous call's ``now`` as ``since_ms`` sees every delivery once.

Determinism: every draw comes from a generator seeded by ``(seed, payment id, purpose, attempt)``, never
from a shared random stream, so a payment's history depends only on the seed, the payment and the calls
made for it, not on how other payments' calls interleave with it. The same seed and the same calls give the
same answers, in any number of threads; with ``advance_clock=True`` the times also depend on the order of
calls (each call moves the shared clock). Every method is thread-safe (one lock).
"""

from __future__ import annotations

import bisect
import random
import threading
import time
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import ClassVar

SECOND_MS = 1_000
MINUTE_MS = 60 * SECOND_MS
HOUR_MS = 60 * MINUTE_MS


class Method(StrEnum):
    """How a payment is made (it sets how long settlement takes)."""

    ACH = "ACH"
    CARD = "CARD"
    WIRE = "WIRE"


class Status(StrEnum):
    """What the provider says about an accepted payment."""

    PENDING = "pending"
    SETTLED = "settled"
    FAILED = "failed"


#: Settlement delays per method (uniform, milliseconds): CARD minutes, WIRE hours, ACH up to a day.
DEFAULT_SETTLEMENT_MS: Mapping[Method, tuple[int, int]] = {
    Method.CARD: (2 * SECOND_MS, 10 * MINUTE_MS),
    Method.WIRE: (10 * MINUTE_MS, 4 * HOUR_MS),
    Method.ACH: (1 * HOUR_MS, 24 * HOUR_MS),
}


@dataclass(frozen=True)
class ProviderConfig:
    """The simulator's behaviour. Shares are probabilities (0 to 1), ranges ``(low, high)`` milliseconds,
    drawn uniformly, both ends included."""

    seed: int = 0
    #: Each call's latency.
    latency_ms: tuple[int, int] = (20, 250)
    #: Submissions refused with a 4XX code (final) and failing with a 5XX code (transient).
    client_error_share: float = 0.02
    server_error_share: float = 0.05
    client_error_codes: tuple[str, ...] = ("402", "403", "422")
    server_error_codes: tuple[str, ...] = ("500", "502", "503")
    #: Polls failing with one of ``server_error_codes`` (transient). 0 by default: no draw is made then, so
    #: the answers are those of a simulator without this setting.
    poll_error_share: float = 0.0
    #: Accepted payments that resolve to ``failed`` (with one of ``decline_codes``) instead of ``settled``.
    decline_share: float = 0.05
    decline_codes: tuple[str, ...] = ("402", "422")
    #: How long an accepted payment takes to resolve, per method.
    settlement_ms: Mapping[Method, tuple[int, int]] = field(
        default_factory=lambda: dict(DEFAULT_SETTLEMENT_MS)
    )
    #: From an event to its delivery as a callback.
    callback_delay_ms: int = SECOND_MS
    #: Events delivered late (by ``late_by_ms`` more), and events delivered twice (the second copy
    #: ``duplicate_after_ms`` after the first).
    out_of_order_share: float = 0.05
    late_by_ms: tuple[int, int] = (MINUTE_MS, 30 * MINUTE_MS)
    duplicate_share: float = 0.05
    duplicate_after_ms: tuple[int, int] = (0, 10 * MINUTE_MS)

    def __post_init__(self) -> None:
        shares = {
            "client_error_share": self.client_error_share,
            "server_error_share": self.server_error_share,
            "poll_error_share": self.poll_error_share,
            "decline_share": self.decline_share,
            "out_of_order_share": self.out_of_order_share,
            "duplicate_share": self.duplicate_share,
        }
        for name, share in shares.items():
            if not 0.0 <= share <= 1.0:
                raise ValueError(f"{name} must be between 0 and 1, not {share!r}")
        if self.client_error_share + self.server_error_share > 1.0:
            raise ValueError("client_error_share + server_error_share must be at most 1")
        ranges = {
            "latency_ms": self.latency_ms,
            "late_by_ms": self.late_by_ms,
            "duplicate_after_ms": self.duplicate_after_ms,
            **{f"settlement_ms[{m}]": r for m, r in self.settlement_ms.items()},
        }
        for name, (low, high) in ranges.items():
            if not 0 <= low <= high:
                raise ValueError(f"{name} must be (low, high) with 0 <= low <= high, not {(low, high)!r}")
        missing = [m.value for m in Method if m not in self.settlement_ms]
        if missing:
            raise ValueError(f"settlement_ms has no range for {missing}")
        if self.callback_delay_ms < 0:
            raise ValueError("callback_delay_ms must not be negative")
        codes = {
            "client_error_codes": (self.client_error_codes, "4"),
            "server_error_codes": (self.server_error_codes, "5"),
            "decline_codes": (self.decline_codes, ""),
        }
        for name, (values, first) in codes.items():
            if not values or not all(isinstance(c, str) and c.startswith(first) for c in values):
                raise ValueError(f"{name} must be a non-empty tuple of codes starting with {first!r}")


class SimulatedClock:
    """Epoch milliseconds that move only when told to. Thread-safe."""

    def __init__(self, start_ms: int = 0) -> None:
        self._now = start_ms
        self._lock = threading.Lock()

    def now_ms(self) -> int:
        with self._lock:
            return self._now

    def advance(self, ms: int) -> int:
        """Move ``ms`` forward (not backward); the new time."""
        if ms < 0:
            raise ValueError("a clock does not go back")
        with self._lock:
            self._now += ms
            return self._now

    def advance_to(self, at_ms: int) -> int:
        """Move to ``at_ms`` if that is later; the new time."""
        with self._lock:
            self._now = max(self._now, at_ms)
            return self._now


class WallClock(SimulatedClock):
    """The real time (epoch ms), for a simulator answering in real time (``advance_clock=False``): it does
    not move when told to (``advance``, ``advance_to`` only read it)."""

    def __init__(self) -> None:
        super().__init__(time.time_ns() // 1_000_000)

    def now_ms(self) -> int:
        return time.time_ns() // 1_000_000

    def advance(self, ms: int) -> int:
        if ms < 0:
            raise ValueError("a clock does not go back")
        return self.now_ms()

    def advance_to(self, at_ms: int) -> int:
        return self.now_ms()


# --- answers ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Accepted:
    """The provider took the payment; ``at_ms`` is when (the first acceptance, also for a repeat)."""

    payment_id: str
    at_ms: int
    latency_ms: int
    status: ClassVar[str] = "accepted"


@dataclass(frozen=True)
class SubmitError:
    """The provider refused the submission: a 4XX code is final, a 5XX code transient (retry)."""

    payment_id: str
    code: str
    at_ms: int
    latency_ms: int
    status: ClassVar[str] = "error"

    @property
    def transient(self) -> bool:
        return self.code.startswith("5")


@dataclass(frozen=True)
class Pending:
    """Accepted, not resolved yet."""

    payment_id: str
    latency_ms: int
    status: ClassVar[str] = Status.PENDING


@dataclass(frozen=True)
class Settled:
    """Paid, at ``at_ms``. Final."""

    payment_id: str
    at_ms: int
    latency_ms: int
    status: ClassVar[str] = Status.SETTLED


@dataclass(frozen=True)
class Failed:
    """Declined at ``at_ms`` with ``error_code``. Final."""

    payment_id: str
    error_code: str
    at_ms: int
    latency_ms: int
    status: ClassVar[str] = Status.FAILED


@dataclass(frozen=True)
class PollError:
    """The poll failed with a 5XX code: transient, the payment's state is unknown; poll again later."""

    payment_id: str
    code: str
    latency_ms: int
    status: ClassVar[str] = "error"

    @property
    def transient(self) -> bool:
        return self.code.startswith("5")


SubmitResult = Accepted | SubmitError
PollResult = Pending | Settled | Failed
PollAnswer = PollResult | PollError


@dataclass(frozen=True)
class Callback:
    """An event the provider pushes: ``status`` of ``payment_id`` since ``at_ms`` (``error_code`` when it
    failed), delivered at ``delivered_ms``. The same event may come twice, and after later ones."""

    payment_id: str
    status: Status
    at_ms: int
    error_code: str | None
    delivered_ms: int

    @property
    def key(self) -> tuple[str, Status, int]:
        """What identifies the event (the same for each of its deliveries)."""
        return (self.payment_id, self.status, self.at_ms)


class UnknownPayment(LookupError):
    """The provider never accepted a payment with this id."""


@dataclass(frozen=True)
class _Payment:
    payment_id: str
    amount_cents: int
    method: Method
    accepted_ms: int
    resolves_ms: int
    outcome: Status
    error_code: str | None


@dataclass(frozen=True)
class _Delivery:
    """A callback with its place in the delivery order (time, then a deterministic tie-break)."""

    order: tuple[int, str, int, int]
    callback: Callback


_STATUS_ORDER = {Status.PENDING: 0, Status.SETTLED: 1, Status.FAILED: 1}


class PaymentProvider:
    """The simulator. See the module's docstring for its behaviour."""

    def __init__(
        self,
        config: ProviderConfig | None = None,
        clock: SimulatedClock | None = None,
        *,
        advance_clock: bool = True,
    ) -> None:
        self.config = config if config is not None else ProviderConfig()
        self.clock = clock if clock is not None else SimulatedClock()
        self.advance_clock = advance_clock
        self._lock = threading.Lock()
        self._calls: Counter[tuple[str, str]] = Counter()
        self._payments: dict[str, _Payment] = {}
        self._refused: dict[str, SubmitError] = {}
        self._deliveries: list[_Delivery] = []

    # --- the API ----------------------------------------------------------------------------------------

    def submit(self, payment_id: str, amount_cents: int, method: Method | str) -> SubmitResult:
        """Submit a payment: :class:`Accepted`, or :class:`SubmitError` (4XX final, 5XX transient).

        Raises
        ------
        ValueError
            ``method`` is not one of :class:`Method`.
        """
        method = Method(method)
        with self._lock:
            rng, latency, at = self._call(payment_id, "submit")
            known = self._payments.get(payment_id)
            if known is not None:
                if (known.amount_cents, known.method) != (amount_cents, method):
                    return SubmitError(payment_id, "409", at, latency)
                return Accepted(payment_id, known.accepted_ms, latency)
            refused = self._refused.get(payment_id)
            if refused is not None:
                return replace(refused, at_ms=at, latency_ms=latency)
            if amount_cents <= 0:
                return self._refuse(SubmitError(payment_id, "400", at, latency))
            draw = rng.random()
            if draw < self.config.client_error_share:
                return self._refuse(
                    SubmitError(payment_id, rng.choice(self.config.client_error_codes), at, latency)
                )
            if draw < self.config.client_error_share + self.config.server_error_share:
                return SubmitError(payment_id, rng.choice(self.config.server_error_codes), at, latency)
            self._accept(payment_id, amount_cents, method, at)
            return Accepted(payment_id, at, latency)

    def poll(self, payment_id: str) -> PollAnswer:
        """The payment's state as of the answer's time: :class:`Pending`, :class:`Settled` or :class:`Failed`;
        or :class:`PollError` (a 5XX, for ``poll_error_share`` of the polls of an accepted payment).

        Raises
        ------
        UnknownPayment
            The provider never accepted it (never submitted, or refused).
        """
        with self._lock:
            rng, latency, at = self._call(payment_id, "poll")
            payment = self._payments.get(payment_id)
            if payment is None:
                raise UnknownPayment(payment_id)
            if self.config.poll_error_share and rng.random() < self.config.poll_error_share:
                return PollError(payment_id, rng.choice(self.config.server_error_codes), latency)
            return self._state(payment, at, latency)

    def callbacks(self, since_ms: int) -> Iterator[Callback]:
        """The callbacks delivered after ``since_ms`` and up to now, in delivery order (a snapshot taken
        when called). Pass the ``now`` of the previous call to see each delivery once."""
        with self._lock:
            now = self.clock.now_ms()
            low = bisect.bisect_right(self._deliveries, since_ms, key=lambda d: d.order[0])
            high = bisect.bisect_right(self._deliveries, now, key=lambda d: d.order[0])
            found = [d.callback for d in self._deliveries[low:high]]
        return iter(found)

    # --- what the provider knows (for tests and simulations, not part of a real provider's API) ---------

    def outcomes(self, at_ms: int | None = None) -> dict[str, PollResult]:
        """Every accepted payment's state at ``at_ms`` (default now), without a call's latency."""
        with self._lock:
            at = self.clock.now_ms() if at_ms is None else at_ms
            return {pid: self._state(p, at, 0) for pid, p in sorted(self._payments.items())}

    def refused(self) -> dict[str, str]:
        """The payments refused for good, with their 4XX code."""
        with self._lock:
            return {pid: error.code for pid, error in sorted(self._refused.items())}

    def last_delivery_ms(self) -> int | None:
        """When the last callback scheduled so far is delivered (None: no callback yet)."""
        with self._lock:
            return self._deliveries[-1].order[0] if self._deliveries else None

    # --- internals (called with the lock held) -----------------------------------------------------------

    def _rng(self, payment_id: str, purpose: str, n: int | str = 0) -> random.Random:
        # A str seed is hashed with SHA-512: stable across processes (unlike hash()).
        return random.Random(f"{self.config.seed}|{payment_id}|{purpose}|{n}")

    def _call(self, payment_id: str, kind: str) -> tuple[random.Random, int, int]:
        """The call's generator, latency and answer time (moving the clock when it is ours to move)."""
        n = self._calls[(payment_id, kind)]
        self._calls[(payment_id, kind)] += 1
        rng = self._rng(payment_id, kind, n)
        latency = rng.randint(*self.config.latency_ms)
        at = self.clock.advance(latency) if self.advance_clock else self.clock.now_ms() + latency
        return rng, latency, at

    def _refuse(self, error: SubmitError) -> SubmitError:
        self._refused[error.payment_id] = error
        return error

    def _accept(self, payment_id: str, amount_cents: int, method: Method, at: int) -> None:
        rng = self._rng(payment_id, "resolution")
        delay = rng.randint(*self.config.settlement_ms[method])
        declined = rng.random() < self.config.decline_share
        payment = _Payment(
            payment_id=payment_id,
            amount_cents=amount_cents,
            method=method,
            accepted_ms=at,
            resolves_ms=at + delay,
            outcome=Status.FAILED if declined else Status.SETTLED,
            error_code=rng.choice(self.config.decline_codes) if declined else None,
        )
        self._payments[payment_id] = payment
        self._schedule(payment_id, Status.PENDING, at, None)
        self._schedule(payment_id, payment.outcome, payment.resolves_ms, payment.error_code)

    def _schedule(self, payment_id: str, status: Status, at: int, error_code: str | None) -> None:
        rng = self._rng(payment_id, "callback", status)
        delivered = at + self.config.callback_delay_ms
        if rng.random() < self.config.out_of_order_share:
            delivered += rng.randint(*self.config.late_by_ms)
        times = [delivered]
        if rng.random() < self.config.duplicate_share:
            times.append(delivered + rng.randint(*self.config.duplicate_after_ms))
        for copy, when in enumerate(times):
            delivery = _Delivery(
                (when, payment_id, _STATUS_ORDER[status], copy),
                Callback(payment_id, status, at, error_code, when),
            )
            bisect.insort(self._deliveries, delivery, key=lambda d: d.order)

    @staticmethod
    def _state(payment: _Payment, at: int, latency: int) -> PollResult:
        if at < payment.resolves_ms:
            return Pending(payment.payment_id, latency)
        if payment.outcome is Status.SETTLED:
            return Settled(payment.payment_id, payment.resolves_ms, latency)
        assert payment.error_code is not None
        return Failed(payment.payment_id, payment.error_code, payment.resolves_ms, latency)
