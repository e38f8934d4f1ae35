"""Issue 13: `batch` and `backtest` decide with the model version live in the registry (the
record in the audit database, as the servers do), not the settings' default; --model-version
(batch) and --model (backtest) name another."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from decision_service.cli import main
from tests.conftest import APPLICATIONS, ROOT, cli_env


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    cli_env(tmp_path, monkeypatch)
    monkeypatch.delenv("DECISION_MODEL_VERSION", raising=False)
    source = tmp_path / "in.jsonl"
    source.write_bytes(b"".join(APPLICATIONS.read_bytes().splitlines(keepends=True)[:30]))
    return tmp_path


def _batch_versions(env: Path, *extra: str) -> set[str]:
    out = env / "out.jsonl"
    assert main(["batch", str(env / "in.jsonl"), "-o", str(out), "--summary", "json", *extra]) == 0
    return {json.loads(line)["trace"]["model"]["version"] for line in out.read_text().splitlines()}


def _backtest_candidate(env: Path, capsys: pytest.CaptureFixture[str], *extra: str) -> str:
    capsys.readouterr()
    argv = ["backtest", "--rules", str(ROOT / "rules"), "--applications", str(env / "in.jsonl")]
    assert main([*argv, "--format", "json", *extra]) == 0
    return json.loads(capsys.readouterr().out)["candidate"]["model_version"]


def test_batch_and_backtest_follow_the_registry_unless_told(
    env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # No database yet: the settings' default serves, and reading it creates no file.
    assert _batch_versions(env) == {"1.0.0"}
    assert not (env / "var" / "audit.db").exists()
    assert main(["models", "promote", "1.1.0", "--actor", "test", "--format", "json"]) == 0
    assert _batch_versions(env) == {"1.1.0"}  # the live version, not DEFAULT's 1.0.0
    assert _batch_versions(env, "--model-version", "1.0.0") == {"1.0.0"}
    assert _backtest_candidate(env, capsys) == "1.1.0"
    assert _backtest_candidate(env, capsys, "--model", "1.0.0") == "1.0.0"
    assert main(["models", "rollback", "--actor", "test", "--format", "json"]) == 0
    assert _batch_versions(env) == {"1.0.0"}
