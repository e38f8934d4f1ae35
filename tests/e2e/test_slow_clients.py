"""Slow clients: connections that send part of a request and go silent are closed by the server
(headers: 408, body: closed), /decide keeps answering meanwhile, and the concurrency limit
answers 503 instead of queueing without bound."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
import sqlalchemy as sa

from tests.e2e.conftest import Server, start_server

SLOW = 51  # bounded: 17 of each kind
HALF_HEADERS = b"POST /decide HTTP/1.1\r\nHost: slow\r\nContent-Type: application/json\r\n"
HALF_BODY = (
    b"POST /decide HTTP/1.1\r\nHost: slow\r\nContent-Type: application/json\r\n"
    b"Content-Length: 1000\r\n\r\n" + b'{"application_id": "SLOW-'
)


def _address(server: Server) -> tuple[str, int]:
    host, port = server.url.removeprefix("http://").split(":")
    return host, int(port)


def _read_until_closed(sock: socket.socket, seconds: float) -> bytes | None:
    """What the server sent before closing; None if it kept the connection open."""
    sock.settimeout(seconds)
    data = b""
    try:
        while chunk := sock.recv(4096):
            data += chunk
    except TimeoutError:
        return None
    except ConnectionResetError:
        pass
    return data


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path}/db/decisions.db"


def test_incomplete_requests_are_cut_off(
    tmp_path: Path, sqlite_url: str, application_lines: list[bytes]
) -> None:
    server = start_server(
        tmp_path,
        sqlite_url,
        extra_env={"DECISION_REQUEST_HEADER_TIMEOUT": "2", "DECISION_REQUEST_BODY_TIMEOUT": "2"},
    )
    slow: list[tuple[str, socket.socket]] = []
    try:
        for i in range(SLOW):
            kind = ("silent", "half headers", "half body")[i % 3]
            sock = socket.create_connection(_address(server), timeout=10)
            if kind == "half headers":
                sock.sendall(HALF_HEADERS)
            elif kind == "half body":
                sock.sendall(HALF_BODY)
            slow.append((kind, sock))
        with server.client() as c:  # the service keeps answering while they hang
            answered = [c.post("/decide", content=line) for line in application_lines[:5]]
            assert [r.status_code for r in answered] == [200] * 5
        # every slow connection is closed by the server (the bound only ends a failing test)
        for kind, sock in slow:
            got = _read_until_closed(sock, 30)
            assert got is not None, f"{kind}: connection still open"
            if kind != "half body":  # no response was under way: a 408 says why
                assert got.startswith(b"HTTP/1.1 408 Request Timeout"), (kind, got[:80])
        engine = sa.create_engine(sqlite_url)
        with engine.connect() as conn:  # nothing of the half requests was decided
            count = conn.execute(sa.text("SELECT count(*) FROM decision")).scalar_one()
        engine.dispose()
        assert count == 5
        with server.client() as c:
            assert c.get("/health/ready").status_code == 200
    finally:
        for _, sock in slow:
            sock.close()
        server.stop()


def test_concurrency_limit_answers_503_then_recovers(
    tmp_path: Path, sqlite_url: str, application_lines: list[bytes]
) -> None:
    limit = 8
    server = start_server(
        tmp_path,
        sqlite_url,
        extra_env={
            "DECISION_MAX_CONCURRENCY": str(limit),
            "DECISION_REQUEST_HEADER_TIMEOUT": "3",
        },
    )
    idle = [socket.create_connection(_address(server), timeout=10) for _ in range(limit)]
    try:
        with server.client() as c:
            statuses = []
            for _ in range(20):  # bounded: until the server has counted the idle connections
                statuses.append(c.post("/decide", content=application_lines[0]).status_code)
                if statuses[-1] == 503:
                    break
            assert statuses[-1] == 503
            for sock in idle:  # the header deadline frees the slots
                assert _read_until_closed(sock, 30) is not None
            assert c.post("/decide", content=application_lines[1]).status_code == 200
    finally:
        for sock in idle:
            sock.close()
        server.stop()
