"""Registry fixtures: a models/ directory of the real versions, on SQLite and PostgreSQL."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.audit.conftest import database, postgres_available  # noqa: F401
from tests.conftest import ROOT


@pytest.fixture
def models_dir(tmp_path: Path) -> Path:
    """models/ with the committed versions (linked, never modified) and the real policy."""
    out = tmp_path / "models"
    (out / "underwriting").mkdir(parents=True)
    for version in ("1.0.0", "1.1.0"):
        (out / "underwriting" / version).symlink_to(ROOT / "models" / "underwriting" / version)
    shutil.copy(ROOT / "models" / "underwriting" / "DEFAULT", out / "underwriting" / "DEFAULT")
    shutil.copy(ROOT / "models" / "promotion.yaml", out / "promotion.yaml")
    return out


def add_version(models_dir: Path, version: str, source: str = "1.1.0") -> Path:
    """A copy of a committed version under a new name, for tests that alter it."""
    target = models_dir / "underwriting" / version
    shutil.copytree(ROOT / "models" / "underwriting" / source, target)
    return target
