"""An analyst changes the risk appetite while the service runs: a broken file is refused and the
old rules keep serving; a good one is swapped in, recorded on every decision, and decisions made
under the old version still replay to the same result."""

from __future__ import annotations

import json
import time

import pytest

from tests.e2e.conftest import Server, start_server

PRIME = {
    "application_id": "APP-RELOAD-1",
    "age": 35,
    "seniority": 8,
    "home": "owner",
    "marital": "married",
    "records": False,
    "job": "fixed",
    "term": 36,
    "expenses": 60,
    "income": 200,
    "assets": 5000,
    "debt": 0,
    "amount": 1000,
    "price": 1500,
}


@pytest.fixture(scope="module")
def sqlite_server(tmp_path_factory) -> Server:
    tmp = tmp_path_factory.mktemp("reload")
    srv = start_server(tmp, f"sqlite:///{tmp / 'decisions.db'}")
    yield srv
    srv.stop()


def test_analyst_reload_cycle(sqlite_server: Server) -> None:
    srv = sqlite_server
    policy = srv.rules_dir / "risk_appetite.yaml"
    original = policy.read_text()
    with srv.client() as c:
        before = c.post("/decide", json=PRIME).json()
        assert before["outcome"] == "approve"
        old = c.get("/rules").json()

        # A typo in a field name: refused with file, line, column and rule; old rules serve on.
        policy.write_text(original.replace("when: amount > price", "when: amount > prize"))
        r = c.post("/rules/reload")
        assert r.status_code == 422
        assert r.headers["content-type"] == "application/problem+json"
        error = "\n".join(f"{e['field']}: {e['message']}" for e in r.json()["errors"])
        assert "risk_appetite.yaml:" in error and "KO-AMOUNT-PRICE" in error
        assert "prize" in error
        assert c.get("/rules").json()["sha256"] == old["sha256"]
        assert (
            c.post("/decide", json=PRIME | {"application_id": "APP-RELOAD-2"}).json()["trace"][
                "ruleset"
            ]["sha256"]
            == old["sha256"]
        )

        # A real change: refer every freelancer; bump the version. Tests in the file still pass.
        policy.write_text(
            original.replace("version: 2026.11.1", "version: 2026.11.2").replace(
                'when: job == "freelance" and seniority < 2', 'when: job == "freelance"'
            )
        )
        r = c.post("/rules/reload")
        assert r.status_code == 200, r.text
        assert r.json()["version"] == "2026.11.2"
        after = c.post(
            "/decide", json=PRIME | {"application_id": "APP-RELOAD-3", "job": "freelance"}
        ).json()
        assert after["outcome"] == "refer"
        assert "REF-THIN-FREELANCE" in [f["id"] for f in after["trace"]["rules_fired"]]
        assert after["trace"]["ruleset"]["version"] == "2026.11.2"

        # The decision made before the change replays identically on its own ruleset version.
        replay = c.post(f"/decisions/{before['decision_id']}/replay").json()
        assert replay["identical"] is True, json.dumps(replay)
        assert replay["ruleset_version"] == "2026.11.1"
        found = c.get("/decisions", params={"ruleset_version": "2026.11.2"}).json()["items"]
        assert [i["decision"]["decision_id"] for i in found] == [after["decision_id"]]


def test_rule_files_are_watched(tmp_path) -> None:
    srv = start_server(
        tmp_path, f"sqlite:///{tmp_path / 'd.db'}", extra_env={"DECISION_RULES_WATCH": "true"}
    )
    try:
        policy = srv.rules_dir / "risk_appetite.yaml"
        policy.write_text(policy.read_text().replace("version: 2026.11.1", "version: 2026.12.0"))
        with srv.client() as c:
            for _ in range(100):
                if c.get("/rules").json()["version"] == "2026.12.0":
                    break
                time.sleep(0.1)
            assert c.get("/rules").json()["version"] == "2026.12.0"
    finally:
        srv.stop()
