"""Two `serve` replicas on one PostgreSQL under concurrent load: every answered decision is in
the store exactly once, nothing else is, and every chain (one per writer) verifies."""

from __future__ import annotations

import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import sqlalchemy as sa

from decision_service.audit import AuditStore, Keyring, iter_records, verify
from tests.conftest import APPLICATIONS

from .conftest import PG_URL, admin_execute, start_server

N = 600


@pytest.fixture
def pg_database(postgres_available):
    name = f"e2e_replicas_{uuid.uuid4().hex[:10]}"
    admin_execute(f"CREATE DATABASE {name}")
    yield sa.make_url(PG_URL).set(database=name).render_as_string(hide_password=False)
    admin_execute(
        f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'",
        f"DROP DATABASE IF EXISTS {name}",
    )


@pytest.mark.postgres
@pytest.mark.slow  # two server processes and 600 decisions; CI runs it
def test_two_replicas_lose_nothing_and_every_chain_verifies(pg_database, tmp_path):
    replicas = [start_server(tmp_path / name, pg_database) for name in ("a", "b")]
    lines = APPLICATIONS.read_bytes().splitlines()[:N]
    clients = [r.client() for r in replicas]
    try:

        def post(i: int) -> tuple[int, str | None]:
            response = clients[i % 2].post(
                "/decide", content=lines[i], headers={"content-type": "application/json"}
            )
            body = response.json() if response.status_code == 200 else {}
            return response.status_code, body.get("decision_id")

        with ThreadPoolExecutor(16) as pool:  # bounded load: 600 requests, then it stops
            answers = list(pool.map(post, range(N)))
    finally:
        for c in clients:
            c.close()
        for r in replicas:
            r.stop()
    assert [status for status, _ in answers] == [200] * N
    answered = {decision_id for _, decision_id in answers}
    store = AuditStore.open(pg_database, create=False)
    try:
        stored = [r.decision_id for r in iter_records(store.reader)]
        # with the replicas' own audit key (the same file for both)
        keyring = Keyring.load(Path(replicas[0].env["DECISION_AUDIT_KEY_FILE"]))
        report = verify(store.reader, keyring)
    finally:
        store.engine.dispose()
        store.reader.dispose()
    assert len(stored) == len(set(stored)) == N and set(stored) == answered
    assert report.ok and len(report.chains) == 2, report
    assert sum(c.records for c in report.chains) == N
    result = replicas[0].cli("audit", "verify")
    assert result.returncode == 0 and "intact: 600 records, 2 chains" in result.stdout
