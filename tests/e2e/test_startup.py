"""Start-up mistakes, as operators make them: each is ONE line saying what is wrong and what
exists (plus a hint) and a non-zero exit, never a traceback; `python -m decision_service serve`
run for real in a subprocess."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import sqlalchemy as sa

from tests.audit.conftest import PG_URL
from tests.audit.test_migrations import make_release_database
from tests.conftest import ROOT
from tests.e2e.conftest import free_port, start_server


def workdir(tmp_path: Path) -> Path:
    shutil.copytree(ROOT / "rules", tmp_path / "rules")
    (tmp_path / "models").symlink_to(ROOT / "models")
    return tmp_path


def serve(cwd: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("DECISION_")}
    base |= {
        "PYTHONPATH": str(ROOT),
        "DECISION_PORT": str(free_port()),
        "DECISION_RULES_WATCH": "false",
        "DATABASE_URL": f"sqlite:///{cwd}/var/decisions.db",
    }
    return subprocess.run(
        [sys.executable, "-m", "decision_service", *args, "serve"],
        cwd=cwd,
        env=base | env,
        capture_output=True,
        text=True,
        timeout=90,  # a mistake is found in seconds; a server that starts would hang
    )


def one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    """The error line; asserts the exit code and that nothing else was printed."""
    assert result.returncode == 2, (result.returncode, result.stderr[-2000:])
    assert "Traceback" not in result.stderr and result.stdout == ""
    lines = [ln for ln in result.stderr.splitlines() if "warning:" not in ln]
    assert len(lines) == 2, lines  # the error and its hint
    assert lines[0].startswith("decision-service: error: ") and lines[1].startswith("  hint: ")
    return lines[0].removeprefix("decision-service: error: ") + "\n" + lines[1]


def test_wrong_model_version_lists_the_versions_on_disk(tmp_path: Path) -> None:
    message = one_line_error(serve(workdir(tmp_path), {"DECISION_MODEL_VERSION": "9.9.9"}))
    assert message.startswith(
        "model version '9.9.9' not found under models/underwriting (versions on disk: 1.0.0, 1.1.0)"
    )
    assert "DECISION_MODEL_VERSION" in message


def test_misspelt_toml_key_names_the_closest_setting(tmp_path: Path) -> None:
    cwd = workdir(tmp_path)
    (cwd / "decision.toml").write_text('modle_version = "1.0.0"\nworkers = 1\n')
    message = one_line_error(serve(cwd, {}, "--config", "decision.toml"))
    assert "unknown setting 'modle_version' (did you mean 'model_version'?)" in message
    assert "valid settings: models_dir, model_name, model_version" in message


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"DECISION_WORKERS": "many"}, "setting workers = 'many' (from DECISION_WORKERS)"),
        ({"DECISION_RULES_ENGINE": "drools"}, "rules_engine is one of: durable_rules, compiled"),
        ({"DECISION_REQUEST_HEADER_TIMEOUT": "0"}, "request_header_timeout = '0'"),
        ({"DECISION_RULES_DIR": "no/such/rules"}, "rules directory no/such/rules not found"),
        ({"DATABASE_URL": "mysql://x/y"}, "database mysql://x/y:"),
        (
            {"DATABASE_URL": "postgresql+psycopg://postgres@127.0.0.1:1/x"},
            "server not reachable",
        ),
    ],
)
def test_bad_settings_are_one_line(tmp_path: Path, env: dict[str, str], expected: str) -> None:
    assert expected in one_line_error(serve(workdir(tmp_path), env))


def test_bad_value_in_the_toml_file_names_the_file(tmp_path: Path) -> None:
    cwd = workdir(tmp_path)
    (cwd / "decision.toml").write_text('explain = "sometimes"\n')
    message = one_line_error(serve(cwd, {"DECISION_CONFIG": "decision.toml"}))
    assert "setting explain = 'sometimes' (from config file decision.toml)" in message
    assert "explain is one of: adverse, always" in message


def test_unreadable_and_invalid_rule_files(tmp_path: Path) -> None:
    cwd = workdir(tmp_path)
    (cwd / "rules" / "gone.yaml").symlink_to(cwd / "nowhere.yaml")
    assert "cannot be read" in one_line_error(serve(cwd, {}))
    (cwd / "rules" / "gone.yaml").unlink()
    rules = cwd / "rules" / "risk_appetite.yaml"
    rules.write_text(rules.read_text().replace("rules:", "rules: [", 1))
    assert one_line_error(serve(cwd, {})).startswith("rules rejected: ")


def test_unknown_environment_variables_are_warned_about(tmp_path: Path) -> None:
    result = serve(workdir(tmp_path), {"DECISION_WORKRS": "2", "DECISION_MODEL_VERSION": "0.0.1"})
    assert (
        "decision-service: warning: unknown environment variable DECISION_WORKRS ignored "
        "(did you mean DECISION_WORKERS?)"
    ) in result.stderr.splitlines()
    assert "model version '0.0.1' not found" in one_line_error(result)


def test_port_in_use(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        message = one_line_error(serve(workdir(tmp_path), {"DECISION_PORT": str(port)}))
    assert f"cannot listen on 127.0.0.1:{port}" in message


@pytest.mark.postgres
def test_missing_postgres_database(tmp_path: Path, postgres_available: None) -> None:
    name = f"missing_{uuid.uuid4().hex[:8]}"
    url = sa.make_url(PG_URL).set(database=name).render_as_string(hide_password=False)
    message = one_line_error(serve(workdir(tmp_path), {"DATABASE_URL": url}))
    assert f"database '{name}' does not exist" in message and f"createdb {name}" in message


def test_database_behind_the_code_is_refused_then_upgraded(tmp_path: Path) -> None:
    cwd = workdir(tmp_path)
    url = f"sqlite:///{cwd}/var/decisions.db"
    (cwd / "var").mkdir()
    make_release_database(url)
    message = one_line_error(serve(cwd, {"DATABASE_URL": url}))
    assert "behind the code's schema" in message and "run `decision-service db upgrade`" in message
    assert "DECISION_DB_AUTO_UPGRADE=true" in message

    server = start_server(cwd, url, extra_env={"DECISION_DB_AUTO_UPGRADE": "true"})
    try:
        with server.client() as c:
            line = (ROOT / "benchmarks/data/applications.jsonl").read_bytes().splitlines()[0]
            assert c.post("/decide", content=line).status_code == 200
        verified = server.cli("audit", "verify")
        assert verified.returncode == 0, verified.stdout + verified.stderr
        assert "intact: 61 records, 3 chains" in verified.stdout
        assert "upgraded schema" in server.log.read_text()
    finally:
        server.stop()


@pytest.mark.postgres
def test_read_only_postgres_database_is_refused(tmp_path: Path, postgres_available: None) -> None:
    from tests.audit.conftest import admin_execute

    name = f"ro_start_{uuid.uuid4().hex[:8]}"
    admin_execute(f"CREATE DATABASE {name}")
    url = sa.make_url(PG_URL).set(database=name).render_as_string(hide_password=False)
    try:
        upgraded = subprocess.run(
            [sys.executable, "-m", "decision_service", "db", "upgrade"],
            cwd=ROOT,
            env={k: v for k, v in os.environ.items() if not k.startswith("DECISION_")}
            | {"DATABASE_URL": url, "PYTHONPATH": str(ROOT)},
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert upgraded.returncode == 0, upgraded.stderr
        admin_execute(f"ALTER DATABASE {name} SET default_transaction_read_only = on")
        message = one_line_error(serve(workdir(tmp_path), {"DATABASE_URL": url}))
        assert message.startswith(f"database postgresql+psycopg://postgres@127.0.0.1:5432/{name}")
        assert "is read-only" in message
    finally:
        admin_execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
