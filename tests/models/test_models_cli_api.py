"""`decision-service models …` and the GET /models, POST /models/active handlers, on a real
database (the handlers on a bare Litestar app; tests/e2e/test_models_registry.py has them in the
real server); every switch is also in change_log with its actor."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import sqlalchemy as sa
from litestar import Litestar
from litestar.testing import TestClient

from decision_service.api.models import model_handlers
from decision_service.audit.tables import change_log_table
from decision_service.cli import main
from decision_service.scoring.registry import ModelRegistry
from decision_service.service import open_store
from decision_service.settings import load_settings


@pytest.fixture
def env(models_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    url = f"sqlite:///{tmp_path / 'var' / 'decisions.db'}"
    monkeypatch.setenv("DATABASE_URL", url)
    monkeypatch.setenv("DECISION_MODELS_DIR", str(models_dir))
    monkeypatch.setenv("DECISION_AUDIT_KEY_FILE", str(tmp_path / "var" / "audit.key"))
    monkeypatch.setenv("DECISION_AUDIT_CHECKPOINT_FILE", str(tmp_path / "var" / "cp.jsonl"))
    return url


def _changes(url: str) -> list[tuple[str, str, str, str]]:
    """change_log's model rows: (actor, action, before, after)."""
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            t = change_log_table
            rows = conn.execute(
                sa.select(t.c.actor, t.c.action, t.c.before, t.c.after)
                .where(t.c.action.like("model.%"))
                .order_by(t.c.seq)
            ).all()
    finally:
        engine.dispose()
    return [(a, act, json.loads(b)["version"], json.loads(af)["version"]) for a, act, b, af in rows]


def _json(capsys: pytest.CaptureFixture[str]) -> dict:
    return json.loads(capsys.readouterr().out)


def test_models_cli_lists_promotes_refuses_rolls_back_and_retires(
    env: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["models", "list", "--format", "json"]) == 0
    listed = _json(capsys)
    assert listed["live"] == "1.0.0" and listed["default"] == "1.0.0" and listed["events"] == []
    gates = {v["version"]: v["gate"]["passed"] for v in listed["versions"]}
    assert gates == {"1.0.0": False, "1.1.0": True}

    assert main(["models", "promote", "1.0.0", "--format", "json"]) == 1  # gate refuses
    refused = _json(capsys)
    assert refused["status"] == 422 and "prohibited_features" in refused["error"]
    failed = [c["name"] for c in refused["gate"]["checks"] if not c["ok"]]
    assert failed == ["prohibited_features"]

    args = ["models", "promote", "1.1.0", "--actor", "alice", "--reason", "FL-7"]
    assert main([*args, "--format", "json"]) == 0
    promoted = _json(capsys)
    assert promoted["live"] == "1.1.0" and promoted["event"]["actor"] == "alice"

    assert main(["models", "rollback", "--actor", "bob"]) == 0
    assert "rollback: 1.1.0 → 1.0.0 by bob" in capsys.readouterr().out
    assert main(["models", "retire", "1.1.0", "--actor", "carol"]) == 0
    assert "retired 1.1.0 by carol" in capsys.readouterr().out
    assert main(["models", "promote", "1.1.0"]) == 1
    assert "retired and never serves" in capsys.readouterr().out

    assert main(["models", "list"]) == 0  # the rich table and the log
    table = capsys.readouterr().out
    assert "live 1.0.0" in table and "retired" in table and "model log" in table
    assert _changes(env) == [
        ("alice", "model.promote", "1.0.0", "1.1.0"),
        ("bob", "model.rollback", "1.1.0", "1.0.0"),
        ("carol", "model.retire", "1.1.0", "1.1.0"),  # retired; 1.0.0 stays live
    ]


def test_models_endpoints(models_dir: Path, env: str) -> None:
    registry = ModelRegistry(models_dir, "underwriting", "1.0.0", env)
    store = open_store(load_settings())
    handlers = model_handlers(registry, store)
    assert {h.handler_name: h.opt["roles"] for h in handlers} == {
        "list_models": ["analyst", "auditor"],  # and admin, who may call every route
        "set_active": ["admin"],
    }
    try:
        with TestClient(Litestar(route_handlers=handlers)) as client:
            listed = client.get("/models").json()
            assert listed["live"] == "1.0.0"
            refused = client.post("/models/active", json={"version": "1.0.0"})
            assert refused.status_code == 422
            assert "prohibited_features" in refused.json()["detail"]
            assert refused.json()["live"] == "1.0.0"
            assert client.post("/models/active", json={"version": "9.9.9"}).status_code == 404
            assert client.post("/models/active", json={"action": "promote"}).status_code == 400
            assert client.post("/models/active", content=b"{nope").status_code == 400
            bad = client.post("/models/active", json={"version": "1.1.0", "force": True})
            assert bad.status_code == 400  # unknown fields are refused, not ignored
            ok = client.post("/models/active", json={"version": "1.1.0", "reason": "FL-7"})
            assert ok.status_code == 200 and ok.json()["live"] == "1.1.0"
            assert ok.json()["event"]["actor"] == "anonymous"  # no auth on this bare app
            assert ok.json()["change_log"] is True
            again = client.post("/models/active", json={"version": "1.1.0"})
            assert again.status_code == 409
            back = client.post("/models/active", json={"action": "rollback"})
            assert back.status_code == 200 and back.json()["live"] == "1.0.0"
            assert [e["action"] for e in client.get("/models").json()["events"]] == [
                "promote",
                "rollback",
            ]
        assert _changes(env) == [
            ("anonymous", "model.promote", "1.0.0", "1.1.0"),
            ("anonymous", "model.rollback", "1.1.0", "1.0.0"),
        ]
    finally:
        registry.close()
        store.engine.dispose()
        store.reader.dispose()
