"""A loan system decides real applications; an auditor finds, verifies, replays and checks
them; tampering is detected — against the real server process, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

import msgspec
import pytest
import sqlalchemy as sa

from decision_service.scoring import application_type
from tests.e2e.conftest import Server

N = 240


@pytest.fixture(scope="module")
def decided(server: Server, application_lines: list[bytes]) -> list[dict]:
    """N real held-out applications decided over HTTP (8 at a time), with what was sent."""

    def post(line: bytes) -> dict:
        with server.client() as c:
            r = c.post("/decide", content=line, headers={"content-type": "application/json"})
        assert r.status_code == 200, r.text
        return {"sent": line, "decision": r.json()}

    with ThreadPoolExecutor(8) as pool:
        return list(pool.map(post, application_lines[:N]))


def test_decisions_are_real_model_scores_with_reasons(decided, scorer) -> None:
    app_type = application_type(scorer.card)
    outcomes = {d["decision"]["outcome"] for d in decided}
    assert outcomes == {"approve", "refer", "decline"}
    for d in decided:
        dec = d["decision"]
        app = msgspec.json.decode(d["sent"], type=app_type)
        assert dec["pd"] == scorer.predict(scorer.features(app))
        assert dec["application_id"] == app.application_id
        assert dec["risk_band"] is not None
        assert dec["trace"]["ruleset"]["engine"] == "durable_rules"
        assert dec["trace"]["model"]["sha256"] == scorer.card.model_sha256
        assert len(dec["trace_id"]) == 32
        assert set(dec["trace"]["timings_us"]) >= {"validate", "score", "rules", "audit"}
        if dec["outcome"] == "approve":
            assert 0 < dec["approved_amount"] <= app.amount
        else:
            assert dec["approved_amount"] is None
            model = [r for r in dec["reasons"] if r["source"] == "model"]
            assert 1 <= len(model) <= 4 and all(r["contribution"] > 0 for r in model)
            assert any(r["source"] == "rule" for r in dec["reasons"])


def test_each_decision_is_stored_exactly_as_answered(server, decided) -> None:
    with server.client() as c:
        for d in decided[:60]:
            dec = d["decision"]
            stored = c.get(f"/decisions/{dec['decision_id']}").json()
            assert stored["request"] == json.loads(d["sent"])
            answered = dict(dec)
            answered["trace"] = dict(dec["trace"])
            answered["trace"]["timings_us"] = {
                k: v for k, v in dec["trace"]["timings_us"].items() if k != "audit"
            }
            assert stored["decision"] == answered
        assert c.get("/decisions/0000-nope").status_code == 404


def _all(c, **params) -> list[dict]:
    items, cursor = [], None
    while True:
        page = c.get("/decisions", params=params | ({"cursor": cursor} if cursor else {})).json()
        items += page["items"]
        cursor = page["next_cursor"]
        if cursor is None:
            return items


def test_auditor_finds_decisions_by_every_filter(server, decided) -> None:
    ids = {d["decision"]["decision_id"] for d in decided}
    with server.client() as c:
        everything = _all(c, limit=37)
        got = [i["decision"]["decision_id"] for i in everything]
        assert len(got) == len(set(got)) and ids <= set(got)
        assert got == sorted(got)  # UUIDv7: time order
        one = decided[17]["decision"]
        by_app = _all(c, application_id=one["application_id"])
        assert one["decision_id"] in [i["decision"]["decision_id"] for i in by_app]
        for outcome in ("approve", "refer", "decline"):
            want = {
                d["decision"]["decision_id"] for d in decided if d["decision"]["outcome"] == outcome
            }
            found = {i["decision"]["decision_id"] for i in _all(c, outcome=outcome)}
            assert want <= found and all(
                i["decision"]["outcome"] == outcome for i in _all(c, outcome=outcome)
            )
        rule = one["trace"]["rules_fired"][0]["id"]
        want = {
            d["decision"]["decision_id"]
            for d in decided
            if rule in [r["id"] for r in d["decision"]["trace"]["rules_fired"]]
        }
        assert want <= {i["decision"]["decision_id"] for i in _all(c, rule=rule)}
        assert len(_all(c, model_version="1.0.0")) == len(everything)
        assert _all(c, model_version="9.9.9") == []
        version = one["trace"]["ruleset"]["version"]
        assert len(_all(c, ruleset_version=version)) == len(everything)
        times = sorted(d["decision"]["decided_at"] for d in decided)
        middle = times[len(times) // 2]
        before = _all(c, to=middle)
        after = _all(c, **{"from": middle})
        assert len(before) + len(after) == len(everything)
        assert all(i["decision"]["decided_at"] < middle for i in before)
        assert c.get("/decisions", params={"outcome": "maybe"}).status_code == 400
        assert c.get("/decisions", params={"cursor": "%%%"}).status_code == 400


def test_invalid_application_is_422_naming_each_field_and_nothing_is_recorded(server):
    body = {"application_id": "APP-BAD-1", "age": 300, "home": "castle", "term": 36}
    with server.client() as c:
        r = c.post("/decide", json=body)
        assert r.status_code == 422
        fields = {e["field"] for e in r.json()["errors"]}
        assert {"$.age", "$.home", "$.seniority", "$.amount"} <= fields
        assert _all(c, application_id="APP-BAD-1") == []


def test_replay_reproduces_every_decision(server, decided) -> None:
    with server.client() as c:
        r = c.post(f"/decisions/{decided[3]['decision']['decision_id']}/replay").json()
        assert r["identical"] is True and r["differences"] == []
    done = server.cli("audit", "replay", "--all")
    assert done.returncode == 0, done.stdout + done.stderr
    assert " 0 different, 0 could not be replayed" in done.stdout


def test_export_streams_what_the_filters_select(server, decided) -> None:
    done = server.cli("audit", "export", "--format", "jsonl", "--outcome", "decline")
    assert done.returncode == 0, done.stderr
    lines = [json.loads(x) for x in done.stdout.splitlines()]
    assert lines and all(x["decision"]["outcome"] == "decline" for x in lines)
    done = server.cli("audit", "export", "--format", "csv")
    assert done.stdout.splitlines()[0].startswith("decision_id")
    assert len(done.stdout.splitlines()) > len(decided)


def test_chain_verifies_and_tampering_is_detected(server, decided) -> None:
    with server.client() as c:
        assert c.get("/audit/verify").json()["ok"] is True
    assert server.cli("audit", "verify").returncode == 0
    victim = decided[10]["decision"]["decision_id"]
    engine = sa.create_engine(server.database_url)
    try:
        with engine.begin() as conn:
            conn.execute(
                sa.text("UPDATE decision SET pd = pd / 2 WHERE decision_id = :i"), {"i": victim}
            )
        with server.client() as c:
            report = c.get("/audit/verify").json()
        assert report["ok"] is False
        assert report["problems"][0]["decision_id"] == victim
        done = server.cli("audit", "verify")
        assert done.returncode == 1 and victim in done.stdout
    finally:
        with engine.begin() as conn:
            conn.execute(
                sa.text("UPDATE decision SET pd = pd * 2 WHERE decision_id = :i"), {"i": victim}
            )
        engine.dispose()
    assert server.cli("audit", "verify").returncode == 0
