"""Test hooks for the local stack's Lambda workers. Python imports this module at start-up in every process
whose PYTHONPATH names this folder (tests/integration/conftest.py puts it there). In a Lambda worker (it has
``AWS_LAMBDA_FUNCTION_NAME``) of a test that arms ``LEANOPS_TEST_ARM``, it installs the hooks that must act in
another function's process than the processor's (tests/support/processors.py)."""

import os

if os.environ.get("AWS_LAMBDA_FUNCTION_NAME") and os.environ.get("LEANOPS_TEST_ARM"):
    from tests.support.processors import install_commit_hooks

    install_commit_hooks()
