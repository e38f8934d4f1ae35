"""Access control over HTTP against the real server (SQLite and PostgreSQL): the 401/403 matrix
over every route of the app and every role, revocation on every worker within a second, rate
limits (in-process, and shared by 2 workers through the real Redis), body size and type,
security headers, the first-start admin key and the keys command."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator

import httpx
import pytest
import redis

from decision_service.access import PUBLIC
from decision_service.api.app import create_app
from tests.api.routes import Route, app_routes, make_settings
from tests.conftest import REDIS_URL, require_redis
from tests.e2e.conftest import ROLES, Server, start_server

LIMITED = {"DECISION_RATE_LIMIT_ANALYST": "5/hour"}  # analysts: 5 calls per key, then 429


@pytest.fixture(scope="module")
def routes(tmp_path_factory: pytest.TempPathFactory) -> list[Route]:
    """Every route of the app as built by the code (not a list kept by hand)."""
    return app_routes(create_app(make_settings(tmp_path_factory.mktemp("routes"))))


@pytest.fixture(scope="module")
def srv(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    env = LIMITED | {"DECISION_KEY_LAST_USED_SECONDS": "0.2"}
    server = start_server(tmp_path_factory.mktemp("access"), database_url, extra_env=env)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def two_workers(srv: Server, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A replica of `srv` on the same database: 2 workers, rate limits shared through Redis."""
    require_redis()
    server = start_server(
        tmp_path_factory.mktemp("replica"),
        srv.database_url,
        workers=2,
        extra_env=LIMITED | {"DECISION_REDIS_URL": REDIS_URL},
        admin_key=srv.admin_key,
    )
    yield server
    server.stop()


def fresh(server: Server, method: str, path: str, key: str | None, **kw) -> httpx.Response:
    """One request on a new connection (so successive ones reach any worker)."""
    headers = kw.pop("headers", {})
    if key is not None:
        headers["authorization"] = f"Bearer {key}"
    return httpx.request(method, server.url + path, headers=headers, timeout=30, **kw)


def test_role_matrix_on_every_route(srv: Server, routes: list[Route]) -> None:
    callers: dict[str, str | None] = {"anonymous": None, "unknown key": "dsk_" + "x" * 43}
    callers |= {role: srv.key_for(role) for role in ROLES}
    clients = {
        who: srv.client_with_key(key) if key else srv.anonymous() for who, key in callers.items()
    }
    wrong: list[str] = []
    for route in routes:
        declared = route.roles or ("admin",)  # Litestar's own OPTIONS answers: fail closed
        body = b"{}" if route.method in ("POST", "PUT", "PATCH") else None
        for who, client in clients.items():
            r = client.request(
                route.method,
                route.url(),
                content=body,
                headers={"content-type": "application/json"},
            )
            if PUBLIC in declared:
                ok = r.status_code not in (401, 403) and r.status_code < 500
            elif callers[who] is None or who == "unknown key":
                ok = r.status_code == 401 and r.headers.get("www-authenticate", "").startswith(
                    "Bearer"
                )
            elif who == "admin" or who in declared:
                ok = r.status_code not in (401, 403) and r.status_code < 500
            else:
                ok = r.status_code == 403
            ok = ok and r.headers.get("x-content-type-options") == "nosniff"
            if not ok:
                wrong.append(f"{route.method} {route.path} as {who}: {r.status_code} {r.text[:80]}")
    for client in clients.values():
        client.close()
    assert wrong == []
    assert len(routes) >= 13 * 2  # every route, and its OPTIONS


def test_security_headers_everywhere(srv: Server, application_lines: list[bytes]) -> None:
    with srv.client("decider") as c:
        decided = c.post("/decide", content=application_lines[0])  # the ASGI fast path
    with srv.anonymous() as c:
        answers = [decided, c.post("/decide"), c.get("/no-such-page"), c.get("/health/live")]
        docs = c.get("/schema/openapi.json")
        cross = c.get("/health/live", headers={"origin": "https://elsewhere.example"})
    assert decided.status_code == 200
    for r in answers:
        assert r.headers["x-content-type-options"] == "nosniff", r.url
        assert r.headers["cache-control"] == "no-store", r.url
        assert r.headers["x-frame-options"] == "DENY", r.url
        assert "frame-ancestors 'none'" in r.headers["content-security-policy"], r.url
        assert r.headers["referrer-policy"] == "no-referrer", r.url
    # the docs pages: everything from this app itself (api/docs_ui), nothing from elsewhere
    docs_csp = docs.headers["content-security-policy"]
    assert "default-src 'self'" in docs_csp and "frame-ancestors 'none'" in docs_csp
    assert "http" not in docs_csp and "unsafe" not in docs_csp
    assert "access-control-allow-origin" not in cross.headers  # no CORS unless a setting says


