"""The 1,000,000-record local run: generate telemetry, ``leanops run`` it once, verify the committed output.

Generates 1,000,000 vehicle telemetry records (objects of 50,000, 1% malformed, seed 7) in a temporary
project folder with its own topics file, then runs ``python -m leanopsctl run vt --json`` as a separate
process from the repository root, with a private ``LEANOPS_HOME`` (its own persistent DynamoDB Local),
exactly as a user would. Then ``leanops output vt --json`` names the committed objects, and the run is
checked:

- it SUCCEEDED and read every record;
- the committed output holds every valid ``event_id`` exactly once, and nothing else;
- the committed quarantine objects hold exactly the malformed lines (each maps back, by source key and
  line, to a line the generator made malformed or invalid, and the reason matches its kind);
- the sink holds no object that the output does not name.

Run it from the repository root (``make soak`` does exactly this)::

    python bench/million.py             # writes bench/results/million.json (a few minutes)
    python bench/million.py --records 100000 --output /tmp/million.json   # a smaller smoke run

Exit code 1, and nothing written, when the run could not be made or any check fails; the reason is on
stderr. ``leanops local down`` stops the private DynamoDB Local on the way out.
"""

from __future__ import annotations

import importlib
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import yaml
from common import (
    REPO_ROOT,
    BenchError,
    Stopwatch,
    argument_parser,
    output_help,
    results_path,
    run_and_report,
    use_dummy_aws_env,
)
from leanopsctl.local.dynamodb_local import local_down

from leanops.constants import ENV_CONFIG, ENV_DYNAMODB_ENDPOINT, ENV_HOME, ENV_STATE_TABLE

NAME = "million"
SCRIPT = "bench/million.py"
TOPIC = "vt"
PROCESSOR = "examples.vehicle_telemetry.processor:process"
QUARANTINE = "_quarantine/"
EVENT_ID = re.compile(r"evt-(\d{9})")
#: Reasons the files source gives the lines that are not JSON objects (leanops.data.files).
SOURCE_REASONS = ("not valid JSON", "not a JSON object")
RUN_TIMEOUT_SECONDS = 1800
#: Removed too, besides the credential variables: an endpoint for every service.
ALSO_UNSET_AWS_ENV = ("AWS_ENDPOINT_URL",)


@dataclass(frozen=True)
class Settings:
    """The data and the topic."""

    records: int
    per_object: int
    seed: int
    malformed: float
    batch_size: int
    max_batches_per_run: int
    lease_seconds: int


def settings_for(records: int) -> Settings:
    return Settings(
        records=records,
        per_object=50_000,
        seed=7,
        malformed=0.01,
        batch_size=50_000,
        max_batches_per_run=100,
        lease_seconds=120,
    )


def import_generator() -> ModuleType:
    """``examples.vehicle_telemetry.generate`` (the repository root is not on ``sys.path`` for a script)."""
    if str(REPO_ROOT) not in sys.path:
        sys.path.insert(0, str(REPO_ROOT))
    return importlib.import_module("examples.vehicle_telemetry.generate")


# ------------------------------------------------------------------------------------------------------------
# The project and the `leanops` processes
# ------------------------------------------------------------------------------------------------------------


