"""A loan system that retries gets the decision already made, over HTTP, on the real server:
across requests, restarts and workers; the same key with another request is refused."""

from __future__ import annotations

import json
import uuid
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
import sqlalchemy as sa

from decision_service.api.decide import EXAMPLE
from tests.e2e.conftest import start_server
from tests.pg_cut import CommitCutter

REPLAYED = "idempotency-replayed"


def _count(database_url: str, application_id: str) -> int:
    engine = sa.create_engine(database_url)
    try:
        with engine.connect() as conn:
            return conn.execute(
                sa.text("SELECT count(*) FROM decision WHERE application_id = :a"),
                {"a": application_id},
            ).scalar_one()
    finally:
        engine.dispose()


def _decided(response: httpx.Response) -> dict:
    """The decision without its measured stage timings (the first answer also times its own
    commit, which its record cannot contain)."""
    decision = response.json()
    del decision["trace"]["timings_us"]
    return decision


def _application(lines: list[bytes], i: int) -> tuple[bytes, str]:
    """A real application with an application_id no other test uses."""
    line = lines[i]
    app_id = f"IDEM-{uuid.uuid4().hex[:10]}"
    start = line.index(b'"APP-')
    end = line.index(b'"', start + 1) + 1
    return line[:start] + f'"{app_id}"'.encode() + line[end:], app_id


def test_a_retried_request_is_one_decision_even_across_a_restart(
    database_url, application_lines, tmp_path
) -> None:
    body, app_id = _application(application_lines, 11)
    key = {"Idempotency-Key": str(uuid.uuid4())}
    server = start_server(tmp_path, database_url)
    try:
        with server.client() as c:
            answers = [c.post("/decide", content=body, headers=key) for _ in range(3)]
            assert [r.status_code for r in answers] == [200, 200, 200]
            assert [r.headers.get(REPLAYED) for r in answers] == [None, "true", "true"]
            assert answers[1].content == answers[2].content  # the decision as recorded
            assert _decided(answers[1]) == _decided(answers[0])  # as first answered
            plain = c.post("/decide", content=body)  # without a key: decided as before
            assert plain.status_code == 200 and REPLAYED not in plain.headers
    finally:
        server.stop()
    assert _count(database_url, app_id) == 2  # the keyed one, once; the plain one

    server = start_server(tmp_path, database_url)  # a restart: the key is in the database
    try:
        with server.client() as c:
            again = c.post("/decide", content=body, headers=key)
        assert again.status_code == 200 and again.headers.get(REPLAYED) == "true"
        assert again.json()["decision_id"] == answers[0].json()["decision_id"]
    finally:
        server.stop()
    assert _count(database_url, app_id) == 2


def test_two_workers_racing_with_one_key_make_one_decision(
    database_url, application_lines, tmp_path
) -> None:
    body, app_id = _application(application_lines, 12)
    key = {"Idempotency-Key": f"race-{uuid.uuid4()}"}
    server = start_server(tmp_path, database_url, workers=2)
    try:

        def send(_: int) -> httpx.Response:
            with server.client() as c:  # a connection each: both workers take some
                return c.post("/decide", content=body, headers=key)

        with ThreadPoolExecutor(12) as pool:
            answers = list(pool.map(send, range(24)))
    finally:
        server.stop()
    assert {r.status_code for r in answers} == {200}
    assert len({r.json()["decision_id"] for r in answers}) == 1
    assert sum(REPLAYED not in r.headers for r in answers) == 1  # decided once, replayed 23×
    assert _count(database_url, app_id) == 1


