"""Benchmark of the operator's path on a warm local stack: `leanops run` as a user runs it, as processes.

Measures, in one run on one machine (ratios against baselines measured in the same run, as the machines are
shared and noisy):

- ``up_to_date_run_over_version``: median wall time of 10 ``leanops run`` of an up-to-date topic over the
  median of 10 ``leanops --version`` (the interpreter, the CLI's imports, nothing else);
- ``one_batch_run_over_version``: the same for 10 runs that each find one new object (one batch);
- ``end_to_end_over_plain_script``: records per second of one ``leanops run`` over >= 300,000 generated
  records (wall time of the process: start, every batch through the state machine and Lambda workers,
  the report) over those of a plain loop in this process that reads the same objects, parses them, calls
  the same processor and writes the same JSON Lines files (bench/throughput.py's ``bare``);
- ``concurrent_runs`` / ``concurrent_failed``: 50 ``leanops run`` processes at once over 10 topics; every
  one must exit 0 (processed, up_to_date or skipped_locked) and every record be committed exactly once.

Run it from the repository root (``make bench`` does)::

    python bench/cli.py            # writes bench/results/cli.json
    python bench/cli.py --quick    # smaller data, writes bench/results/cli.quick.json

The stack (and its DynamoDB Local) lives in a private temporary folder and is stopped on the way out; dummy
AWS credentials keep every request on this machine.
"""

from __future__ import annotations

import json
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import yaml
from common import (
    REPO_ROOT,
    BenchError,
    load_average,
    machine_info,
    now_iso,
    parse_quick_args,
    run_and_report,
    use_dummy_aws_env,
)
from leanopsctl.local.stack import stack_down
from throughput import bare, bare_logger, import_generator

from leanops.batch import load_processor

PROCESSOR = "examples.vehicle_telemetry.processor:process"
REPEATS = 10
CONCURRENT_RUNS = 50
CONCURRENT_TOPICS = 10
OK_OUTCOMES = {"processed", "up_to_date", "skipped_locked"}
#: Batch sizes of the throughput runs: the headline ratio is the first (bench/million.py's size); the
#: default (1,000) shows what a run pays per batch when batches are small.
BATCH_SIZES = (50_000, 10_000, 1_000)


def topic(source: str, sink: str, batch_size: int) -> dict[str, Any]:
    return {
        "source": {"type": "files", "uri": source},
        "sink": {"type": "files", "uri": sink, "format": "jsonl"},
        "processor": PROCESSOR,
        "batch_size": batch_size,
        "max_batches_per_run": 2_000,
        "timestamp_field": "ts",
        "on_malformed": "quarantine",
    }


