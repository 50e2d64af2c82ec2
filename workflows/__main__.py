"""Render every state machine to ``statemachines/<name>.asl.json``: ``python -m workflows [--check]``.

Without options, writes the files whose text changed. With ``--check``, writes nothing and exits 1 listing
the files that would change (or are missing), e.g. to catch a definition edited without re-rendering.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from workflows import topic_run

#: Every state machine: the file name stem under statemachines/ and the function that renders its text.
STATE_MACHINES: dict[str, Callable[[], str]] = {
    topic_run.NAME: topic_run.render,
}

#: statemachines/ beside workflows/, whatever the current directory.
OUTPUT_DIR = Path(__file__).resolve().parent.parent / "statemachines"


def main(argv: Sequence[str] | None = None) -> int:
    """Render (or with ``--check`` compare) every state machine; return the process exit code."""
    parser = argparse.ArgumentParser(
        prog="python -m workflows", description="Render every state machine to statemachines/<name>.asl.json."
    )
    parser.add_argument(
        "--check", action="store_true", help="write nothing; exit 1 listing the files that would change"
    )
    args = parser.parse_args(argv)

    stale: list[Path] = []
    for name, render in STATE_MACHINES.items():
        path = OUTPUT_DIR / f"{name}.asl.json"
        text = render()
        current = path.read_text(encoding="utf-8") if path.exists() else None
        if current == text:
            continue
        stale.append(path)
        if not args.check:
            path.write_text(text, encoding="utf-8", newline="\n")
            print(f"wrote {path.relative_to(OUTPUT_DIR.parent)}", file=sys.stderr)

    if args.check and stale:
        print("out of date, run `make asl`:", file=sys.stderr)
        for path in stale:
            print(f"  {path.relative_to(OUTPUT_DIR.parent)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
