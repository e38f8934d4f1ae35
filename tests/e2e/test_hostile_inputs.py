"""An attacker's corpus against the real server: every hostile body, query, path and header gets
a 4xx with a problem description, nothing is recorded, and the server stays healthy.

Each case was chosen as an attacker would: encodings, depths, sizes, numbers JSON cannot hold,
duplicate keys, garbage cursors and dates, odd methods and content. Schemathesis (see
test_schemathesis.py) covers what the OpenAPI document describes; this corpus covers what it
does not.
"""

from __future__ import annotations

import json
import socket
from urllib.parse import urlsplit

import pytest
import sqlalchemy as sa

from decision_service.api.decide import EXAMPLE
from tests.e2e.conftest import Server

GOOD = EXAMPLE | {"application_id": "APP-HOSTILE-1"}
GOOD_BYTES = json.dumps(GOOD).encode()


def _with(field: str, raw: str) -> bytes:
    """GOOD with one field's JSON text replaced verbatim (for values json.dumps cannot make)."""
    text = json.dumps(GOOD)
    old = f'"{field}": {json.dumps(GOOD[field])}'
    assert old in text
    return text.replace(old, f'"{field}": {raw}').encode()


# (name, body) pairs for POST /decide with a JSON content type: every one must be a 4xx.
BODIES: list[tuple[str, bytes]] = [
    ("empty", b""),
    ("whitespace", b"   \n\t "),
    ("not json", b"hello"),
    ("truncated", GOOD_BYTES[:-5]),
    ("trailing garbage", GOOD_BYTES + b"x"),
    ("two documents", GOOD_BYTES + GOOD_BYTES),
    ("array", b"[]"),
    ("string", b'"x"'),
    ("null", b"null"),
    ("number", b"1e999"),
    ("invalid utf-8 at start", b'\xff\xfe{"application_id": "A"}'),
    ("invalid utf-8 in a string", GOOD_BYTES.replace(b"APP-HOSTILE-1", b"APP-\xc3\x28")),
    ("utf-16 body", GOOD_BYTES.decode().encode("utf-16")),
    ("utf-8 bom", b"\xef\xbb\xbf" + GOOD_BYTES),
    ("lone surrogate escape", GOOD_BYTES.replace(b"APP-HOSTILE-1", b"APP-\\ud800")),
    ("nul in id", GOOD_BYTES.replace(b"APP-HOSTILE-1", b"APP-\\u0000")),
    ("newline after id", GOOD_BYTES.replace(b"APP-HOSTILE-1", b"APP-HOSTILE-1\\n")),
    ("deep arrays", b"[" * 100_000 + b"]" * 100_000),
    ("deep objects", b'{"a":' * 20_000 + b"1" + b"}" * 20_000),
    ("deep value", _with("age", "[" * 50_000 + "]" * 50_000)),
    ("integer beyond int64", _with("age", "1" + "0" * 40)),
    ("float beyond double", _with("income", "1e400")),
    ("negative beyond double", _with("income", "-1e400")),
    ("NaN literal", _with("income", "NaN")),
    ("Infinity literal", _with("income", "Infinity")),
    ("hex number", _with("age", "0x2e")),
    ("leading zeros", _with("age", "046")),
    ("bool for number", _with("income", "true")),
    ("string for number", _with("income", '"200"')),
    ("object for number", _with("income", '{"$gt": 0}')),
    ("number for bool", _with("records", "1")),
    ("unknown category", _with("home", '"castle"')),
    ("category with different case", _with("home", '"OWNER"')),
    ("huge id", _with("application_id", json.dumps("A" * 100_000))),
    ("duplicate key, second out of range", _with("age", '46, "age": 200')),
    ("duplicate key, both valid", _with("age", '46, "age": 47')),
    ("duplicate key, escaped name", _with("age", '46, "\\u0061ge": 47')),
    ("unknown field", _with("age", '46, "__proto__": {"admin": true}')),
    ("missing required", json.dumps({"application_id": "A"}).encode()),
    ("ten thousand unknown fields", json.dumps({f"f{i}": i for i in range(10_000)}).encode()),
]


def _count(server: Server) -> int:
    engine = sa.create_engine(server.database_url)
    try:
        with engine.connect() as conn:
            return conn.execute(sa.text("SELECT count(*) FROM decision")).scalar_one()
    finally:
        engine.dispose()


def _assert_problem(response, allowed: set[int]) -> None:
    assert response.status_code in allowed, (response.status_code, response.text[:300])
    body = response.json()
    assert "Traceback" not in response.text
    assert body.get("detail") or body.get("title"), body


@pytest.mark.parametrize(("name", "body"), BODIES, ids=[n for n, _ in BODIES])
def test_hostile_body_is_a_4xx_and_nothing_is_recorded(server: Server, name, body):
    before = _count(server)
    with server.client() as c:
        r = c.post("/decide", content=body, headers={"content-type": "application/json"})
    _assert_problem(r, {400, 413, 422})
    assert _count(server) == before, f"{name}: a rejected body was recorded"


