"""``python -m leanopsctl``: the same CLI as the ``leanops`` command."""

from __future__ import annotations

from leanopsctl.cli import main

if __name__ == "__main__":
    main(prog_name="leanops")
