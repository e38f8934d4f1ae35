"""Challengers against the real server process, on SQLite and PostgreSQL: a challenger in rules/
is recorded on every decision (a sampled one on its share), never answered; one that raises
(its model file is corrupt) changes nothing; GET /decisions/{id} shows the results, replay
re-checks them, and the report (HTTP JSON and HTML, CLI) agrees with the records."""

from __future__ import annotations

import json
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from decision_service.challengers import sampled
from tests.challengers._files import challenger, models_dir, rules_dir
from tests.e2e.conftest import Server, start_server

N = 80


@pytest.fixture(scope="module")
def server(database_url: str, tmp_path_factory) -> Server:
    work: Path = tmp_path_factory.mktemp("srv")
    rules_dir(
        work,
        tight=challenger("tighter-pd"),
        quarter=challenger("quarter", sample=0.25),
        broken=challenger("bad-model", model="9.9.9"),
    )
    models_dir(work, corrupt="9.9.9")
    srv = start_server(work, database_url)
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def decided(server: Server, application_lines: list[bytes]) -> list[dict]:
    def post(line: bytes) -> dict:
        with server.client() as c:
            r = c.post("/decide", content=line)
        assert r.status_code == 200, r.text
        return r.json()

    with ThreadPoolExecutor(4) as pool:
        return list(pool.map(post, application_lines[:N]))


def test_challengers_are_recorded_never_answered(server: Server, decided: list[dict]) -> None:
    assert all("challenger" not in json.dumps(d) for d in decided)
    with server.client("auditor") as c:
        for d in decided:
            r = c.get(f"/decisions/{d['decision_id']}")
            assert r.status_code == 200
            shown = {x["challenger"]: x for x in r.json()["challengers"]}
            expect = {"tighter-pd", "bad-model"}
            if sampled(d["decision_id"], "quarter", 0.25):
                expect.add("quarter")
            assert set(shown) == expect
            tight = shown["tighter-pd"]
            assert tight["pd"] == d["pd"] and tight["error"] is None
            assert tight["fired"] and tight["outcome"] in {"approve", "refer", "decline"}
            assert shown["bad-model"]["outcome"] is None
            assert "9.9.9 cannot be loaded" in shown["bad-model"]["error"]
    with server.client("analyst") as c:
        metrics = c.get("/metrics").text
        rules = c.get("/rules").json()
    assert f'challenger_errors_total{{challenger="bad-model"}} {float(N)}' in metrics
    assert {x["name"] for x in rules["challengers"]} == {"tighter-pd", "quarter", "bad-model"}


def test_replay_rechecks_the_challengers(server: Server, decided: list[dict]) -> None:
    with server.client("auditor") as c:
        for d in decided[:10]:
            r = c.post(f"/decisions/{d['decision_id']}/replay")
            assert r.status_code == 200, r.text
            body = r.json()
            assert body["identical"], body["differences"]
            assert body["challengers"] >= 2
    cli = server.cli("audit", "replay", "--all")
    assert cli.returncode == 0, cli.stderr
    assert f"replayed {N}: {N} identical, 0 different" in cli.stdout


def test_report_over_http_and_cli(server: Server, decided: list[dict]) -> None:
    with server.client("auditor") as c:
        shown = {
            d["decision_id"]: {
                x["challenger"]: x
                for x in c.get(f"/decisions/{d['decision_id']}").json()["challengers"]
            }
            for d in decided
        }
    with server.client("analyst") as c:
        rep = c.get("/challengers/tighter-pd/report").json()
        html = c.get("/challengers/tighter-pd/report", params={"format": "html"})
        bad = c.get("/challengers/bad-model/report").json()
        assert c.get("/challengers/nobody/report").status_code == 404
    with server.client("decider") as c:
        assert c.get("/challengers/tighter-pd/report").status_code == 403
    pairs = Counter(
        (d["outcome"], shown[d["decision_id"]]["tighter-pd"]["outcome"]) for d in decided
    )
    assert rep["decisions"] == N and rep["errors"] == 0
    assert sum(sum(row.values()) for row in rep["flip_matrix"].values()) == N
    for (a, b), n in pairs.items():
        assert rep["flip_matrix"][a][b] == n
    approved = [d for d in decided if d["outcome"] == "approve"]
    assert rep["champion"]["approval_rate"] == pytest.approx(len(approved) / N)
    assert rep["champion"]["approved_volume"] == pytest.approx(
        sum(d["approved_amount"] for d in approved)
    )
    assert bad["decisions"] == 0 and bad["errors"] == N
    assert html.status_code == 200 and html.headers["content-type"].startswith("text/html")
    assert "<svg" in html.text and "tighter-pd" in html.text
    cli = server.cli("challengers", "report", "tighter-pd", "--format", "json")
    assert cli.returncode == 0, cli.stderr
    assert json.loads(cli.stdout)["flip_matrix"] == rep["flip_matrix"]
    table = server.cli("challengers", "report")
    assert table.returncode == 0 and "quarter" in table.stdout and "agreement" in table.stdout