QUERIES = [
    "from=notadate",
    "from=2026-13-45T00:00:00Z",
    "from=2026-02-30",
    "from=99999-01-01",
    "to=%00",
    "to=1e400",
    "from=2026-01-01&from=2027-01-01",
    "limit=-1",
    "limit=0",
    "limit=99999999999999999999999",
    "limit=1.5",
    "limit=abc",
    "outcome=maybe",
    "cursor=%00%ff",
    "cursor=eyJ4IjoxfQ",  # base64 of {"x":1}
    "cursor=" + "A" * 5000,
    "cursor=!!!",
    "application_id=" + "%ff" * 100,
    "rule=%00",
    "model_version=" + "9" * 3000,
]


@pytest.mark.parametrize("query", QUERIES)
def test_hostile_auditor_query_is_a_4xx_or_an_empty_answer(server: Server, query: str) -> None:
    with server.client() as c:
        r = c.get(f"/decisions?{query}")
    assert r.status_code in (200, 400, 422), (r.status_code, r.text[:300])
    assert "Traceback" not in r.text
    if r.status_code == 200:
        assert isinstance(r.json()["items"], list)


PATHS = [
    ("GET", "/decisions/%00"),
    ("GET", "/decisions/" + "a" * 5000),
    ("GET", "/decisions/%ff%fe"),
    ("GET", "/decisions/..%2F..%2Fetc%2Fpasswd"),
    ("POST", "/decisions/%ff/replay"),
    ("POST", "/decisions/" + "x" * 3000 + "/replay"),
    ("GET", "/decide"),
    ("PUT", "/decide"),
    ("DELETE", "/decisions"),
    ("GET", "/nope"),
    ("PATCH", "/rules"),
]


@pytest.mark.parametrize(("method", "path"), PATHS)
def test_hostile_path_or_method_is_a_4xx(server: Server, method: str, path: str) -> None:
    with server.client() as c:
        r = c.request(method, path)
    assert 400 <= r.status_code < 500, (r.status_code, r.text[:300])
    assert "Traceback" not in r.text


HEADERS = [
    {"traceparent": "garbage"},
    {"traceparent": "00-" + "0" * 32 + "-" + "0" * 16 + "-01"},
    {"traceparent": "ff-" + "a" * 32 + "-" + "b" * 16 + "-01"},
    {"traceparent": "00-" + "g" * 32 + "-" + "b" * 16 + "-01"},
    {"tracestate": "x" * 8000},
    {"x-forwarded-for": ", ".join(["1.2.3.4"] * 500)},
]


@pytest.mark.parametrize("headers", HEADERS, ids=[next(iter(h)) for h in HEADERS])
def test_odd_headers_do_not_break_a_decision(server: Server, headers: dict[str, str]) -> None:
    with server.client() as c:
        r = c.post(
            "/decide", content=GOOD_BYTES, headers={"content-type": "application/json"} | headers
        )
    assert r.status_code == 200, r.text[:300]
    assert len(r.json()["trace_id"]) == 32


def _raw_http(server: Server, payload: bytes) -> bytes:
    url = urlsplit(server.url)
    with socket.create_connection((url.hostname, url.port), timeout=10) as s:
        s.sendall(payload)
        s.shutdown(socket.SHUT_WR)
        chunks = []
        while data := s.recv(65536):
            chunks.append(data)
    return b"".join(chunks)


RAW = [
    b"GARBAGE\r\n\r\n",
    b"POST /decide HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n",
    b"POST /decide HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999999999999\r\n\r\n{}",
    b"POST /decide HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
    b"Content-Length: 3\r\n\r\nzz\r\n",
    b"POST /decide HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nZZZ\r\n",
    b"GET /decisions HTTP/1.1\r\nHost: x\r\n" + b"X-Big: " + b"a" * 200_000 + b"\r\n\r\n",
    b"GET /\x00decisions HTTP/1.1\r\nHost: x\r\n\r\n",
]


@pytest.mark.parametrize("payload", RAW, ids=[str(i) for i in range(len(RAW))])
def test_malformed_http_is_refused_by_the_server_not_crashed(server: Server, payload):
    before = _count(server)
    reply = _raw_http(server, payload)
    if reply:  # the server may also just close the connection
        status = int(reply.split(b" ", 2)[1])
        assert 400 <= status < 500, reply[:300]
    assert _count(server) == before


def test_server_is_healthy_after_the_corpus(server: Server) -> None:
    with server.client() as c:
        assert c.get("/health/ready").status_code == 200
        r = c.post("/decide", content=GOOD_BYTES, headers={"content-type": "application/json"})
    assert r.status_code == 200
    assert "decide_failed" not in server.log.read_text()
    assert '"level":"error"' not in server.log.read_text().replace(" ", "")
