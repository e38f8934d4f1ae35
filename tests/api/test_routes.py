"""The Litestar /decide route (what /schema documents and what in-process clients use) answers
exactly like the ASGI fast path that `serve` runs: both call the same Decider."""

from __future__ import annotations

from pathlib import Path

import msgspec
from litestar.testing import TestClient

from decision_service.api.app import create_app
from decision_service.settings import load_settings
from tests.conftest import ROOT


def test_litestar_route_decides_records_and_rejects(tmp_path: Path, application_lines) -> None:
    settings = load_settings(
        environ={},
        database_url=f"sqlite:///{tmp_path / 'd.db'}",
        rules_watch=False,
        models_dir=ROOT / "models",
        rules_dir=ROOT / "rules",
        admin_key_file=tmp_path / "admin.key",
    )
    app = create_app(settings)
    key = (tmp_path / "admin.key").read_text().strip()
    headers = {"authorization": f"Bearer {key}", "content-type": "application/json"}
    with TestClient(app) as client:
        client.headers.update(headers)
        r = client.post("/decide?explain=1", content=application_lines[1])
        assert r.status_code == 200
        decision = r.json()
        assert any(x["source"] == "model" for x in decision["reasons"])
        stored = client.get(f"/decisions/{decision['decision_id']}").json()
        assert stored["request"] == msgspec.json.decode(application_lines[1])
        bad = client.post("/decide", content=b'{"application_id": "A", "age": "x"}')
        assert bad.status_code == 422
        assert "$.age" in {e["field"] for e in bad.json()["errors"]}
