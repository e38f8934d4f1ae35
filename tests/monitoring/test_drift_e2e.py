"""Drift on live decisions: the real server decides the held-out applications, then a shifted
population (only freelancers); `decision-service drift` over each window, and the
GET /monitoring/drift handler on the same store."""

from __future__ import annotations

import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

import pytest
from litestar import Litestar
from litestar.testing import TestClient

from decision_service.api.monitoring import drift_handlers
from decision_service.audit import make_engine
from decision_service.monitoring.gauges import DriftGauges
from tests.conftest import APPLICATIONS, ROOT
from tests.e2e.conftest import Server, start_server


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    workdir = tmp_path_factory.mktemp("srv")
    srv = start_server(
        workdir,
        f"sqlite:///{workdir / 'decisions.db'}",
        workers=2,
        extra_env={"DECISION_RATE_LIMIT": "off"},  # drives thousands of decisions on one key
    )
    yield srv
    srv.stop()


def _now() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


def _decide_all(server: Server, lines: list[bytes]) -> None:
    def post(chunk: list[bytes]) -> list[int]:
        with server.client() as client:
            headers = {"content-type": "application/json"}
            return [client.post("/decide", content=b, headers=headers).status_code for b in chunk]

    chunks = [lines[i::4] for i in range(4)]
    with ThreadPoolExecutor(4) as pool:
        statuses = [s for part in pool.map(post, chunks) for s in part]
    assert statuses == [200] * len(lines)


def _drift(server: Server, *args: str) -> dict:
    done = server.cli("drift", *args, "--format", "json")
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout)


def test_held_out_traffic_is_quiet_and_a_freelancer_population_alerts(server: Server) -> None:
    lines = APPLICATIONS.read_bytes().splitlines()
    t0 = _now()
    _decide_all(server, lines)
    t1 = _now()
    freelancers = [line for line in lines if json.loads(line)["job"] == "freelance"]
    _decide_all(server, freelancers)
    t2 = _now()

    quiet = _drift(server, "--from", t0, "--to", t1)
    assert quiet["decisions"] == len(lines) and quiet["model_version"] == "1.0.0"
    assert quiet["status"] == "ok", (quiet["alerts"], quiet["warnings"])
    assert quiet["outcomes"]["psi"] < 1e-9  # the card's held-out mix, decided again

    shifted = _drift(server, "--from", t1, "--to", t2)
    assert shifted["decisions"] == len(freelancers)
    assert shifted["status"] == "alert" and {"job", "income"} <= set(shifted["alerts"])

    exit_code = server.cli("drift", "--from", t1, "--to", t2, "--fail-on-alert").returncode
    assert exit_code == 3
    page = server.cli("drift", "--from", t1, "--to", t2, "--format", "html")
    assert page.returncode == 0 and page.stdout.count("<svg") == len(shifted["features"]) + 2
    table = server.cli("drift", "--from", t1, "--to", t2)
    assert "ALERT" in table.stdout and "job" in table.stdout

    # The endpoint handler over the same store.
    engine = make_engine(server.database_url)
    from prometheus_client import CollectorRegistry, generate_latest

    registry = CollectorRegistry()
    handlers = drift_handlers(
        engine, ROOT / "models", "underwriting", "1.0.0", DriftGauges(registry)
    )
    assert handlers[0].opt["roles"] == ["analyst", "auditor"]  # and admin
    try:
        with TestClient(Litestar(route_handlers=handlers)) as client:
            got = client.get("/monitoring/drift", params={"from": t1, "to": t2}).json()
            assert got["alerts"] == shifted["alerts"]
            assert client.get("/monitoring/drift", params={"from": "yesterday"}).status_code == 400
            html = client.get("/monitoring/drift", params={"from": t1, "format": "html"})
            assert html.headers["content-type"].startswith("text/html")
            whole = client.get("/monitoring/drift").json()
            assert whole["decisions"] == len(lines) + len(freelancers)
        exposition = generate_latest(registry).decode()
        assert 'drift_psi{model_version="1.0.0",series="job"}' in exposition
    finally:
        engine.dispose()
