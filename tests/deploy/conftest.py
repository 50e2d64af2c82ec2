"""Fixtures of the deployment tests: the SAM template as written, and as SAM transforms it (offline).

The transform runs in the deploy tools' venv (``.venv/deploy``, made by ``make deps``): aws-sam-cli's
``samtranslator`` cannot live in the project's venv (its pins conflict with the project's).
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.workflows.cfn_yaml import load_template

REPO = Path(__file__).resolve().parents[2]
TEMPLATE_PATH = REPO / "template.yaml"
TOPICS_PATH = REPO / "topics.yaml"
EVENTS = REPO / "tests" / "events"
DEPLOY_PYTHON = REPO / ".venv" / "deploy" / "bin" / "python"
TRANSFORM_SCRIPT = REPO / "control" / "leanopsctl" / "deploy" / "transform.py"


def deploy_python() -> Path:
    if not DEPLOY_PYTHON.exists():
        pytest.fail(f"{DEPLOY_PYTHON.relative_to(REPO)} is missing: run `make deps`")
    return DEPLOY_PYTHON


def transform(template_path: Path, **parameters: str) -> dict[str, Any]:
    """The CloudFormation template SAM makes of ``template_path`` (offline, no credentials)."""
    result = subprocess.run(
        [
            str(deploy_python()),
            str(TRANSFORM_SCRIPT),
            str(template_path),
            *(f"{k}={v}" for k, v in parameters.items()),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    transformed: dict[str, Any] = json.loads(result.stdout)
    return transformed


@pytest.fixture(scope="session")
def template() -> dict[str, Any]:
    return load_template(TEMPLATE_PATH)


@pytest.fixture(scope="session")
def transformed() -> dict[str, Any]:
    return transform(TEMPLATE_PATH)
