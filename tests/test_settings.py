"""One settings object: defaults < TOML file < environment < explicit overrides."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest

from decision_service.settings import Settings, SettingsError, load_settings, unknown_environment


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


def test_a_misspelt_toml_key_names_the_closest_setting(tmp_path: Path) -> None:
    config = tmp_path / "decision.toml"
    config.write_text('rules_engin = "compiled"\n')
    with pytest.raises(SettingsError, match=r"unknown setting 'rules_engin'") as caught:
        load_settings(config, environ={})
    assert "did you mean 'rules_engine'?" in caught.value.message
    assert caught.value.hint.startswith("valid settings: models_dir, model_name")


def test_a_bad_value_says_where_it_came_from(tmp_path: Path) -> None:
    config = tmp_path / "decision.toml"
    config.write_text("workers = 0\n")
    with pytest.raises(SettingsError) as caught:
        load_settings(config, environ={})
    assert caught.value.message.startswith(f"setting workers = 0 (from config file {config})")
    with pytest.raises(SettingsError, match=r"from DECISION_REQUEST_BODY_TIMEOUT"):
        load_settings(environ={"DECISION_REQUEST_BODY_TIMEOUT": "soon"})
    with pytest.raises(SettingsError, match=r"config file .* not found"):
        load_settings(tmp_path / "missing.toml", environ={})
    config.write_text("workers = \n")
    with pytest.raises(SettingsError, match="invalid TOML"):
        load_settings(config, environ={})


def test_unknown_decision_variables_are_named_with_the_closest_setting() -> None:
    env = {
        "DECISION_WORKRS": "2",
        "DECISION_CONFIG": "x.toml",  # known, not a field
        "DECISION_PORT": "9000",
        "DECISION_XYZZY": "1",
        "DATABASE_URL": "sqlite://",
    }
    assert unknown_environment(env) == [
        "warning: unknown environment variable DECISION_WORKRS ignored "
        "(did you mean DECISION_WORKERS?)",
        "warning: unknown environment variable DECISION_XYZZY ignored",
    ]


def test_request_limits_have_sane_defaults() -> None:
    s = load_settings(environ={})
    assert (s.request_header_timeout, s.request_body_timeout, s.keep_alive_timeout) == (10, 30, 5)
    assert s.max_concurrency == 1000 and s.db_auto_upgrade is False
