"""The model registry on the real server (2 workers, SQLite and PostgreSQL): promote, rollback
and retire from the CLI and over HTTP; every worker follows within seconds without a restart;
the gate refuses 1.0.0 (it uses marital status) while rollback to it still works; a decision
made under a version replays identically after that version is retired; every switch is in
change_log with who made it; the adverse-action notice and the drift report over HTTP."""

from __future__ import annotations

import getpass
import json
import re
import time
from collections.abc import Iterator

import httpx
import pytest
import sqlalchemy as sa

from decision_service.audit.tables import access_log_table, change_log_table
from decision_service.scoring.card import load_card
from tests.conftest import ROOT
from tests.e2e.conftest import Server, start_server

FRESH = 24  # consecutive answers on new connections (each may reach either worker)


@pytest.fixture(scope="module")
def srv(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = start_server(
        tmp_path_factory.mktemp("models"),
        database_url,
        workers=2,
        extra_env={"DECISION_RATE_LIMIT": "off"},  # hundreds of decisions on one key
    )
    yield server
    server.stop()


def fresh(server: Server, method: str, path: str, role: str, **kw) -> httpx.Response:
    """One request on a new connection, so successive ones reach any worker."""
    headers = {
        "authorization": f"Bearer {server.key_for(role)}",
        "content-type": "application/json",
    } | kw.pop("headers", {})
    return httpx.request(method, server.url + path, headers=headers, timeout=30, **kw)


def decide(server: Server, line: bytes) -> dict:
    r = fresh(server, "POST", "/decide", "decider", content=line)
    assert r.status_code == 200, r.text
    return r.json()


def wait_until_served(server: Server, version: str, lines: list[bytes]) -> list[dict]:
    """Decide on fresh connections until FRESH answers in a row come from `version`; returns
    them. Fails if that does not happen within 30 s (workers poll the log every second)."""
    deadline, streak, i = time.monotonic() + 30, [], 0
    while time.monotonic() < deadline:
        d = decide(server, lines[i % len(lines)])
        i += 1
        streak = [*streak, d] if d["trace"]["model"]["version"] == version else []
        if len(streak) == FRESH:
            return streak
    raise AssertionError(f"not every worker serves {version} after 30 s")


def model_gauges(server: Server) -> set[str]:
    """The versions /metrics' model_active names, over FRESH new connections."""
    seen = set()
    for _ in range(FRESH):
        text = httpx.get(server.url + "/metrics", timeout=30).text
        seen |= set(re.findall(r'^model_active\{[^}]*version="([^"]+)"[^}]*\} 1\.0$', text, re.M))
    return seen


def changes(server: Server, prefix: str) -> list[tuple[str, str, dict, dict]]:
    engine = sa.create_engine(server.database_url)
    try:
        with engine.connect() as conn:
            t = change_log_table
            rows = conn.execute(
                sa.select(t.c.actor, t.c.action, t.c.before, t.c.after)
                .where(t.c.action.like(f"{prefix}%"))
                .order_by(t.c.seq)
            ).all()
    finally:
        engine.dispose()
    return [(a, act, json.loads(b or "null"), json.loads(af or "null")) for a, act, b, af in rows]


def admin_name(server: Server) -> str:
    with server.client("admin") as c:
        keys = c.get("/keys").json()
    return next(k["name"] for k in keys if k["role"] == "admin")


def cli_json(server: Server, *args: str) -> tuple[int, dict]:
    done = server.cli("models", *args, "--format", "json")
    return done.returncode, json.loads(done.stdout)


def test_promote_rollback_retire_on_every_worker(
    srv: Server, application_lines: list[bytes]
) -> None:
    lines = application_lines[:200]
    before = wait_until_served(srv, "1.0.0", lines)  # the default version, no record yet
    assert model_gauges(srv) == {"1.0.0"}

    code, promoted = cli_json(srv, "promote", "1.1.0", "--reason", "fair lending FL-7")
    assert code == 0 and promoted["live"] == "1.1.0" and promoted["change_log"] is True
    under_new = wait_until_served(srv, "1.1.0", lines)
    assert model_gauges(srv) == {"1.1.0"}
    new_card = load_card(ROOT / "models" / "underwriting" / "1.1.0")
    assert {d["trace"]["model"]["sha256"] for d in under_new} == {new_card.model_sha256}
    assert {d["trace"]["model"]["sha256"] for d in before} != {new_card.model_sha256}

    # who may look and who may switch
    assert fresh(srv, "GET", "/models", "analyst").json()["live"] == "1.1.0"
    assert fresh(srv, "GET", "/models", "decider").status_code == 403
    refused = fresh(srv, "POST", "/models/active", "auditor", json={"action": "rollback"})
    assert refused.status_code == 403

    # rollback (containment) over HTTP: not gated, back to 1.0.0 on every worker
    back = fresh(srv, "POST", "/models/active", "admin", json={"action": "rollback"})
    assert back.status_code == 200 and back.json()["live"] == "1.0.0", back.text
    wait_until_served(srv, "1.0.0", lines)
    assert model_gauges(srv) == {"1.0.0"}

    # the gate refuses to PROMOTE 1.0.0 (it uses marital status); nothing changes
    code, gate = cli_json(srv, "promote", "1.0.0")
    assert code == 1 and gate["status"] == 422 and "prohibited_features" in gate["error"]
    assert [c["name"] for c in gate["gate"]["checks"] if not c["ok"]] == ["prohibited_features"]

    # retire 1.1.0: promotion refused from then on, over HTTP and the CLI
    code, retired = cli_json(srv, "retire", "1.1.0", "--reason", "superseded")
    assert code == 0 and retired["live"] == "1.0.0"
    again = fresh(srv, "POST", "/models/active", "admin", json={"version": "1.1.0"})
    assert again.status_code == 409 and "retired" in again.json()["detail"]
    code, _ = cli_json(srv, "promote", "1.1.0")
    assert code == 1
    assert all(decide(srv, line)["trace"]["model"]["version"] == "1.0.0" for line in lines[:FRESH])

    # a decision made under the retired version still replays identically
    for d in under_new[:5]:
        r = fresh(srv, "POST", f"/decisions/{d['decision_id']}/replay", "auditor")
        assert r.status_code == 200, r.text
        assert r.json()["identical"] is True and r.json()["model_version"] == "1.1.0"

    listed = fresh(srv, "GET", "/models", "auditor").json()
    assert listed["retired"] == ["1.1.0"] and listed["rollback_to"] is None
    assert [e["action"] for e in listed["events"]] == ["promote", "rollback", "retire"]

    # change_log: every switch with who made it, from → to
    user = f"cli:{getpass.getuser()}"
    assert [(a, act, b["version"], af["version"]) for a, act, b, af in changes(srv, "model.")] == [
        (user, "model.promote", "1.0.0", "1.1.0"),
        (admin_name(srv), "model.rollback", "1.1.0", "1.0.0"),
        (user, "model.retire", "1.1.0", "1.1.0"),
    ]


def test_key_changes_are_in_the_change_log(srv: Server) -> None:
    key = srv.new_key("analyst", "e2e-changelog")  # over HTTP, by the admin key
    with srv.client("admin") as c:
        assert c.post("/keys/e2e-changelog/revoke").status_code == 200
    srv.wait_for_key(key, accepted=False)
    made = srv.cli("keys", "create", "--role", "decider", "--name", "e2e-cli-key")
    assert made.returncode == 0, made.stderr
    assert srv.cli("keys", "revoke", "e2e-cli-key").returncode == 0
    rows = [(a, act, s) for a, act, _, s in changes(srv, "key.")]
    admin, user = admin_name(srv), f"cli:{getpass.getuser()}"
    assert (admin, "key.create", {"role": "analyst"}) in rows
    assert (user, "key.create", {"role": "decider"}) in rows
    revoked = [(a, act, s["role"]) for a, act, s in rows if act == "key.revoke"]
    assert (admin, "key.revoke", "analyst") in revoked and (
        user,
        "key.revoke",
        "decider",
    ) in revoked
    assert all("key" not in s or s["key"] is None for _, _, s in rows)  # never the secret


def _access_rows(server: Server) -> list[tuple[str, dict, int]]:
    engine = sa.create_engine(server.database_url)
    try:
        with engine.connect() as conn:
            t = access_log_table
            rows = conn.execute(
                sa.select(t.c.actor, t.c.filters, t.c.returned)
                .where(t.c.route == "GET /decisions/{decision_id}/notice")
                .order_by(t.c.seq)
            ).all()
    finally:
        engine.dispose()
    return [(a, json.loads(f), n) for a, f, n in rows]


def test_adverse_action_notice_over_http(srv: Server, application_lines: list[bytes]) -> None:
    declined = next(
        d
        for d in (decide(srv, line) for line in application_lines[:300])
        if d["outcome"] == "decline"
    )
    path = f"/decisions/{declined['decision_id']}/notice"
    seen = len(_access_rows(srv))
    as_json = fresh(srv, "GET", path, "auditor")
    assert as_json.status_code == 200, as_json.text
    notice = as_json.json()
    assert notice["action"] == "decline" and 1 <= len(notice["reasons"]) <= 4
    assert notice["decision_id"] == declined["decision_id"]
    page = fresh(srv, "GET", path, "admin", headers={"accept": "text/html"})
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "Principal reasons" in page.text and notice["reasons"][0]["text"] in page.text
    assert fresh(srv, "GET", path, "decider").status_code == 403
    assert fresh(srv, "GET", path, "analyst").status_code == 403
    missing = fresh(srv, "GET", "/decisions/nothing-here/notice", "auditor")
    assert missing.status_code == 404
    rows = _access_rows(srv)[seen:]
    assert [(f["decision_id"], n) for _, f, n in rows] == [
        (declined["decision_id"], 1),
        (declined["decision_id"], 1),
        ("nothing-here", 0),
    ]
    assert rows[0][0] != "anonymous" and rows[1][0] == admin_name(srv)


def test_drift_report_over_http(srv: Server, application_lines: list[bytes]) -> None:
    for line in application_lines[:50]:
        decide(srv, line)
    r = fresh(srv, "GET", "/monitoring/drift", "analyst")
    assert r.status_code == 200, r.text
    report = r.json()
    assert report["decisions"] >= 50 and report["status"] in ("ok", "warn", "alert")
    assert {f["name"] for f in report["features"]} >= {"income", "job"}
    page = fresh(srv, "GET", "/monitoring/drift", "auditor", params={"format": "html"})
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert fresh(srv, "GET", "/monitoring/drift", "decider").status_code == 403
    bad = fresh(srv, "GET", "/monitoring/drift", "analyst", params={"from": "yesterday"})
    assert bad.status_code == 400
    assert "drift_alerts" in httpx.get(srv.url + "/metrics", timeout=30).text
