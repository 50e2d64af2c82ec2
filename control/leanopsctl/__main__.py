"""``python -m leanops``: the same CLI as the ``leanops`` command."""

from __future__ import annotations

from leanops.cli import main

if __name__ == "__main__":
    main(prog_name="leanops")
