"""Helpers of the CLI-level tests: run `leanops` processes and read what a topic committed."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

from leanopsctl.local.stack import FUNCTIONS_LOG, LOG_DIR


def finish(process: subprocess.Popen[str], timeout: float = 180) -> tuple[int, str, str]:
    out, err = process.communicate(timeout=timeout)
    return process.returncode, out, err


def output_report(leanops, topic: str = "vt") -> dict:
    """`leanops output TOPIC --json`: the committed output, as readers list it."""
    code, out, err = finish(leanops("output", topic, "--json"))
    assert code == 0, err
    return json.loads(out)


def committed_events(root: Path, leanops, topic: str = "vt") -> list[str]:
    """The event ids in the committed output (the objects commits name), sorted; duplicates kept."""
    report = output_report(leanops, topic)
    return sorted(
        json.loads(line)["event_id"]
        for batch in report["batches"]
        if batch.get("object")
        for line in (root / "out" / batch["object"]).read_text().splitlines()
    )


def sink_objects(root: Path) -> list[str]:
    """Every visible object in the sink, committed or not."""
    return sorted(p.name for p in (root / "out").glob("*") if p.is_file() and not p.name.startswith("_"))


def wait_for_log(home: Path, text: str, process: subprocess.Popen[str], timeout: float = 120) -> str:
    """The first line of the local stack's function log containing ``text`` (what a processor logged, from
    its isolated child too), waiting while ``process`` runs."""
    log, deadline = home / LOG_DIR / FUNCTIONS_LOG, time.monotonic() + timeout
    while True:
        if log.exists():
            with log.open(errors="replace") as lines:
                found = next((line for line in lines if text in line), None)
            if found is not None:
                return found
        assert process.poll() is None, f"the run ended before {text!r}: {process.communicate()[1][-2000:]}"
        assert time.monotonic() < deadline, f"{text!r} never appeared in {log}"
        time.sleep(0.05)
