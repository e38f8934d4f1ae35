"""Audit store fixtures: every test runs on SQLite (a temp file) and on PostgreSQL (a database
created for the test and dropped after it).

PostgreSQL is at ``AUDIT_TEST_PG_URL`` (default: the local server). If it is down, the
PostgreSQL variants skip, except under ``CI=true`` where they fail.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
import sqlalchemy as sa

from decision_service.audit import AuditStore, CheckpointFile, Keyring, make_engine

PG_URL = os.environ.get(
    "AUDIT_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)


@dataclass(frozen=True)
class Database:
    backend: str  # "sqlite" | "postgres"
    url: str
    name: str  # file path (SQLite) or database name (PostgreSQL)


def _admin_conninfo() -> str:
    return sa.make_url(PG_URL).set(drivername="postgresql").render_as_string(hide_password=False)


def admin_execute(*statements: str) -> list[tuple]:
    """Run statements on the PostgreSQL maintenance database in autocommit; last result."""
    with psycopg.connect(_admin_conninfo(), autocommit=True, connect_timeout=3) as conn:
        rows: list[tuple] = []
        for statement in statements:
            cursor = conn.execute(statement)
            rows = cursor.fetchall() if cursor.description else []
        return rows


@pytest.fixture(scope="session")
def postgres_available() -> None:
    try:
        admin_execute("SELECT 1")
    except psycopg.OperationalError as exc:
        message = f"PostgreSQL not reachable at {PG_URL}: {exc}"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)


def _sqlite_database(tmp_path: Path) -> Database:
    path = tmp_path / "var" / "audit.db"
    return Database("sqlite", f"sqlite:///{path}", str(path))


@contextmanager
def _postgres_database(request: pytest.FixtureRequest) -> Iterator[Database]:
    request.getfixturevalue("postgres_available")
    name = f"audit_test_{uuid.uuid4().hex[:12]}"
    admin_execute(f'CREATE DATABASE "{name}"')
    try:
        url = sa.make_url(PG_URL).set(database=name).render_as_string(hide_password=False)
        yield Database("postgres", url, name)
    finally:
        admin_execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    """Each test using it runs twice: on SQLite and on PostgreSQL."""
    if request.param == "sqlite":
        yield _sqlite_database(tmp_path)
    else:
        with _postgres_database(request) as db:
            yield db


@pytest.fixture
def sqlite_database(tmp_path: Path) -> Database:
    return _sqlite_database(tmp_path)


@pytest.fixture
def postgres_database(request: pytest.FixtureRequest) -> Iterator[Database]:
    with _postgres_database(request) as db:
        yield db


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path: Path) -> Iterator[None]:
    """Each test runs in its own directory: ./var/audit.key and checkpoints stay there.
    (Not monkeypatch.chdir: tests undo their monkeypatches midway.)"""
    before = Path.cwd()
    os.chdir(tmp_path)
    try:
        yield
    finally:
        os.chdir(before)


@pytest.fixture
def keyring(tmp_path: Path) -> Keyring:
    """The audit key file the store writes with (also the default one, ./var/audit.key)."""
    return Keyring.load_or_create(tmp_path / "var" / "audit.key")


@pytest.fixture
def checkpoints(tmp_path: Path) -> CheckpointFile:
    return CheckpointFile(tmp_path / "var" / "checkpoints.jsonl")


@pytest.fixture
async def store(
    database: Database, keyring: Keyring, checkpoints: CheckpointFile
) -> AsyncIterator[AuditStore]:
    audit = AuditStore.open(
        database.url, code_version="test+0000000", keyring=keyring, checkpoints=checkpoints
    )
    await audit.start()
    try:
        yield audit
    finally:
        await audit.close()


@pytest.fixture
def raw(database: Database) -> Iterator[sa.Engine]:
    """A separate engine, as an auditor or an attacker with SQL access would use."""
    engine = make_engine(database.url)
    yield engine
    engine.dispose()