def test_the_same_key_with_another_body_or_a_bad_key_is_refused(server, application_lines) -> None:
    body, app_id = _application(application_lines, 13)
    other, other_id = _application(application_lines, 14)
    key = {"Idempotency-Key": str(uuid.uuid4())}
    with server.client() as c:
        assert c.post("/decide", content=body, headers=key).status_code == 200
        refused = c.post("/decide", content=other, headers=key)
        explained = c.post("/decide?explain=true", content=body, headers=key)
        bad = [
            c.post("/decide", content=body, headers={"Idempotency-Key": value})
            for value in (b"", b"x" * 256, b"two words", "ключ".encode(), b"a;b")
        ]
        twice = c.post(
            "/decide",
            content=body,
            headers=[("Idempotency-Key", "one"), ("Idempotency-Key", "two")],
        )
        assert c.get("/health/ready").status_code == 200
    assert refused.status_code == 422
    assert "already used with a different request" in refused.json()["detail"]
    assert explained.status_code == 422  # the query is part of the request
    assert [r.status_code for r in bad] == [400] * 5
    assert all("Idempotency-Key" in r.json()["detail"] for r in bad)
    assert twice.status_code == 400
    assert _count(server.database_url, app_id) == 1
    assert _count(server.database_url, other_id) == 0


@pytest.mark.postgres
def test_a_lost_commit_answer_over_http(application_lines, tmp_path, request) -> None:
    """The connection to PostgreSQL dies right after COMMIT went out: the server finds the
    decision landed and answers 200; the retry with the same key is that decision. If the
    database cannot even be reached to find out, the answer is a 503 that says the decision may
    have been recorded, and the retry with the same key, once the store is back, is it."""
    request.getfixturevalue("postgres_available")
    from tests.audit.conftest import PG_URL, admin_execute

    name = f"e2e_cut_{uuid.uuid4().hex[:10]}"
    admin_execute(f"CREATE DATABASE {name}")
    direct = sa.make_url(PG_URL).set(database=name).render_as_string(hide_password=False)
    body, app_id = _application(application_lines, 15)
    body2, app_id2 = _application(application_lines, 17)
    key = {"Idempotency-Key": str(uuid.uuid4())}
    key2 = {"Idempotency-Key": str(uuid.uuid4())}
    try:
        with CommitCutter() as cutter:
            server = start_server(tmp_path, cutter.url(direct))
            try:
                with server.client() as c:
                    warm, _ = _application(application_lines, 16)
                    assert c.post("/decide", content=warm).status_code == 200
                    cutter.arm("after")
                    first = c.post("/decide", content=body, headers=key)
                    assert cutter.cut.is_set()
                    retry = c.post("/decide", content=body, headers=key)

                    # Now the database is unreachable from the moment the COMMIT went out.
                    cutter.arm("after")
                    cutter.refuse_after_cut = True
                    unknown = c.post("/decide", content=body2, headers=key2)
                    cutter.refuse_after_cut = cutter.refuse = False  # the store is back
                    retry2 = c.post("/decide", content=body2, headers=key2)
            finally:
                server.stop()
        assert first.status_code == 200, first.text
        assert retry.status_code == 200 and retry.headers.get(REPLAYED) == "true"
        assert retry.json()["decision_id"] == first.json()["decision_id"]
        assert _count(direct, app_id) == 1

        assert unknown.status_code == 503, unknown.text
        assert "may have been recorded" in unknown.json()["detail"]
        assert "same Idempotency-Key is safe" in unknown.json()["detail"]
        assert retry2.status_code == 200 and retry2.headers.get(REPLAYED) == "true"
        assert retry2.json()["decision_id"] == unknown.json()["decision_id"]  # it had landed
        assert _count(direct, app_id2) == 1
    finally:
        admin_execute(
            f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'",
            f"DROP DATABASE IF EXISTS {name}",
        )


def test_keys_are_scoped_per_caller(server) -> None:
    """Two loan systems (two decider keys) sending the same Idempotency-Key get their own
    decisions: neither can replay nor block the other's."""
    body = json.dumps(EXAMPLE | {"application_id": "APP-SCOPE-1"})
    headers = {"idempotency-key": "shared-key-1"}
    ids = []
    for role in ("decider", "admin"):
        with server.client(role) as c:
            first = c.post("/decide", content=body, headers=headers)
            again = c.post("/decide", content=body, headers=headers)
        assert first.status_code == again.status_code == 200, first.text
        assert again.headers.get("idempotency-replayed") == "true"
        assert again.json()["decision_id"] == first.json()["decision_id"]
        ids.append(first.json()["decision_id"])
    assert ids[0] != ids[1]
