"""What the benchmark scripts share: paths, the dummy AWS environment, DynamoDB Local, the command line and
the results file.

The scripts run as ``python bench/<name>.py`` from the repository root, so this folder is on ``sys.path``
and they import this module as ``common``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import boto3
import botocore
from leanopsctl.local.dynamodb_local import DynamoDBLocal, find_jar

from leanops.constants import ENV_DYNAMODB_ENDPOINT
from leanops.errors import LeanopsError

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

REPO_ROOT = Path(__file__).resolve().parents[1]
RESULTS_DIR = REPO_ROOT / "bench" / "results"

#: Dummy credentials and region: nothing a benchmark does may reach AWS.
DUMMY_AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "test",
    "AWS_SECRET_ACCESS_KEY": "test",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",
}
#: Variables that could point a client at real AWS credentials; always removed.
UNSET_AWS_ENV = ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN")

Results = dict[str, Any]


class BenchError(Exception):
    """The code under test did not behave as the scenario expects; the numbers would be meaningless."""


def use_dummy_aws_env(*also_unset: str) -> None:
    """Dummy credentials and region, no profile: nothing reaches AWS even by mistake.

    ``also_unset`` names further variables to remove besides :data:`UNSET_AWS_ENV`.
    """
    for name in (*UNSET_AWS_ENV, *also_unset):
        os.environ.pop(name, None)
    os.environ.update(DUMMY_AWS_ENV)


# ------------------------------------------------------------------------------------------------------------
# DynamoDB Local
# ------------------------------------------------------------------------------------------------------------


@contextmanager
def dynamodb_local() -> Iterator[tuple[str, str | None]]:
    """A new in-memory DynamoDB Local for the block: yields its endpoint and version, stops it on the way out.

    The endpoint is also exported as ``AWS_ENDPOINT_URL_DYNAMODB`` for the clients made without one.
    """
    server = DynamoDBLocal(die_with_parent=True)
    try:
        endpoint = server.start(None)
        os.environ[ENV_DYNAMODB_ENDPOINT] = endpoint
        yield endpoint, dynamodb_local_version(server)
    finally:
        server.stop()


def dynamodb_local_version(server: DynamoDBLocal) -> str | None:
    """The engine's version, from the ``Version:`` line it logs at start, else the jar's release notes."""
    for path in (server.log_path, _release_notes()):
        if path is None or not path.is_file():
            continue
        text = path.read_text(errors="replace")
        found = re.search(r"^Version:\s*(\S+)", text, re.MULTILINE) or re.search(r"\((\d+\.\d+\.\d+)\)", text)
        if found:
            return found.group(1)
    return None


def _release_notes() -> Path | None:
    try:
        return find_jar(install=False).parent / "README.txt"
    except LeanopsError:
        return None


# ------------------------------------------------------------------------------------------------------------
# Where and when the numbers were taken
# ------------------------------------------------------------------------------------------------------------


def load_average() -> list[float]:
    """The 1, 5 and 15 minute load averages."""
    return [round(load, 2) for load in os.getloadavg()]


def now_iso() -> str:
    """The current UTC time, ISO 8601 to the second."""
    return datetime.now(UTC).isoformat(timespec="seconds")


def machine_info(load_at_start: list[float], **versions: str) -> dict[str, Any]:
    """Where the numbers come from; the load averages show how busy the (shared) machine was.

    ``versions`` adds the versions of further libraries the benchmark depends on (``moto=...``).
    """
    return {
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "load_average_at_start": load_at_start,
        "load_average_at_end": load_average(),
        "boto3": boto3.__version__,
        "botocore": botocore.__version__,
        **versions,
    }


@dataclass(frozen=True)
class Stopwatch:
    """When a benchmark started and how busy the machine was then; :meth:`record` closes the account."""

    started_at: str
    started: float
    load_at_start: list[float]

    @classmethod
    def start(cls) -> Stopwatch:
        """Start timing now."""
        return cls(now_iso(), time.perf_counter(), load_average())

    def record(self, settings: DataclassInstance, notes: list[str], **versions: str) -> Results:
        """The keys every benchmark's results end with: machine, settings, start, finish, duration, notes."""
        return {
            "machine": machine_info(self.load_at_start, **versions),
            "settings": asdict(settings),
            "started_at": self.started_at,
            "finished_at": now_iso(),
            "duration_seconds": round(time.perf_counter() - self.started, 1),
            "notes": notes,
        }


# ------------------------------------------------------------------------------------------------------------
# Command line and results file
# ------------------------------------------------------------------------------------------------------------


def argument_parser(doc: str | None) -> argparse.ArgumentParser:
    """A parser described by the first line of a script's docstring."""
    return argparse.ArgumentParser(description=doc.splitlines()[0] if doc else None)


def output_help(default: Path, quick: Path | None = None) -> str:
    """Help of ``--output``: the default results file (and the one of ``--quick``), relative to the repo."""
    text = f"results file (default {default.relative_to(REPO_ROOT)}"
    if quick is not None:
        text += f", or {quick.relative_to(REPO_ROOT)} with --quick"
    return text + ")"


def results_path(name: str, quick: bool = False) -> Path:
    """Where a benchmark writes its results by default: ``bench/results/<name>[.quick].json``."""
    return RESULTS_DIR / (f"{name}.quick.json" if quick else f"{name}.json")


def parse_quick_args(
    argv: list[str] | None, doc: str | None, name: str, quick_help: str
) -> argparse.Namespace:
    """``--quick`` (a smoke run) and ``--output``; ``output`` comes back resolved to the file to write.

    The default output is :func:`results_path` of ``name``, the quick one with ``--quick``.
    """
    default_output, quick_output = results_path(name), results_path(name, quick=True)
    parser = argument_parser(doc)
    parser.add_argument("--quick", action="store_true", help=quick_help)
    parser.add_argument("--output", type=Path, help=output_help(default_output, quick_output))
    args = parser.parse_args(argv)
    args.output = args.output or (quick_output if args.quick else default_output)
    return args


def write_results(path: Path, results: Results, *, merge: bool = False) -> None:
    """Pretty JSON, keys sorted; with ``merge``, over the same keys of the file's results (two benchmarks
    sharing a results file keep each other's figures)."""
    if merge and path.exists():
        results = {**json.loads(path.read_text()), **results}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")


def run_and_report(
    script: str,
    output: Path,
    measure: Callable[[], Results],
    print_summary: Callable[[Results], None],
    *,
    errors: tuple[type[Exception], ...] = (LeanopsError, BenchError),
    exit_code: int = 1,
    one_line: bool = False,
    merge: bool = False,
) -> int:
    """Run ``measure``, write its results to ``output``, print the summary on stderr and ``output`` on stdout.

    When it raises one of ``errors``, nothing is written: ``<script>: <reason>`` goes to stderr (its white
    space folded onto one line with ``one_line``) and ``exit_code`` is returned; otherwise 0.
    """
    try:
        results = measure()
    except errors as exc:
        reason = " ".join(str(exc).split()) if one_line else str(exc)
        print(f"{script}: {reason}", file=sys.stderr)
        return exit_code
    write_results(output, results, merge=merge)
    print_summary(results)
    print(output)
    return 0
