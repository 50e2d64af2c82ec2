"""leanopsctl: the operator's side of leanops, never packaged into the Lambda functions.

The ``leanops`` command (``cli``), the local stack (``local``), the deploy helpers (``deploy``) and the cost
model (``cost``, ``prices``). The functions' code is the ``leanops`` package (``functions/``, the CodeUri);
this package imports it, never the other way round (docs/design.md §4).
"""

from leanops import __version__

__all__ = ["__version__"]
