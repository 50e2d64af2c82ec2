"""Installs the chaos harness's sink trace (tests/support/chaos_processors.py) in every Python process whose
environment names a trace folder: bench/chaos.py puts this folder on ``PYTHONPATH`` for its ``leanops``
commands, which the local stack and its workers inherit, so deletes by the advance task's workers and by
``leanops gc`` are traced as well as the process task's writes. Observes only; without
``$LEANOPS_CHAOS_TRACE_DIR`` it does nothing."""

import os

if os.environ.get("LEANOPS_CHAOS_TRACE_DIR") and os.environ.get("LEANOPS_CHAOS_TRACE_ROOT"):
    try:
        import importlib.util

        _support = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        _path = os.path.join(_support, "chaos_processors.py")
        _spec = importlib.util.spec_from_file_location("_leanops_chaos_trace", _path)
        if _spec is not None and _spec.loader is not None:
            _spec.loader.exec_module(importlib.util.module_from_spec(_spec))
    except Exception:  # an observer must never break the process it observes
        pass
