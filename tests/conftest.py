"""Shared fixtures: the committed model, its example applications."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest

from decision_service.scoring import Scorer, application_type

ROOT = Path(__file__).resolve().parent.parent
MODEL_DIR = ROOT / "models" / "underwriting" / "1.0.0"
APPLICATIONS = ROOT / "benchmarks" / "data" / "applications.jsonl"


@pytest.fixture(scope="session")
def scorer() -> Scorer:
    return Scorer.load(MODEL_DIR)


@pytest.fixture(scope="session")
def application_lines() -> list[bytes]:
    return APPLICATIONS.read_bytes().splitlines()


@pytest.fixture(scope="session")
def applications(scorer: Scorer, application_lines: list[bytes]) -> list[msgspec.Struct]:
    decoder = msgspec.json.Decoder(application_type(scorer.card))
    return [decoder.decode(line) for line in application_lines]


REDIS_URL = "redis://127.0.0.1:6379/0"


def require_redis() -> None:
    """Skip without the Redis server on loopback; in CI (CI=true, set by .ci/run) fail instead."""
    import os

    import redis

    try:
        redis.Redis.from_url(REDIS_URL).ping()
    except redis.RedisError as exc:
        message = f"Redis not reachable at {REDIS_URL}: {exc}"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)


def cli_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The CLI on the repo's models/ and rules/, with its database and audit files in tmp_path."""
    monkeypatch.setenv("DECISION_MODELS_DIR", str(ROOT / "models"))
    monkeypatch.setenv("DECISION_RULES_DIR", str(ROOT / "rules"))
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path}/var/audit.db")
    monkeypatch.setenv("DECISION_AUDIT_KEY_FILE", str(tmp_path / "var" / "audit.key"))
    monkeypatch.setenv("DECISION_AUDIT_CHECKPOINT_FILE", str(tmp_path / "var" / "cp.jsonl"))
    monkeypatch.delenv("DECISION_CONFIG", raising=False)


def pytest_sessionstart(session: pytest.Session) -> None:
    """The servers and commands the tests start read bytecode (benchmarks.harness.common)."""
    from benchmarks.harness.common import compile_bytecode

    compile_bytecode()
