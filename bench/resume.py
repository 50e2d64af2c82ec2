"""Reading one large object in batches: the cost of resuming inside it, with and without the resume hint.

A position is ``<key>#<line>``: a batch that resumes inside an object must find that line. Without a hint
it reads the object from its start and skips ``line`` lines, so reading an object of N lines in batches of
B costs about N^2 / 2B line reads. Within a run, the previous batch hands the next its byte offset
(``SourceBatch.resume``, carried in the run state), and the read seeks there. This benchmark reads one
generated telemetry object, batch after batch, three ways, on local disk, measured in the same run:

- ``sequential``: one read of the whole object (the floor: every line once);
- ``hinted``: batches of ``batch_size``, each passing the previous batch's hint (a run's batches);
- ``cold``: the same batches, without hints (as if each batch were the first of its run).

Results (``bench/results/resume.json``): seconds of each (median of ``rounds``), ``hinted_ratio`` =
hinted / sequential and ``cold_ratio`` = cold / sequential; and a check that all three read the same
records, rejects and end.

    python bench/resume.py [--quick] [--output PATH]
"""

from __future__ import annotations

import importlib
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from common import (
    REPO_ROOT,
    BenchError,
    Stopwatch,
    argument_parser,
    output_help,
    results_path,
    run_and_report,
)

from leanops.data.files import FilesSource

NAME = "resume"
SCRIPT = "bench/resume.py"


@dataclass(frozen=True)
class Settings:
    """One object of ``records`` lines read in batches of ``batch_size``, ``rounds`` times each way."""

    records: int
    batch_size: int
    rounds: int
    quick: bool


FULL = Settings(records=200_000, batch_size=2_000, rounds=3, quick=False)
QUICK = Settings(records=20_000, batch_size=1_000, rounds=1, quick=True)

NOTES = [
    "One JSON Lines object from examples.vehicle_telemetry.generate (seed 7, 1% malformed lines) on local "
    "disk, read with leanops.data.files.FilesSource.read: no processor, no sink, no orchestration. Each way "
    "is timed with time.perf_counter over the whole object; the median of the rounds is reported.",
    "hinted passes each batch's SourceBatch.resume to the next read, as the run state does between the "
    "batches of one run; the first batch of every run reads cold, so a run pays at most one skip.",
]


def read_in_batches(source: FilesSource, limit: int, *, hinted: bool) -> tuple[int, int, str | None]:
    """Every batch of the object: (records, rejects, last end)."""
    after: str | None = None
    resume: dict[str, Any] | None = None
    records = rejects = 0
    while True:
        batch = source.read(after, limit, resume=resume if hinted else None)
        records, rejects = records + len(batch.records), rejects + len(batch.rejects)
        if not batch.more:
            return records, rejects, batch.end
        after, resume = batch.end, batch.resume


def measure(settings: Settings) -> dict[str, Any]:
    stopwatch = Stopwatch.start()
    sys.path.insert(0, str(REPO_ROOT))
    generator = importlib.import_module("examples.vehicle_telemetry.generate")
    with tempfile.TemporaryDirectory(prefix="leanops-bench-resume-") as folder:
        data = Path(folder)
        summary = generator.generate(data, settings.records, settings.records, seed=7)
        if summary.objects != 1:
            raise BenchError(f"expected one object, generated {summary.objects}")
        source = FilesSource(str(data))
        ways = {
            "sequential": lambda: read_in_batches(source, settings.records + 1, hinted=False),
            "hinted": lambda: read_in_batches(source, settings.batch_size, hinted=True),
            "cold": lambda: read_in_batches(source, settings.batch_size, hinted=False),
        }
        seconds: dict[str, list[float]] = {way: [] for way in ways}
        outcomes: dict[str, tuple[int, int, str | None]] = {}
        for _ in range(settings.rounds):
            for way, read in ways.items():
                began = time.perf_counter()
                outcomes[way] = read()
                seconds[way].append(time.perf_counter() - began)
        object_mb = sum(p.stat().st_size for p in data.rglob("part-*")) / 1e6
    if len(set(outcomes.values())) != 1:
        raise BenchError(f"the three ways read different things: {outcomes}")
    median = {way: statistics.median(values) for way, values in seconds.items()}
    records, rejects, end = outcomes["hinted"]
    return {
        "records": records,
        "rejects": rejects,
        "end": end,
        "object_mb": round(object_mb, 1),
        "batches": -(-settings.records // settings.batch_size),
        "seconds": {way: round(value, 3) for way, value in median.items()},
        "hinted_ratio": round(median["hinted"] / median["sequential"], 2),
        "cold_ratio": round(median["cold"] / median["sequential"], 2),
        "same_records_every_way": True,
        **stopwatch.record(settings, NOTES),
    }


def print_summary(results: dict[str, Any]) -> None:
    s = results["seconds"]
    print(
        f"one object of {results['records'] + results['rejects']:,} lines ({results['object_mb']} MB) in "
        f"{results['batches']} batches: sequential {s['sequential']} s, hinted {s['hinted']} s "
        f"(x{results['hinted_ratio']}), cold {s['cold']} s (x{results['cold_ratio']})",
        file=sys.stderr,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argument_parser(__doc__)
    parser.add_argument("--quick", action="store_true", help="a small object, one round (a smoke test)")
    parser.add_argument(
        "--output", type=Path, help=output_help(results_path(NAME), results_path(NAME, quick=True))
    )
    args = parser.parse_args(argv)
    settings = QUICK if args.quick else FULL
    output = args.output or results_path(NAME, quick=args.quick)
    return run_and_report(SCRIPT, output, lambda: measure(settings), print_summary)


if __name__ == "__main__":
    sys.exit(main())
