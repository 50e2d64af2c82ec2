"""Generate sample vehicle telemetry: JSON Lines objects under date/hour prefixes, with a seeded share of
malformed lines.

    python -m examples.vehicle_telemetry.generate --records 10000 --per-object 2500 --out DIR

Objects are ``date=YYYY-MM-DD/hour=HH/part-NNNNN.jsonl[.gz]`` (the date and hour of their first reading,
the part number counting objects across the run), so keys sort in arrival order, as a files source
requires. Reading ``i`` has ``ts = START_TS + i`` and ``event_id = evt-<i, 9 digits>``.

Which lines are malformed depends only on ``(seed, index)`` (a hash, not a sequential random stream), so
:func:`line_kind` classifies any line on its own: ``valid``, ``malformed_json`` (not a JSON object:
truncated JSON, plain text or a JSON array; the framework quarantines these) or ``invalid`` (a JSON object
that fails validation; the processor rejects these). Malformed lines split about half and half between the
two kinds.

``--clean`` first removes what an earlier run generated (``part-*`` objects under ``date=*/hour=*`` and the
manifest; nothing else). Without it, objects with the same keys are overwritten and any other earlier
objects stay (reported as stale). ``_generated.json`` (a hidden name: never read as input) records the
counts of the run.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import random
import re
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal, NoReturn

START_TS = 1_764_028_800  # 2025-11-25T00:00:00Z
MANIFEST = "_generated.json"
DEFAULT_OUT = Path(__file__).parent / "data"

LineKind = Literal["valid", "malformed_json", "invalid"]

#: A valid reading's line (compact JSON; every value formatted with fixed decimals, so always valid JSON).
_LINE = (
    '{"event_id":"evt-%09d","vehicle_id":"veh-%04d","ts":%d,"speed_mps":%.2f,'
    '"lat":%.6f,"lon":%.6f,"battery_pct":%.1f,"odometer_km":%.2f}\n'
)
_OBJECT_NAME = re.compile(r"part-\d+\.jsonl(\.gz)?")

# splitmix64: a cheap, well-mixed 64-bit hash of (seed, index).
_MASK = (1 << 64) - 1
_GOLDEN = 0x9E3779B97F4A7C15
_M1 = 0xBF58476D1CE4E5B9
_M2 = 0x94D049BB133111EB


def _mix(z: int) -> int:
    z = ((z ^ (z >> 30)) * _M1) & _MASK
    z = ((z ^ (z >> 27)) * _M2) & _MASK
    return z ^ (z >> 31)


def _seed_base(seed: int) -> int:
    return _mix((seed * _GOLDEN + _M2) & _MASK)


def _line_hash(base: int, index: int) -> int:
    return _mix((base + (index + 1) * _GOLDEN) & _MASK)


def _threshold(malformed: float) -> int:
    """Hashes below this are malformed lines (a share ``malformed`` of all 64-bit values)."""
    return int(malformed * (1 << 64))


def _kind_of(h: int, threshold: int) -> LineKind:
    if h >= threshold:
        return "valid"
    return "malformed_json" if h & 1 else "invalid"


def line_kind(index: int, seed: int, malformed: float) -> LineKind:
    """What line ``index`` (0-based, across the whole run) of a run with ``seed`` and ``malformed`` is."""
    return _kind_of(_line_hash(_seed_base(seed), index), _threshold(malformed))


@dataclass(frozen=True)
class GenerateSummary:
    """What a run wrote (also the manifest ``_generated.json``): counts only, nothing per record."""

    records: int
    valid: int
    malformed_json: int
    invalid: int
    objects: int
    seed: int
    malformed: float
    per_object: int
    gz: bool
    #: Generated objects of an earlier run still in the folder (not overwritten; ``--clean`` removes them).
    stale_objects: int = 0

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def reading_line(index: int, rng: random.Random, vehicles: int = 50) -> str:
    """Reading ``index`` as one valid JSON line (for tools that append objects of their own)."""
    r = rng.random
    return _LINE % (
        index,
        index % vehicles,
        START_TS + index,
        r() * 40,
        51.5 + r(),
        12.5 + r(),
        5 + r() * 95,
        10_000 + index * 0.01,
    )


def object_key(number: int, first_ts: int, *, gz: bool = False, width: int = 5) -> str:
    """The key of object ``number`` whose first reading has timestamp ``first_ts``."""
    date_hour = time.strftime("date=%Y-%m-%d/hour=%H", time.gmtime(first_ts))
    return f"{date_hour}/part-{number:0{width}d}.jsonl{'.gz' if gz else ''}"


def generated_objects(out: Path) -> list[Path]:
    """The objects a run of this generator may have written under ``out`` (any size, gzip or not)."""
    if not out.is_dir():
        return []
    return sorted(p for p in out.glob("date=*/hour=*/part-*") if _OBJECT_NAME.fullmatch(p.name))


def clean(out: Path) -> int:
    """Remove what earlier runs generated under ``out`` (objects, manifest, emptied folders); returns the
    number of objects removed. Anything else in ``out`` is left alone."""
    removed = generated_objects(out)
    for path in removed:
        path.unlink()
    (out / MANIFEST).unlink(missing_ok=True)
    if out.is_dir():
        for folder in sorted(out.glob("date=*/hour=*"), reverse=True) + sorted(out.glob("date=*")):
            if folder.is_dir() and not any(folder.iterdir()):
                folder.rmdir()
    return len(removed)


def generate(
    out: Path,
    records: int,
    per_object: int,
    *,
    seed: int = 7,
    malformed: float = 0.01,
    gz: bool = False,
    vehicles: int = 50,
) -> GenerateSummary:
    """Write ``records`` lines in objects of ``per_object`` lines under ``out``, plus the manifest.

    Values come from ``random.Random(seed)`` (drawn for every line, whatever its kind, so the valid lines
    do not depend on ``malformed``); which lines are malformed comes from :func:`line_kind`.
    """
    if records < 0 or per_object <= 0 or vehicles <= 0 or not 0 <= malformed <= 1:
        raise ValueError("records must be >= 0, per_object and vehicles > 0, malformed in 0..1")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    stale = {p.relative_to(out).as_posix() for p in generated_objects(out)}
    objects = -(-records // per_object)
    width = max(5, len(str(objects - 1)))
    rng = random.Random(seed)
    base, threshold = _seed_base(seed), _threshold(malformed)
    counts = {"valid": 0, "malformed_json": 0, "invalid": 0}
    for number in range(objects):
        first = number * per_object
        last = min(first + per_object, records)
        key = object_key(number, START_TS + first, gz=gz, width=width)
        text = _object_text(first, last, rng, base, threshold, vehicles, counts)
        data = text.encode()
        _write_atomically(out / key, gzip.compress(data, compresslevel=6, mtime=0) if gz else data)
        stale.discard(key)
    summary = GenerateSummary(
        records=records,
        valid=counts["valid"],
        malformed_json=counts["malformed_json"],
        invalid=counts["invalid"],
        objects=objects,
        seed=seed,
        malformed=malformed,
        per_object=per_object,
        gz=gz,
        stale_objects=len(stale),
    )
    _write_atomically(out / MANIFEST, (json.dumps(summary.to_json(), indent=2) + "\n").encode())
    return summary


def _object_text(
    first: int,
    last: int,
    rng: random.Random,
    base: int,
    threshold: int,
    vehicles: int,
    counts: dict[str, int],
) -> str:
    """The lines ``first`` to ``last - 1`` as one string (the hot loop: one %-format per valid line)."""
    random_ = rng.random
    template, mask, golden, m1, m2 = _LINE, _MASK, _GOLDEN, _M1, _M2
    lines: list[str] = []
    append = lines.append
    bad = 0
    for i in range(first, last):
        line = template % (
            i,
            i % vehicles,
            START_TS + i,
            random_() * 40,
            51.5 + random_(),
            12.5 + random_(),
            5 + random_() * 95,
            10_000 + i * 0.01,
        )
        # _line_hash(base, i), inlined
        h = (base + (i + 1) * golden) & mask
        h = ((h ^ (h >> 30)) * m1) & mask
        h = ((h ^ (h >> 27)) * m2) & mask
        h ^= h >> 31
        if h < threshold:
            bad += 1
            if h & 1:
                counts["malformed_json"] += 1
                line = _malformed_json(line, i, h)
            else:
                counts["invalid"] += 1
                line = _invalid(line, h)
        append(line)
    counts["valid"] += last - first - bad
    return "".join(lines)


def _malformed_json(line: str, index: int, h: int) -> str:
    """A line that is not a JSON object: truncated JSON, plain text or a JSON array (never blank, never a
    carriage return, always UTF-8)."""
    variant = (h >> 1) % 3
    if variant == 0:  # truncated: a proper prefix of an object's text never closes it
        text = line.rstrip("\n")
        return text[: 1 + (h >> 8) % (len(text) - 1)] + "\n"
    if variant == 1:
        return f"garbage #{index} ?? not json\n"
    return f'["evt-{index:09d}", {(h >> 8) % 4000 / 100}]\n'


def _invalid(line: str, h: int) -> str:
    """A JSON object that fails the processor's validation (one reason per line)."""
    record = json.loads(line)
    variant = (h >> 1) % 4
    if variant == 0:
        record["speed_mps"] = -round(record["speed_mps"] + 0.5, 2)
    elif variant == 1:
        record["speed_mps"] = f"{record['speed_mps']:.2f}"
    elif variant == 2:
        record["battery_pct"] = round(record["battery_pct"] + 100.5, 1)
    else:
        del record["vehicle_id"]
    return json.dumps(record, separators=(",", ":")) + "\n"


