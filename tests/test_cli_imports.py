"""The CLI starts light: `--help` and the commands that never score import neither LightGBM,
pandas nor Litestar (deterministic: which modules are loaded, in a fresh interpreter; the CPU
seconds are measured in benchmarks/cli_bench.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

HEAVY = ("lightgbm", "pandas", "litestar", "pyarrow", "scipy", "uvicorn", "opentelemetry.sdk")
# What a database command may load, beyond the stdlib and msgspec: --help needs none of it.
DATABASE = ("sqlalchemy", "sqlmodel", "alembic")

PROBE = """
import json, sys
from decision_service.cli import main
try:
    code = main(sys.argv[1:])
except SystemExit as exit_:
    code = exit_.code
print(json.dumps({"code": code, "modules": sorted(sys.modules)}))
"""


def _loaded(tmp_path: Path, *argv: str) -> tuple[int, set[str]]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DECISION_")}
    env |= {
        "DECISION_MODELS_DIR": str(ROOT / "models"),
        "DECISION_RULES_DIR": str(ROOT / "rules"),
        "DATABASE_URL": f"sqlite:///{tmp_path}/audit.db",
        "DECISION_AUDIT_KEY_FILE": str(tmp_path / "audit.key"),
        "DECISION_AUDIT_CHECKPOINT_FILE": str(tmp_path / "checkpoints.jsonl"),
    }
    done = subprocess.run(
        [sys.executable, "-c", PROBE, *argv],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.stdout, done.stderr
    result = json.loads(done.stdout.splitlines()[-1])
    return result["code"], set(result["modules"])


def _heavy(modules: set[str], names: tuple[str, ...]) -> set[str]:
    return {m for m in modules if m.split(".")[0] in names or m in names}


def test_help_loads_nothing_heavy(tmp_path: Path) -> None:
    code, modules = _loaded(tmp_path, "--help")
    assert code == 0
    assert not _heavy(modules, HEAVY + DATABASE + ("rich", "yaml", "structlog"))
    assert "decision_service.cli.parser_data" in modules  # the whole tree was built


@pytest.mark.parametrize(
    "argv",
    [
        ["audit", "export", "--help"],
        ["db", "history", "--format", "json"],
        ["db", "current"],
        ["keys", "list", "--format", "json"],
        ["audit", "verify", "--format", "json"],
        ["audit", "export", "--format", "csv"],
        ["models", "list", "--format", "json"],
        ["rules", "check"],
        ["drift", "--format", "json"],
        ["challengers", "report", "--format", "json"],
    ],
    ids=" ".join,
)
def test_commands_that_never_score_load_no_model_or_web_stack(
    tmp_path: Path, argv: list[str]
) -> None:
    code, modules = _loaded(tmp_path, *argv)
    assert code in (0, 1)  # challengers report: 1 when nothing was recorded
    assert not _heavy(modules, HEAVY), argv
    if argv[-1] == "--help" or argv[0] == "rules":
        assert not _heavy(modules, DATABASE), argv