class Project:
    """A project folder: ``data/``, ``out/``, ``topics.yaml`` and a private ``home/`` (LEANOPS_HOME)."""

    def __init__(self, root: Path, settings: Settings) -> None:
        self.root, self.settings = root, settings
        self.data, self.out, self.home = root / "data", root / "out", root / "home"
        self.config = root / "topics.yaml"
        topic = {
            "source": {"type": "files", "uri": "./data"},
            "sink": {"type": "files", "uri": "./out"},
            "processor": PROCESSOR,
            "batch_size": settings.batch_size,
            "max_batches_per_run": settings.max_batches_per_run,
            "lease_seconds": settings.lease_seconds,
            "timestamp_field": "ts",
            "on_malformed": "quarantine",
        }
        self.config.write_text(yaml.safe_dump({"topics": {TOPIC: topic}}, sort_keys=False))
        # As tests/integration/conftest.py runs `leanops`: a private home, the default table name, and no
        # endpoint inherited (the CLI starts and points at the home's own DynamoDB Local).
        self.env = {**os.environ, ENV_HOME: str(self.home), ENV_STATE_TABLE: "leanops-state"}
        for name in (ENV_DYNAMODB_ENDPOINT, ENV_CONFIG):
            self.env.pop(name, None)

    def leanops(
        self, *args: str, config: bool = True, timeout: float = 300
    ) -> tuple[subprocess.CompletedProcess[str], float]:
        """``python -m leanopsctl ARGS [--config topics.yaml]`` from the repository root; (result,
        seconds)."""
        command = [sys.executable, "-m", "leanopsctl", *args]
        if config:
            command += ["--config", str(self.config)]
        began = time.perf_counter()
        done = subprocess.run(
            command, cwd=REPO_ROOT, env=self.env, capture_output=True, text=True, timeout=timeout, check=False
        )
        return done, time.perf_counter() - began

    def json_of(self, args: tuple[str, ...], done: subprocess.CompletedProcess[str]) -> dict[str, Any]:
        """The JSON object a ``--json`` command printed (its last stdout line)."""
        lines = done.stdout.strip().splitlines()
        try:
            return dict(json.loads(lines[-1]))
        except (IndexError, ValueError):
            raise BenchError(
                f"`leanops {' '.join(args)}` exited {done.returncode} without a JSON report; stderr: "
                f"{done.stderr[-2000:]}"
            ) from None

    def down(self) -> str:
        """``leanops local down`` for the private home; falls back to the library call if the CLI fails."""
        with suppress(subprocess.TimeoutExpired):
            done, _ = self.leanops("local", "down", config=False, timeout=120)
            if done.returncode == 0:
                return done.stdout.strip()
        local_down(self.home)
        return "stopped by leanopsctl.local.dynamodb_local.local_down (the CLI command failed)"


# ------------------------------------------------------------------------------------------------------------
# Checks
# ------------------------------------------------------------------------------------------------------------


class Checks:
    """Named checks, each passed or not with a detail; all are recorded, then any failure stops the run."""

    def __init__(self) -> None:
        self.results: dict[str, dict[str, Any]] = {}

    def add(self, name: str, passed: bool, detail: Any) -> None:
        self.results[name] = {"passed": bool(passed), "detail": detail}

    def failed(self) -> list[str]:
        return [f"{name}: {r['detail']}" for name, r in self.results.items() if not r["passed"]]


