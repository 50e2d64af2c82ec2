"""Payments moved along random edges of the graph: the change feed a day of business writes, for the feed's
topic to export (its tests, bench/payments_feed.py, and a local try from the command line).

    python -m examples.payments.simulate --endpoint http://127.0.0.1:8000 [--table payments]
                                         [--payments 500] [--hours 24] [--seed 14]

creates the payments table if it is missing (with its index), then ``--payments`` payments spread evenly
over the ``--hours`` that end a minute ago (so that all their changes are older than the feed's
``min_age_seconds`` of 60), each created and then moved along 0 to 4 random edges of the graph a few
seconds apart (a 4XX code on the moves to FAILED, a 5XX now and then on the others). Payment ids are
``pay-<seed>-<n>``: another seed writes other payments. Prints how many payments and changes it wrote.
The endpoint is a DynamoDB's: the local stack's (``leanops local up`` prints it) or DynamoDB Local's.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from examples.payments.graph import TERMINAL, TRANSITIONS
from examples.payments.store import DEFAULT_SHARDS, PaymentStore, create_table, make_client

FEE_TYPES = ("filing", "renewal", "late_fee")
METHODS = ("ACH", "CARD", "WIRE")
AMOUNTS = (500, 2_500, 9_900, 50_000, 125_000)
ERRORS_4XX, ERRORS_5XX = ("402", "404", "422"), ("500", "503")
#: A payment's moves follow its creation this far apart (ms, drawn uniformly).
MOVE_GAP_MS = (1_000, 30_000)


@dataclass
class Clock:
    """Epoch milliseconds that :func:`walk` moves (the store's clock)."""

    now_ms: int

    def __call__(self) -> int:
        return self.now_ms


def walk(
    store: PaymentStore,
    clock: Clock,
    rng: random.Random,
    count: int,
    *,
    first: int = 0,
    every_ms: int = 60_000,
    prefix: str = "pay",
    move_gap_ms: tuple[int, int] = MOVE_GAP_MS,
) -> int:
    """``count`` payments numbered from ``first``, created ``every_ms`` apart (from ``clock``'s time on),
    each walked along 0..4 random edges of the graph, ``move_gap_ms`` (low, high) apart. Returns the changes
    written."""
    made = 0
    for n in range(first, first + count):
        created_at = clock.now_ms
        payment = store.create(
            f"{prefix}-{n}-create",
            f"{prefix}-{n:06d}",
            rng.choice(AMOUNTS),
            "USD",
            rng.choice(FEE_TYPES),
            rng.choice(METHODS),
            f"trk-{prefix}-{n:06d}",
        )
        made += 1
        for step in range(rng.randint(0, 4)):
            if payment.status in TERMINAL:
                break
            clock.now_ms += rng.randint(*move_gap_ms)
            target = rng.choice(sorted(TRANSITIONS[payment.status]))
            error = rng.choice(ERRORS_4XX) if target == "FAILED" else None
            if error is None and rng.random() < 0.1:
                error = rng.choice(ERRORS_5XX)
            result = store.transition(
                f"{payment.payment_id}-{step}", payment.payment_id, target, payment.version, error
            )
            if result.payment is None or not result.applied:
                raise RuntimeError(f"payment {payment.payment_id}: {result}")
            payment = result.payment
            made += 1
        clock.now_ms = created_at + every_ms
    return made


def simulate(
    client: object,
    table: str,
    payments: int,
    hours: float,
    seed: int,
    *,
    shards: int = DEFAULT_SHARDS,
    now: Callable[[], float] = time.time,
) -> int:
    """The command's work: the table, then the payments over ``hours`` ending a minute ago; the changes."""
    create_table(client, table)
    span_ms = int(hours * 3_600_000)
    clock = Clock(int(now() * 1000) - 60_000 - span_ms - MOVE_GAP_MS[1] * 4)
    store = PaymentStore(client, table, shards=shards, clock=clock)
    return walk(
        store,
        clock,
        random.Random(seed),
        payments,
        every_ms=span_ms // max(payments, 1),
        prefix=f"pay-{seed}",
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m examples.payments.simulate", description=(__doc__ or "").split("\n\n")[0]
    )
    parser.add_argument("--endpoint", required=True, help="DynamoDB endpoint, e.g. http://127.0.0.1:8000")
    parser.add_argument("--table", default="payments")
    parser.add_argument("--payments", type=int, default=500)
    parser.add_argument("--hours", type=float, default=24.0)
    parser.add_argument("--seed", type=int, default=14)
    args = parser.parse_args(argv)
    if args.payments < 1 or args.hours <= 0:
        parser.error("--payments must be at least 1 and --hours above 0")
    for name, value in (("AWS_ACCESS_KEY_ID", "local"), ("AWS_SECRET_ACCESS_KEY", "local")):
        os.environ.setdefault(name, value)  # a local DynamoDB checks no credentials, but boto3 wants some
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    changes = simulate(make_client(args.endpoint), args.table, args.payments, args.hours, args.seed)
    print(f"{args.payments} payments, {changes} changes in table {args.table}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
