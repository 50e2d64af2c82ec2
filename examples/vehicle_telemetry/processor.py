"""The vehicle_telemetry processor: validate readings, reject the invalid ones to the batch's quarantine,
derive fields (speed in km/h, low battery, the ingesting batch) for the valid ones.

A reading is valid when ``event_id`` and ``vehicle_id`` are non-empty strings, ``ts`` is a finite number,
``0 <= speed_mps <= 100``, ``0 <= battery_pct <= 100``, ``-90 <= lat <= 90``, ``-180 <= lon <= 180`` and
``odometer_km >= 0`` (numbers: JSON numbers, not booleans or strings). The first failed check is the
rejection reason, e.g. ``speed_mps -3.2 out of range 0..100``, ``speed_mps "12.5" is not a number``,
``missing vehicle_id``.
"""

from __future__ import annotations

import json
import math
import sys
from typing import Any

LOW_BATTERY_PCT = 15

#: Fields that must be non-empty strings.
_STRINGS = ("event_id", "vehicle_id")
_MAX = sys.float_info.max
_NUMBER = frozenset((int, float))  # JSON numbers (bool, a subclass of int, is not one)
#: Numeric fields and their inclusive ranges (checked in this order, after the strings; +-_MAX: finite).
_RANGES: tuple[tuple[str, float, float], ...] = (
    ("ts", -_MAX, _MAX),
    ("speed_mps", 0, 100),
    ("battery_pct", 0, 100),
    ("lat", -90, 90),
    ("lon", -180, 180),
    ("odometer_km", 0, _MAX),
)


def problem(record: dict[str, Any]) -> str | None:
    """Why ``record`` is not a valid reading (the first failed check), or None if it is."""
    get = record.get
    for field in _STRINGS:
        value = get(field)
        if type(value) is not str or not value:
            return _missing(record, field) or f"{field} {_show(value)} is not a non-empty string"
    for field, low, high in _RANGES:
        value = get(field)
        if type(value) is not float and type(value) is not int:
            return _missing(record, field) or f"{field} {_show(value)} is not a number"
        if not low <= value <= high:
            if type(value) is float and not math.isfinite(value):
                return f"{field} {_show(value)} is not a finite number"
            if high == _MAX:
                return f"{field} {_show(value)} out of range >= {low:g}"
            return f"{field} {_show(value)} out of range {low:g}..{high:g}"
    return None


def process(records: list[dict[str, Any]], ctx: Any) -> list[dict[str, Any]]:
    """One output record per valid reading (the input's fields plus ``speed_kmh``, ``low_battery`` and
    ``ingest_batch``); every invalid reading goes to ``ctx.reject`` with its reason. Logs one line."""
    out: list[dict[str, Any]] = []
    append = out.append
    batch_id = ctx.batch_id
    rejected = 0
    number, high = _NUMBER, _MAX
    for record in records:
        get: Any = record.get  # values of any JSON type
        event, vehicle, ts = get("event_id"), get("vehicle_id"), get("ts")
        speed, battery = get("speed_mps"), get("battery_pct")
        lat, lon, odometer = get("lat"), get("lon"), get("odometer_km")
        # The checks of problem(), inlined for the common case; problem() names the first one failed.
        if not (
            type(event) is str
            and event
            and type(vehicle) is str
            and vehicle
            and type(ts) in number
            and -high <= ts <= high
            and type(speed) in number
            and 0 <= speed <= 100
            and type(battery) in number
            and 0 <= battery <= 100
            and type(lat) in number
            and -90 <= lat <= 90
            and type(lon) in number
            and -180 <= lon <= 180
            and type(odometer) in number
            and 0 <= odometer <= high
        ):
            reason = problem(record)
            if reason is not None:
                ctx.reject(record, reason)
                rejected += 1
                continue
        append(
            dict(
                record,
                speed_kmh=round(speed * 3.6, 2),
                low_battery=battery < LOW_BATTERY_PCT,
                ingest_batch=batch_id,
            )
        )
    ctx.logger.info(
        "vehicle_telemetry batch validated",
        extra={"readings": len(records), "accepted": len(out), "rejected": rejected},
    )
    return out


def _missing(record: dict[str, Any], field: str) -> str | None:
    return None if field in record else f"missing {field}"


def _show(value: Any, limit: int = 40) -> str:
    """``value`` as JSON (``null``, ``"12.5"``, ``true``, ``NaN``), cut to ``limit`` characters."""
    try:
        text = json.dumps(value)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