def check_run(checks: Checks, report: dict[str, Any], returncode: int, settings: Settings) -> None:
    expected_batches = -(-settings.records // settings.batch_size)
    checks.add(
        "run_succeeded",
        returncode == 0 and report.get("status") == "SUCCEEDED" and report.get("outcome") == "processed",
        {"exit_code": returncode, "status": report.get("status"), "outcome": report.get("outcome")},
    )
    checks.add(
        "run_read_every_record",
        report.get("records") == settings.records,
        {"records": report.get("records"), "expected": settings.records},
    )
    checks.add(
        "run_batches",
        report.get("batches") == expected_batches,
        {"batches": report.get("batches"), "expected": expected_batches},
    )


def expected_kinds(generator: ModuleType, settings: Settings) -> tuple[bytearray, bytearray]:
    """Per line index: 1 where the generator wrote a valid reading; 1 where it wrote a malformed line."""
    valid, bad = bytearray(settings.records), bytearray(settings.records)
    for index in range(settings.records):
        if generator.line_kind(index, settings.seed, settings.malformed) == "valid":
            valid[index] = 1
        else:
            bad[index] = 1
    return valid, bad


def committed_lines(project: Project, batches: list[dict[str, Any]], field: str) -> Iterator[bytes]:
    """The lines of the committed objects that ``field`` (``object`` or ``quarantine``) names."""
    for batch in batches:
        name = batch.get(field)
        if name:
            with open(project.out / name, "rb") as stream:
                yield from stream


def check_output(
    checks: Checks, project: Project, batches: list[dict[str, Any]], valid: bytearray, summary: Any
) -> None:
    """Every valid event id exactly once in the committed objects, and nothing else."""
    seen = bytearray(len(valid))
    lines = duplicates = unexpected = unreadable = 0
    examples: list[str] = []
    for line in committed_lines(project, batches, "object"):
        lines += 1
        try:
            event_id = json.loads(line).get("event_id")
        except (ValueError, AttributeError):
            unreadable += 1
            continue
        found = EVENT_ID.fullmatch(event_id) if isinstance(event_id, str) else None
        index = int(found.group(1)) if found else -1
        if not 0 <= index < len(valid) or not valid[index]:
            unexpected += 1
            if len(examples) < 5:
                examples.append(str(event_id))
        elif seen[index]:
            duplicates += 1
            if len(examples) < 5:
                examples.append(f"{event_id} (again)")
        else:
            seen[index] = 1
    missing = sum(valid) - sum(seen)
    detail = {
        "lines": lines,
        "distinct_valid_event_ids": sum(seen),
        "expected": summary.valid,
        "missing": missing,
        "duplicates": duplicates,
        "unexpected": unexpected,
        "unreadable_lines": unreadable,
        "examples": examples,
    }
    passed = missing == 0 and duplicates == 0 and unexpected == 0 and unreadable == 0
    checks.add("output_every_valid_event_exactly_once", passed and sum(seen) == summary.valid, detail)
    written = sum(int(batch.get("written", 0)) for batch in batches)
    checks.add(
        "output_written_counts", written == summary.valid, {"written": written, "expected": summary.valid}
    )


def object_firsts(generator: ModuleType, settings: Settings) -> dict[str, int]:
    """Each generated object's key, and the index of its first line (as the generator names them)."""
    objects = -(-settings.records // settings.per_object)
    width = max(5, len(str(objects - 1)))
    return {
        generator.object_key(number, generator.START_TS + number * settings.per_object, width=width): (
            number * settings.per_object
        )
        for number in range(objects)
    }


def check_quarantine(
    checks: Checks,
    project: Project,
    batches: list[dict[str, Any]],
    bad: bytearray,
    firsts: dict[str, int],
    generator: ModuleType,
    settings: Settings,
    summary: Any,
) -> None:
    """The committed quarantine objects hold exactly the malformed lines, each once, with a fitting reason."""
    seen = bytearray(len(bad))
    lines = duplicates = not_malformed = wrong_reason = unreadable = 0
    by_kind = {"malformed_json": 0, "invalid": 0}
    examples: list[str] = []
    for line in committed_lines(project, batches, "quarantine"):
        lines += 1
        try:
            entry = json.loads(line)
            index = firsts[entry["source_key"]] + int(entry["line"]) - 1
            reason = str(entry["reason"])
        except (ValueError, KeyError, TypeError):
            unreadable += 1
            continue
        if not 0 <= index < len(bad) or not bad[index]:
            not_malformed += 1
            if len(examples) < 5:
                examples.append(f"{entry['source_key']} line {entry['line']}")
            continue
        if seen[index]:
            duplicates += 1
            continue
        seen[index] = 1
        kind = generator.line_kind(index, settings.seed, settings.malformed)
        by_kind[kind] += 1
        from_source = reason.startswith(SOURCE_REASONS)
        raw = entry.get("raw")
        fits = (
            from_source and isinstance(raw, str)
            if kind == "malformed_json"
            else not from_source and isinstance(raw, dict) and raw.get("event_id") == f"evt-{index:09d}"
        )
        if not fits:
            wrong_reason += 1
            if len(examples) < 5:
                examples.append(f"{kind} line {index}: {reason[:80]}")
    expected = summary.malformed_json + summary.invalid
    missing = sum(bad) - sum(seen)
    quarantined = sum(int(batch.get("quarantined", 0)) for batch in batches)
    detail = {
        "lines": lines,
        "expected": expected,
        "malformed_json": by_kind["malformed_json"],
        "expected_malformed_json": summary.malformed_json,
        "invalid": by_kind["invalid"],
        "expected_invalid": summary.invalid,
        "missing": missing,
        "duplicates": duplicates,
        "not_malformed": not_malformed,
        "reason_does_not_fit_kind": wrong_reason,
        "unreadable_lines": unreadable,
        "quarantined_in_output_records": quarantined,
        "examples": examples,
    }
    passed = (
        lines == expected
        and missing == 0
        and duplicates == 0
        and not_malformed == 0
        and wrong_reason == 0
        and unreadable == 0
        and by_kind["malformed_json"] == summary.malformed_json
        and by_kind["invalid"] == summary.invalid
        and quarantined == expected
    )
    checks.add("quarantine_exactly_the_malformed_lines", passed, detail)


def check_sink(checks: Checks, project: Project, batches: list[dict[str, Any]]) -> None:
    """Nothing in the sink that the output does not name: at its root, and under ``_quarantine/``."""
    named = {batch["object"] for batch in batches if batch.get("object")}
    named_quarantine = {batch["quarantine"] for batch in batches if batch.get("quarantine")}
    files = sorted(p.relative_to(project.out).as_posix() for p in project.out.rglob("*") if p.is_file())
    outside = [key for key in files if not key.startswith(QUARANTINE) and key not in named]
    quarantine = [key for key in files if key.startswith(QUARANTINE) and key not in named_quarantine]
    absent = sorted(name for name in named | named_quarantine if not (project.out / name).is_file())
    checks.add(
        "sink_holds_only_named_objects",
        not outside and not absent,
        {
            "files": len(files),
            "named_objects": len(named),
            "unnamed": outside[:20],
            "named_but_absent": absent[:20],
        },
    )
    checks.add(
        "quarantine_folder_holds_only_named_objects",
        not quarantine,
        {"named_quarantine_objects": len(named_quarantine), "unnamed": quarantine[:20]},
    )


# ------------------------------------------------------------------------------------------------------------
# The run
# ------------------------------------------------------------------------------------------------------------


def batch_log(home: Path) -> list[dict[str, Any]]:
    """The process task's ``batch processed`` log records (Powertools JSON) from the handlers' log."""
    path = home / "logs" / "functions.log"
    found = []
    if path.is_file():
        with open(path, errors="replace") as log:
            for line in log:
                if '"batch processed"' not in line:
                    continue
                with suppress(ValueError):
                    record = json.loads(line)
                    if isinstance(record, dict) and record.get("message") == "batch processed":
                        found.append(record)
    return found


def measure(settings: Settings) -> dict[str, Any]:
    stopwatch = Stopwatch.start()
    generator = import_generator()
    with tempfile.TemporaryDirectory(prefix="leanops-bench-million-") as directory:
        project = Project(Path(directory), settings)
        began = time.perf_counter()
        summary = generator.generate(
            project.data,
            settings.records,
            settings.per_object,
            seed=settings.seed,
            malformed=settings.malformed,
        )
        generate_seconds = time.perf_counter() - began
        print(f"generated {summary.records:,} records in {summary.objects} objects", file=sys.stderr)
        try:
            up, up_seconds = project.leanops("local", "up", config=False, timeout=180)
            if up.returncode != 0:
                raise BenchError(f"`leanops local up` failed ({up.returncode}): {up.stderr[-2000:]}")
            run_args = ("run", TOPIC, "--json")
            run, run_seconds = project.leanops(*run_args, timeout=RUN_TIMEOUT_SECONDS)
            report = project.json_of(run_args, run)
            print(
                f"leanops run: {report.get('status')} {report.get('records')} records, "
                f"{report.get('batches')} batches in {run_seconds:.1f} s",
                file=sys.stderr,
            )
            output_args = ("output", TOPIC, "--json")
            output, output_seconds = project.leanops(*output_args)
            if output.returncode != 0:
                raise BenchError(f"`leanops output` failed ({output.returncode}): {output.stderr[-2000:]}")
            batches = list(project.json_of(output_args, output)["batches"])
            logged = batch_log(project.home)
        finally:
            down = project.down()
        began = time.perf_counter()
        checks = Checks()
        check_run(checks, report, run.returncode, settings)
        checks.add(
            "output_records_cover_the_run",
            len(batches) == report.get("batches")
            and sum(int(b.get("records", 0)) for b in batches) == settings.records,
            {"output_records": len(batches), "records": sum(int(b.get("records", 0)) for b in batches)},
        )
        valid, bad = expected_kinds(generator, settings)
        check_output(checks, project, batches, valid, summary)
        del valid
        firsts = object_firsts(generator, settings)
        check_quarantine(checks, project, batches, bad, firsts, generator, settings, summary)
        check_sink(checks, project, batches)
        verify_seconds = time.perf_counter() - began
    failed = checks.failed()
    if failed:
        raise BenchError("checks failed:\n  " + "\n  ".join(failed))
    batch_seconds = [float(record["seconds"]) for record in logged if "seconds" in record]
    return {
        "records": settings.records,
        "run_wall_seconds": round(run_seconds, 2),
        "records_per_second": round(settings.records / run_seconds),
        "batches": report.get("batches"),
        "checks_passed": sorted(checks.results),
        "checks": checks.results,
        "run": {key: report.get(key) for key in ("status", "outcome", "batches", "records", "checkpoint")}
        | {"states_entered": report.get("states_entered")},
        "process_task_batch_seconds": {
            "batches_logged": len(batch_seconds),
            "total": round(sum(batch_seconds), 2),
            "median": round(statistics.median(batch_seconds), 3) if batch_seconds else None,
            "max": round(max(batch_seconds), 3) if batch_seconds else None,
        },
        "data": summary.to_json(),
        "generate_seconds": round(generate_seconds, 1),
        "local_up_seconds": round(up_seconds, 1),
        "output_command_seconds": round(output_seconds, 2),
        "verify_seconds": round(verify_seconds, 1),
        "local_down": down,
        **stopwatch.record(settings, NOTES),
    }


NOTES = [
    "One `python -m leanopsctl run vt --json --config <project>/topics.yaml` process, from the repository "
    "root (its template.yaml), with a private LEANOPS_HOME and LEANOPS_STATE_TABLE=leanops-state, as "
    "tests/integration/conftest.py runs the CLI: the real state machine in the local runtime (moto's ASL "
    "interpreter, Lambda in-process) and the home's own persistent DynamoDB Local. `leanops local up` runs "
    "first, so run_wall_seconds (the process's wall clock: interpreter start, imports, the execution, the "
    "report) leaves out the server's start; records_per_second = records / run_wall_seconds.",
    "Data: examples.vehicle_telemetry.generate, 1,000,000 records in objects of 50,000, seed 7, malformed "
    "share 0.01, on local disk; topic: batch_size 50,000, max_batches_per_run 100 (so one run reads all "
    "20 batches), lease_seconds 120, timestamp_field ts, on_malformed quarantine, JSON Lines sink.",
    "Checks (all must pass, else exit 1 and nothing is written): the run SUCCEEDED with every record; "
    "`leanops output vt --json` names the committed objects; those hold every valid event_id (the lines "
    "line_kind(index, 7, 0.01) calls valid; evt-<index, 9 digits>) exactly once and nothing else; the "
    "committed quarantine objects hold exactly the malformed lines (malformed_json + invalid of the "
    "generator's summary): each entry's source_key + line maps back to a line that is not valid, once, "
    "with a source reason for malformed JSON and a processor reason (and the record) for invalid readings; "
    "the sink holds no object, and _quarantine/ no quarantine object, that the output does not name.",
    "process_task_batch_seconds: BatchResult.seconds of each `batch processed` log line in the handlers' "
    "log ($LEANOPS_HOME/logs/functions.log): source read, processor and sink write, per batch.",
]


def print_summary(results: dict[str, Any]) -> None:
    print(
        f"{results['records']:,} records, {results['batches']} batches in {results['run_wall_seconds']} s "
        f"({results['records_per_second']:,} records/s); checks passed: {len(results['checks_passed'])}",
        file=sys.stderr,
    )


def main(argv: list[str] | None = None) -> int:
    default_output = results_path(NAME)
    parser = argument_parser(__doc__)
    parser.add_argument(
        "--records", type=int, default=1_000_000, help="records to generate (default 1000000)"
    )
    parser.add_argument("--output", type=Path, default=default_output, help=output_help(default_output))
    args = parser.parse_args(argv)
    if args.records <= 0:
        parser.error("--records must be > 0")
    use_dummy_aws_env(*ALSO_UNSET_AWS_ENV)
    settings = settings_for(args.records)
    return run_and_report(SCRIPT, args.output, lambda: measure(settings), print_summary)


if __name__ == "__main__":
    sys.exit(main())