class Project:
    """A user's project in a private folder: topics.yaml, data, examples (the processor), .leanops."""

    def __init__(self, root: Path, records: int, per_object: int) -> None:
        self.root = root
        self.generate = import_generator().generate
        self.generate(root / "data" / "bulk", records, per_object, malformed=0.0)
        self.generate(root / "data" / "small", 1_000, 1_000, malformed=0.0)
        for n in range(CONCURRENT_TOPICS):
            self.generate(root / "data" / f"c{n}", 2_000, 500, malformed=0.0, seed=n)
        topics = {
            **{f"bulk{size}": topic("./data/bulk", f"./out/bulk{size}", size) for size in BATCH_SIZES},
            "small": topic("./data/small", "./out/small", 5_000),
            **{f"c{n}": topic(f"./data/c{n}", f"./out/c{n}", 500) for n in range(CONCURRENT_TOPICS)},
        }
        (root / "topics.yaml").write_text(yaml.safe_dump({"topics": topics}, sort_keys=False))
        # The processor's package beside the topics file, as in a user's project.
        examples = root / "examples" / "vehicle_telemetry"
        examples.mkdir(parents=True)
        for name in ("__init__.py", "vehicle_telemetry/__init__.py", "vehicle_telemetry/processor.py"):
            source = REPO_ROOT / "examples" / name
            (root / "examples" / name).write_bytes(source.read_bytes())
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(("LEANOPS_", "AWS_ENDPOINT_URL"))}

    def leanops(self, *args: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [sys.executable, "-m", "leanopsctl", *args, "--config", str(self.root / "topics.yaml")],
            cwd=self.root,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def timed(self, *args: str, expect: set[str] | None = None) -> tuple[float, dict[str, Any]]:
        began = time.perf_counter()
        process = self.leanops(*args)
        out, err = process.communicate(timeout=1800)
        took = time.perf_counter() - began
        if process.returncode != 0:
            raise BenchError(f"leanops {' '.join(args)} exited {process.returncode}: {err[-2000:]}")
        report = json.loads(out) if out.strip().startswith("{") else {}
        if expect is not None and report.get("outcome") not in expect:
            raise BenchError(f"leanops {' '.join(args)}: outcome {report.get('outcome')}, expected {expect}")
        return took, report

    def version_seconds(self) -> float:
        began = time.perf_counter()
        done = subprocess.run(
            [sys.executable, "-m", "leanopsctl", "--version"], env=self.env, capture_output=True, check=True
        )
        if b"leanops" not in done.stdout:
            raise BenchError(f"leanops --version printed {done.stdout!r}")
        return time.perf_counter() - began


def committed_records(project: Project, name: str) -> list[str]:
    """The `event_id`s of ``name``'s committed output (the objects its commits name), duplicates kept."""
    _took, report = project.timed("output", name, "--json")
    ids = []
    for batch in report["batches"]:
        if batch.get("object"):
            path = project.root / "out" / name / batch["object"]
            ids += [json.loads(line)["event_id"] for line in path.read_text().splitlines()]
    return ids


def measure(quick: bool) -> dict[str, Any]:
    use_dummy_aws_env()
    load = load_average()
    records = 100_000 if quick else 300_000
    with tempfile.TemporaryDirectory(prefix="leanops-bench-cli-") as folder:
        root = Path(folder)
        project = Project(root, records, 5_000)
        try:
            return run(project, records, load, quick)
        finally:
            stack_down(root / ".leanops")


def throughput(project: Project, records: int, batch_size: int, log: logging.Logger) -> dict[str, Any]:
    """A plain loop, then `leanops run`, over the same objects with batches of ``batch_size``."""
    processor = load_processor(PROCESSOR, project.root)
    plain = bare(
        project.root / "data" / "bulk", project.root / f"bare{batch_size}", processor, batch_size, log
    )
    run_seconds, report = project.timed("run", f"bulk{batch_size}", "--json", expect={"processed"})
    if report["records"] != records:
        raise BenchError(f"leanops run moved {report['records']} records, not {records}")
    plain_rps, run_rps = plain.records / plain.seconds, report["records"] / run_seconds
    return {
        "batch_size": batch_size,
        "batches": report["batches"],
        "end_to_end_over_plain_script": round(run_rps / plain_rps, 3),
        "leanops_run_seconds": round(run_seconds, 2),
        "execution_seconds": report["seconds"],
        "plain_script_seconds": round(plain.seconds, 2),
        "leanops_run_records_per_second": round(run_rps),
        "plain_script_records_per_second": round(plain_rps),
    }


def run(project: Project, records: int, load: list[float], quick: bool) -> dict[str, Any]:
    started = time.perf_counter()
    _up, _ = project.timed("local", "up")
    stack_start_seconds = time.perf_counter() - started
    project.timed("run", "small", "--json", expect={"processed"})  # warm: every function INIT once
    versions = [project.version_seconds() for _ in range(REPEATS)]
    up_to_date = [project.timed("run", "small", "--json", expect={"up_to_date"})[0] for _ in range(REPEATS)]
    one_batch = []
    for n in range(REPEATS):
        project.generate(
            project.root / "data" / "small" / f"more{n:02d}", 1_000, 1_000, malformed=0.0, seed=100 + n
        )
        took, report = project.timed("run", "small", "--json", expect={"processed"})
        if report["batches"] != 1:
            raise BenchError(f"a one-object run took {report['batches']} batches")
        one_batch.append(took)

    # Throughput: a plain loop, then leanops run, on the same objects, at each batch size.
    with open(project.root / "bare.log", "w") as log:  # one file: the plain loop's logger is process-wide
        logger = bare_logger(log)
        by_batch_size = [throughput(project, records, size, logger) for size in BATCH_SIZES]

    # 50 runs at once over 10 topics.
    began = time.perf_counter()
    names = [f"c{n % CONCURRENT_TOPICS}" for n in range(CONCURRENT_RUNS)]
    processes = [project.leanops("run", name, "--json") for name in names]
    finished = [(p.communicate(timeout=1800), p.returncode) for p in processes]
    concurrent_seconds = time.perf_counter() - began
    outcomes: Counter[str] = Counter()
    failed = []
    for ((out, err), code), name in zip(finished, names, strict=True):
        report_ = json.loads(out) if out.strip().startswith("{") else {}
        outcomes[str(report_.get("outcome"))] += 1
        if code != 0 or report_.get("outcome") not in OK_OUTCOMES:
            failed.append({"topic": name, "exit": code, "error": report_.get("error"), "stderr": err[-500:]})
    timed_out = sum("Sandbox.Timedout" in json.dumps(f) for f in failed)
    # Whatever a skipped run left behind, one more run per topic finishes it; then every record once.
    duplicates = missing = 0
    for n in range(CONCURRENT_TOPICS):
        project.timed("run", f"c{n}", "--json", expect=OK_OUTCOMES)
        ids = committed_records(project, f"c{n}")
        duplicates += len(ids) - len(set(ids))
        missing += 2_000 - len(set(ids))

    return {
        "benchmark": "cli",
        "quick": quick,
        "measured_at": now_iso(),
        "machine": machine_info(load),
        "up_to_date_run_over_version": round(statistics.median(up_to_date) / statistics.median(versions), 2),
        "one_batch_run_over_version": round(statistics.median(one_batch) / statistics.median(versions), 2),
        "end_to_end_over_plain_script": by_batch_size[0]["end_to_end_over_plain_script"],
        "concurrent_runs": CONCURRENT_RUNS,
        "concurrent_failed": len(failed),
        "seconds": {
            "stack_start": round(stack_start_seconds, 2),
            "version_median": round(statistics.median(versions), 3),
            "up_to_date_run_median": round(statistics.median(up_to_date), 3),
            "one_batch_run_median": round(statistics.median(one_batch), 3),
            "version_all": [round(s, 3) for s in versions],
            "up_to_date_run_all": [round(s, 3) for s in up_to_date],
            "one_batch_run_all": [round(s, 3) for s in one_batch],
            "concurrent_all": round(concurrent_seconds, 2),
        },
        "throughput": {"records": records, "by_batch_size": by_batch_size},
        "concurrent": {
            "topics": CONCURRENT_TOPICS,
            "outcomes": dict(outcomes),
            "failed": failed[:10],
            "sandbox_timed_out": timed_out,
            "duplicate_records": duplicates,
            "missing_records": missing,
        },
        "method": (
            "One private project folder (topics.yaml, generated vehicle telemetry, the example processor "
            "beside it), its local stack started once with `leanops local up`, then every command as a "
            "separate `python -m leanopsctl ... --config <project>/topics.yaml` process. Wall times include "
            "interpreter start and imports. The plain script runs in the benchmark's process (imports done)."
        ),
    }


def summary(results: dict[str, Any]) -> None:
    keys = (
        "up_to_date_run_over_version",
        "one_batch_run_over_version",
        "end_to_end_over_plain_script",
        "concurrent_runs",
        "concurrent_failed",
    )
    print(", ".join(f"{k}={results[k]}" for k in keys), file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    args = parse_quick_args(argv, __doc__, "cli", "smaller data (100,000 records) for a smoke run")
    return run_and_report("bench/cli.py", args.output, lambda: measure(args.quick), summary, one_line=True)


if __name__ == "__main__":
    raise SystemExit(main())
