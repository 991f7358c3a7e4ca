"""The packaged CloudFormation, built once per test session and shared by every module of tests/infra:
what `chalice package --merge-template infra/template.json` produces, with the state machine definitions
inlined by infra/package.py (as `make package` does). It needs the wheels of requirements.txt, nothing
from AWS."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import missing_prerequisite

REPO_ROOT = Path(__file__).resolve().parents[2]
STAGE = "dev"
MERGE_TEMPLATE = "infra/template.json"
# Kept out of the subprocesses: tests/conftest.py sets them for the unit tests.
PROJECT_VARIABLES = ("STAGE", "TABLE_PREFIX", "ADMIN_API_KEY", "ADMIN_API_KEY_PARAMETER", "PROVISION_STATE_MACHINE_ARN",
                     "HIBERNATE_STATE_MACHINE_ARN", "WAKE_STATE_MACHINE_ARN")


def tool(name: str) -> str:
    """A console script of the running interpreter's environment (the venv), else from PATH."""
    candidate = Path(sys.executable).parent / name
    if candidate.exists():
        return str(candidate)
    found = shutil.which(name)
    if found is None:
        missing_prerequisite(name, "pip install -r requirements-dev.txt (make test does)")
    return found


def offline_aws_env(tmp: Path) -> dict[str, str]:
    """The caller's environment without AWS settings or this project's, plus fake credentials."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_") and k not in PROJECT_VARIABLES}
    env.update(
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
        AWS_DEFAULT_REGION="us-east-1",
        AWS_CONFIG_FILE=str(tmp / "no-aws-config"),
        AWS_SHARED_CREDENTIALS_FILE=str(tmp / "no-aws-credentials"),
    )
    return env


@pytest.fixture(scope="session")
def package_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("chalice-package")
    out = tmp / "out"
    result = subprocess.run(
        [tool("chalice"), "package", "--stage", STAGE, "--merge-template", MERGE_TEMPLATE, str(out)],
        cwd=REPO_ROOT,
        env=offline_aws_env(tmp),
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert result.returncode == 0, f"chalice package failed:\n{result.stdout}\n{result.stderr}"
    inlined = subprocess.run(
        [sys.executable, "infra/package.py", str(out / "sam.json")],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=60,
    )
    assert inlined.returncode == 0, f"infra/package.py failed:\n{inlined.stdout}\n{inlined.stderr}"
    return out


@pytest.fixture(scope="session")
def template(package_dir: Path) -> dict[str, Any]:
    return json.loads((package_dir / "sam.json").read_text())