def _write_atomically(path: Path, data: bytes) -> None:
    """Write ``path`` whole or not at all (a hidden ``_`` name first, which a files source never reads)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.parent / f"_{path.name}.tmp"
    try:
        temporary.write_bytes(data)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        """One line on stderr, exit status 2."""
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def main(argv: list[str] | None = None) -> int:
    parser = _Parser(
        prog="python -m examples.vehicle_telemetry.generate",
        description=(__doc__ or "").splitlines()[0],
    )
    parser.add_argument("--records", type=int, default=10_000, help="lines to write (default 10000)")
    parser.add_argument("--per-object", type=int, default=2_500, help="lines per object (default 2500)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output folder (default: ./data here)")
    parser.add_argument("--gzip", action="store_true", help="write .jsonl.gz objects")
    parser.add_argument("--seed", type=int, default=7, help="seed of values and malformed lines (default 7)")
    parser.add_argument(
        "--malformed", type=float, default=0.01, help="share of malformed lines, 0..1 (default 0.01)"
    )
    parser.add_argument("--clean", action="store_true", help="first remove what earlier runs generated")
    args = parser.parse_args(argv)
    if args.records < 0:
        parser.error(f"--records must be >= 0, got {args.records}")
    if args.per_object <= 0:
        parser.error(f"--per-object must be > 0, got {args.per_object}")
    if not 0 <= args.malformed <= 1:
        parser.error(f"--malformed must be a fraction in 0..1, got {args.malformed}")
    if args.out.exists() and not args.out.is_dir():
        parser.error(f"--out {args.out} is not a folder")
    began = time.monotonic()
    removed = clean(args.out) if args.clean else 0
    s = generate(
        args.out, args.records, args.per_object, seed=args.seed, malformed=args.malformed, gz=args.gzip
    )
    print(
        f"wrote {s.records} records ({s.valid} valid, {s.malformed_json} malformed JSON, {s.invalid} "
        f"invalid) in {s.objects} objects under {args.out} in {time.monotonic() - began:.1f} s"
        + (f"; removed {removed} earlier objects" if args.clean else "")
        + (f"; {s.stale_objects} earlier objects remain (--clean removes them)" if s.stale_objects else ""),
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
