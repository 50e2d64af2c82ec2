"""Generate sample vehicle telemetry as JSON Lines objects under date/hour prefixes (keys sort in arrival
order, as a files source requires).

    python -m examples.vehicle_telemetry.generate --records 10000 --per-object 2500 --out DIR
"""

from __future__ import annotations

import argparse
import gzip
import json
import random
import sys
from pathlib import Path

START_TS = 1_764_028_800  # 2025-11-25T00:00:00Z


def telemetry(index: int, rng: random.Random, vehicles: int) -> dict[str, object]:
    """One reading: a vehicle, a timestamp, speed, position, battery and odometer."""
    vehicle = index % vehicles
    return {
        "event_id": f"evt-{index:09d}",
        "vehicle_id": f"veh-{vehicle:04d}",
        "ts": START_TS + index,
        "speed_mps": round(rng.uniform(0, 40), 2),
        "lat": round(52.0 + rng.uniform(-0.5, 0.5), 6),
        "lon": round(13.0 + rng.uniform(-0.5, 0.5), 6),
        "battery_pct": round(rng.uniform(5, 100), 1),
        "odometer_km": round(10_000 + index * 0.01, 2),
    }


def generate(
    out: Path, records: int, per_object: int, *, seed: int = 7, vehicles: int = 50, gz: bool = False
) -> list[Path]:
    """Write ``records`` readings in objects of ``per_object`` lines; returns the objects written."""
    rng = random.Random(seed)
    written = []
    for number, first in enumerate(range(0, records, per_object)):
        hour = (START_TS + first) // 3600 % 24
        suffix = ".jsonl.gz" if gz else ".jsonl"
        path = out / f"date=2025-11-25/hour={hour:02d}/part-{number:05d}{suffix}"
        path.parent.mkdir(parents=True, exist_ok=True)
        lines = "".join(
            json.dumps(telemetry(i, rng, vehicles)) + "\n"
            for i in range(first, min(first + per_object, records))
        )
        if gz:
            path.write_bytes(gzip.compress(lines.encode()))
        else:
            path.write_text(lines)
        written.append(path)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=10_000)
    parser.add_argument("--per-object", type=int, default=2_500)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "data")
    parser.add_argument("--gzip", action="store_true")
    args = parser.parse_args(argv)
    if args.records < 0 or args.per_object <= 0:
        parser.error("--records must be >= 0 and --per-object > 0")
    paths = generate(args.out, args.records, args.per_object, gz=args.gzip)
    print(f"wrote {args.records} records in {len(paths)} objects under {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
