"""The real server on 1.1.0: loan systems send the same body as for 1.0.0 (marital included),
the decision names 1.1.0, and it replays identically."""

from __future__ import annotations

import json
from pathlib import Path

from tests.conftest import APPLICATIONS
from tests.e2e.conftest import start_server


def test_1_1_0_serves_the_same_request_contract_and_replays(tmp_path: Path) -> None:
    server = start_server(
        tmp_path,
        f"sqlite:///{tmp_path / 'decisions.db'}",
        extra_env={"DECISION_MODEL_VERSION": "1.1.0"},
    )
    try:
        with server.client() as client:
            body = json.loads(APPLICATIONS.read_bytes().splitlines()[0])
            assert "marital" in body
            decided = client.post("/decide", json=body)
            assert decided.status_code == 200, decided.text
            decision = decided.json()
            assert decision["trace"]["model"]["version"] == "1.1.0"
            assert not {"MDL-MARITAL", "MDL-AGE"} & {r["code"] for r in decision["reasons"]}
            other = client.post("/decide", json=body | {"marital": "single", "age": 70}).json()
            assert other["pd"] == decision["pd"]  # neither field reaches the model
            bad = client.post("/decide", json=body | {"marital": "complicated"})
            assert bad.status_code == 422 and bad.json()["errors"][0]["field"] == "$.marital"
            replay = client.post(f"/decisions/{decision['decision_id']}/replay").json()
            assert replay["identical"] is True and replay["model_version"] == "1.1.0"
    finally:
        server.stop()
