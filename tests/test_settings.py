"""One settings object: defaults < TOML file < environment < explicit overrides."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest

from decision_service.settings import Settings, load_settings


def test_defaults_run_on_a_fresh_clone() -> None:
    s = load_settings(environ={})
    assert s.database_url == "sqlite:///var/decisions.db"
    assert s.rules_dir == Path("rules") and s.rules_engine == "durable_rules"
    assert s.model_dir == Path("models/underwriting/1.0.0")  # "latest" resolves


def test_toml_then_environment_then_overrides(tmp_path: Path) -> None:
    config = tmp_path / "decision.toml"
    config.write_text('rules_dir = "/srv/rules"\nworkers = 3\nrules_engine = "compiled"\n')
    env = {
        "DECISION_CONFIG": str(config),
        "DECISION_WORKERS": "4",
        "DECISION_MODELS_DIR": "/srv/models",
        "DECISION_RULES_WATCH": "false",
        "DATABASE_URL": "postgresql+psycopg://u@db/decisions",
    }
    s = load_settings(environ=env, port=9000)
    assert s.rules_dir == Path("/srv/rules")  # TOML
    assert s.rules_engine == "compiled"  # TOML
    assert s.workers == 4  # environment beats TOML
    assert s.models_dir == Path("/srv/models") and s.rules_watch is False
    assert s.database_url == "postgresql+psycopg://u@db/decisions"
    assert s.port == 9000  # override beats all
    assert isinstance(s, Settings)


def test_a_bad_value_is_an_error_naming_the_setting() -> None:
    with pytest.raises(msgspec.ValidationError, match="rules_engine"):
        load_settings(environ={"DECISION_RULES_ENGINE": "drools"})
    with pytest.raises(msgspec.ValidationError, match="workers"):
        load_settings(environ={"DECISION_WORKERS": "many"})
