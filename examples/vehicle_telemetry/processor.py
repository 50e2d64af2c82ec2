"""The vehicle_telemetry processor: validate readings and derive fields (speed in km/h, low battery)."""

from __future__ import annotations

from typing import Any

REQUIRED = ("event_id", "vehicle_id", "ts", "speed_mps", "battery_pct")


def process(records: list[dict[str, Any]], ctx: Any) -> list[dict[str, Any]]:
    """Return one output record per valid reading; readings missing a required field are counted, logged
    and left out."""
    out, invalid = [], 0
    for record in records:
        if any(record.get(field) is None for field in REQUIRED):
            invalid += 1
            continue
        out.append(
            {
                **record,
                "speed_kmh": round(float(record["speed_mps"]) * 3.6, 2),
                "low_battery": float(record["battery_pct"]) < 15,
                "batch_id": ctx.batch_id,
            }
        )
    if invalid:
        ctx.logger.warning("readings missing required fields left out", extra={"count": invalid})
    return out