def test_body_limit_and_json_only_on_every_path(
    srv: Server, application_lines: list[bytes]
) -> None:
    big = b"{" + b" " * 70_000 + b"}"
    assert fresh(srv, "POST", "/decide", srv.key_for("decider"), content=big).status_code == 413

    def chunked():  # no Content-Length: refused while streaming
        for _ in range(100):
            yield b" " * 1000

    r = fresh(
        srv,
        "POST",
        "/decide",
        srv.key_for("decider"),
        content=chunked(),
        headers={"content-type": "application/json"},
    )
    assert r.status_code == 413
    admin = srv.key_for("admin")
    assert fresh(srv, "POST", "/rules/reload", admin, content=big).status_code == 413
    assert fresh(srv, "GET", "/decisions", srv.key_for("auditor"), content=big).status_code == 413
    assert fresh(srv, "POST", "/keys", admin, content=big).status_code == 413
    # a browser's cross-site "simple request" (text/plain) is not decided, nor recorded
    app_id = f"APP-415-{uuid.uuid4().hex[:8]}"
    body = json.loads(application_lines[0]) | {"application_id": app_id}
    for media in ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data"):
        r = fresh(
            srv,
            "POST",
            "/decide",
            srv.key_for("decider"),
            content=json.dumps(body),
            headers={"content-type": media},
        )
        assert r.status_code == 415, media
    assert (
        fresh(
            srv,
            "POST",
            "/keys",
            admin,
            content=b'{"name":"x","role":"admin"}',
            headers={"content-type": "text/plain"},
        ).status_code
        == 415
    )
    with srv.client("auditor") as c:
        assert c.get("/decisions", params={"application_id": app_id}).json()["items"] == []


def test_rate_limit_per_key_in_process(srv: Server) -> None:
    key = srv.new_key("analyst", f"limited-{uuid.uuid4().hex[:8]}")
    codes = [fresh(srv, "GET", "/rules", key) for _ in range(7)]
    assert [r.status_code for r in codes] == [200] * 5 + [429] * 2
    assert int(codes[-1].headers["retry-after"]) > 600  # 5/hour: the next token in ~12 min
    other = srv.new_key("analyst", f"limited-{uuid.uuid4().hex[:8]}")
    assert fresh(srv, "GET", "/rules", other).status_code == 200  # buckets are per key


def test_rate_limit_shared_by_two_workers_through_redis(two_workers: Server) -> None:
    name = f"shared-{uuid.uuid4().hex[:8]}"
    key = two_workers.new_key("analyst", name)
    codes = [fresh(two_workers, "GET", "/rules", key) for _ in range(20)]
    statuses = [r.status_code for r in codes]
    # per-worker buckets would let up to 10 through; one bucket in Redis lets exactly 5
    assert statuses.count(200) == 5 and statuses.count(429) == 15, statuses
    assert all(int(r.headers["retry-after"]) >= 1 for r in codes if r.status_code == 429)
    bucket = redis.Redis.from_url(REDIS_URL).hgetall(f"decision-service:rate:{name}")
    assert float(bucket[b"tokens"]) < 1


def test_revoked_key_refused_by_every_worker_within_a_second(
    srv: Server, two_workers: Server
) -> None:
    name = f"revoke-{uuid.uuid4().hex[:8]}"
    key = two_workers.new_key("decider", name)
    assert all(
        fresh(two_workers, "POST", "/decide", key, json={}).status_code == 422 for _ in range(10)
    )
    done = srv.cli("keys", "revoke", name)  # from another replica's command line
    assert done.returncode == 0, done.stderr
    time.sleep(1.0)
    codes = [fresh(two_workers, "POST", "/decide", key, json={}) for _ in range(20)]
    assert {r.status_code for r in codes} == {401}
    assert "invalid_token" in codes[0].headers["www-authenticate"]


def test_first_start_key_file_and_log(srv: Server) -> None:
    key_file = srv.workdir / "var" / "admin.key"
    assert key_file.stat().st_mode & 0o777 == 0o600
    key = key_file.read_text().strip()
    log = srv.log.read_text()
    assert "first_admin_key_created" in log and str(key_file.resolve()) in log
    assert key not in log


def test_keys_command(srv: Server) -> None:
    made = srv.cli(
        "keys", "create", "--role", "auditor", "--name", "cli-auditor", "--format", "json"
    )
    assert made.returncode == 0, made.stderr
    key = json.loads(made.stdout)["key"]
    srv.wait_for_key(key, accepted=True)
    assert fresh(srv, "GET", "/audit/verify", key).status_code == 200
    again = srv.cli("keys", "create", "--role", "auditor", "--name", "cli-auditor")
    assert again.returncode == 1 and "exists" in again.stderr
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:  # "last used" is written off the hot path
        listed = {
            k["name"]: k for k in json.loads(srv.cli("keys", "list", "--format", "json").stdout)
        }
        if listed["cli-auditor"]["last_used_at"]:
            break
        time.sleep(0.3)
    assert listed["cli-auditor"]["role"] == "auditor" and listed["cli-auditor"]["last_used_at"]
    assert listed["admin"]["role"] == "admin" and listed["admin"]["revoked_at"] is None
    table = srv.cli("keys", "list")
    assert "cli-auditor" in table.stdout and "last used" in table.stdout
    assert srv.cli("keys", "revoke", "cli-auditor").returncode == 0
    srv.wait_for_key(key, accepted=False)
    assert srv.cli("keys", "revoke", "nobody").returncode == 1
