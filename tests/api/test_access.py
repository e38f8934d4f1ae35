"""Access control in-process: every route declares its roles, and the gate's rules (the same
code the real server runs; tests/e2e/test_access.py has the HTTP matrix against it)."""

from __future__ import annotations

from pathlib import Path

import pytest
from litestar.testing import TestClient

from decision_service.access import PUBLIC, ROLES
from decision_service.access.limits import LocalLimiter, parse_rate
from decision_service.api.app import create_app
from tests.api.routes import app_routes, make_settings

# The contract (issue 8 / DESIGN "Access control"): who may call what; admin may call all.
CONTRACT = {
    ("POST", "/decide"): ("decider",),
    ("POST", "/decide/batch"): ("decider",),
    ("GET", "/decisions"): ("auditor",),
    ("GET", "/decisions/{decision_id:str}"): ("auditor",),
    ("POST", "/decisions/{decision_id:str}/replay"): ("auditor",),
    ("GET", "/audit/verify"): ("auditor",),
    ("GET", "/rules"): ("analyst",),
    ("POST", "/rules/reload"): ("admin",),
    ("GET", "/health/live"): (PUBLIC,),
    ("GET", "/health/ready"): (PUBLIC,),
    ("GET", "/metrics"): (PUBLIC,),
    ("GET", "/keys"): ("admin",),
    ("POST", "/keys"): ("admin",),
    ("POST", "/keys/{name:str}/revoke"): ("admin",),
    ("GET", "/models"): ("analyst", "auditor"),
    ("POST", "/models/active"): ("admin",),
    ("GET", "/monitoring/drift"): ("analyst", "auditor"),
    ("GET", "/decisions/{decision_id:str}/notice"): ("auditor",),
}


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory):
    tmp = tmp_path_factory.mktemp("access")
    app = create_app(make_settings(tmp))
    with TestClient(app) as client:
        yield app, tmp, client


def test_every_route_declares_its_roles(app) -> None:
    """A new endpoint cannot ship open by accident: no declaration fails here (and the gate
    treats it as admin-only meanwhile)."""
    routes = app_routes(app[0])
    undeclared = [f"{r.method} {r.path}" for r in routes if r.roles is None and not r.automatic]
    assert undeclared == []
    unknown = {role for r in routes for role in r.roles or () if role not in (*ROLES, PUBLIC)}
    assert unknown == set()
    declared = {(r.method, r.path): r.roles for r in routes}
    for route, roles in CONTRACT.items():
        assert declared.get(route) == roles, route
    assert all(declared[(r.method, r.path)] == (PUBLIC,) for r in routes if "/schema" in r.path)


def test_first_start_writes_an_owner_only_admin_key(app) -> None:
    key_file = app[1] / "admin.key"
    assert key_file.stat().st_mode & 0o777 == 0o600
    key = key_file.read_text().strip()
    r = app[2].get("/keys", headers={"authorization": f"Bearer {key}"})
    assert r.status_code == 200
    assert [(k["name"], k["role"]) for k in r.json()] == [("admin", "admin")]
    # a second app on the same database (another worker, a restart) makes no new key
    before = key_file.read_text()
    create_app(make_settings(app[1]))
    assert key_file.read_text() == before


def test_automatic_options_answers_are_closed(app) -> None:
    r = app[2].options("/decisions")
    assert r.status_code == 401
    assert r.headers["www-authenticate"].startswith("Bearer")
    assert 'access_denied_total{status="401"}' in app[2].get("/metrics").text


def test_metrics_closed_by_setting(tmp_path: Path) -> None:
    with TestClient(create_app(make_settings(tmp_path, metrics_public=False))) as c:
        assert c.get("/metrics").status_code == 401
        assert c.get("/health/live").status_code == 200


def test_no_cors_unless_set(tmp_path: Path, application_lines) -> None:
    origin = {"origin": "https://evil.example"}
    with TestClient(create_app(make_settings(tmp_path / "a"))) as c:
        r = c.get("/health/live", headers=origin)
        assert "access-control-allow-origin" not in r.headers
    allowed = make_settings(tmp_path / "b", cors_origins="https://los.example")
    with TestClient(create_app(allowed)) as c:
        r = c.get("/health/live", headers={"origin": "https://los.example"})
        assert r.headers["access-control-allow-origin"] == "https://los.example"
        r = c.get("/health/live", headers=origin)
        assert "access-control-allow-origin" not in r.headers


def test_chunked_body_over_the_limit_is_refused_while_streaming(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, max_body_bytes=1000)
    with TestClient(create_app(settings)) as c:
        key = (tmp_path / "admin.key").read_text().strip()
        headers = {"authorization": f"Bearer {key}", "content-type": "application/json"}

        def chunks():  # no Content-Length: the limit must hold while reading
            for _ in range(100):
                yield b" " * 100

        r = c.post("/decide", content=chunks(), headers=headers)
        assert r.status_code == 413


def test_rates_parse_and_token_bucket_refuses_then_tells_when() -> None:
    rate = parse_rate("3/hour")
    assert rate is not None and rate.burst == 3 and rate.per_second == pytest.approx(3 / 3600)
    assert parse_rate("200/second").per_second == 200  # type: ignore[union-attr]
    assert parse_rate("off") is None
    with pytest.raises(ValueError):
        parse_rate("fast")
    limiter = LocalLimiter()
    assert [limiter.take_now("k", rate) for _ in range(3)] == [0.0, 0.0, 0.0]
    wait = limiter.take_now("k", rate)
    assert 1190 < wait <= 1200  # one token per 20 minutes
    assert limiter.take_now("other", rate) == 0.0  # per key
