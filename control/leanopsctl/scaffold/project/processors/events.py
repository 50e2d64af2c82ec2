"""The `events` topic's processor: keep the payments whose amount is a number, reject the others.

leanops calls ``process(records, ctx)`` with one batch of input records (dicts parsed from the source's
JSON lines) and writes what it returns to the sink, in one object per batch. ``ctx.reject(record, reason)``
puts an input record in the batch's quarantine (``<sink>/_quarantine/``) with the reason; an exception
fails the batch, and the checkpoint does not move, so the next run tries the same records again.
"""

from __future__ import annotations

import math
from typing import Any


def problem(record: dict[str, Any]) -> str | None:
    """Why ``record`` is not a valid event, or None when it is."""
    event_id = record.get("event_id")
    if not isinstance(event_id, str) or not event_id:
        return "event_id is missing or not a non-empty string"
    amount = record.get("amount")
    if isinstance(amount, bool) or not isinstance(amount, (int, float)):
        return f"amount {amount!r} is not a number"
    if not math.isfinite(amount):
        return f"amount {amount!r} is not a finite number"
    if amount < 0:
        return f"amount {amount!r} is negative"
    return None


def process(records: list[dict[str, Any]], ctx: Any) -> list[dict[str, Any]]:
    """Each valid event with ``amount_cents`` (the amount in whole cents) added; each invalid one rejected."""
    out = []
    for record in records:
        reason = problem(record)
        if reason is not None:
            ctx.reject(record, reason)
            continue
        out.append(record | {"amount_cents": round(record["amount"] * 100)})
    ctx.logger.info("events batch", extra={"records": len(records), "kept": len(out)})
    return out
