"""Engines for the audit store: the same code on SQLite (embedded) and PostgreSQL.

SQLite runs in WAL mode with ``synchronous=FULL`` by default: a committed decision survives
power loss, not only a process crash (NORMAL would lose the last commits on an OS crash, for a
throughput gain of a few percent once writes are grouped; see benchmarks/audit_bench.py).

The writer engine opens every SQLite transaction with ``BEGIN IMMEDIATE`` so it takes the write
lock up front and waits (``busy_timeout``) for other writer processes instead of failing on a
lock upgrade. Readers use a separate engine with plain deferred transactions.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Any, Literal

import sqlalchemy as sa
from sqlalchemy import event

SQLiteSync = Literal["FULL", "NORMAL", "EXTRA", "OFF"]


def make_engine(
    database_url: str,
    *,
    writer: bool = False,
    sqlite_synchronous: SQLiteSync = "FULL",
    busy_timeout_ms: int = 5000,
    connect_timeout_s: int = 5,
    **kwargs: Any,
) -> sa.Engine:
    """Build an engine for ``database_url`` (``sqlite:///…`` or ``postgresql+psycopg://…``).

    ``writer=True`` gives the engine the audit writer uses (SQLite: ``BEGIN IMMEDIATE``).
    """
    url = sa.make_url(database_url)
    if url.get_backend_name() == "sqlite":
        return _sqlite_engine(url, writer, sqlite_synchronous, busy_timeout_ms, **kwargs)
    if url.get_backend_name() == "postgresql":
        connect_args = kwargs.pop("connect_args", {})
        connect_args.setdefault("connect_timeout", connect_timeout_s)
        return sa.create_engine(url, pool_pre_ping=True, connect_args=connect_args, **kwargs)
    return sa.create_engine(url, pool_pre_ping=True, **kwargs)


def _sqlite_engine(
    url: sa.URL, writer: bool, synchronous: SQLiteSync, busy_timeout_ms: int, **kwargs: Any
) -> sa.Engine:
    if url.database and url.database != ":memory:":
        Path(url.database).parent.mkdir(parents=True, exist_ok=True)
    engine = sa.create_engine(url, **kwargs)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Own the transactions (pysqlite's implicit BEGIN would defeat BEGIN IMMEDIATE).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
        _ensure_wal(cursor, busy_timeout_ms)
        cursor.execute(f"PRAGMA synchronous = {synchronous}")
        cursor.close()

    begin = "BEGIN IMMEDIATE" if writer else "BEGIN"

    @event.listens_for(engine, "begin")
    def _on_begin(conn: sa.Connection) -> None:
        conn.exec_driver_sql(begin)

    return engine


def _ensure_wal(cursor: Any, busy_timeout_ms: int) -> None:
    """Switch the file to WAL, tolerating other processes opening it at the same moment.

    WAL is persistent, so a file already in WAL needs no lock. The switch itself needs an
    exclusive lock and SQLite does not always call the busy handler for it (it fails fast
    when waiting could deadlock), so workers starting together retry here.
    """
    deadline = time.monotonic() + busy_timeout_ms / 1000
    delay = 0.01
    while True:
        mode = cursor.execute("PRAGMA journal_mode").fetchone()[0]
        if str(mode).lower() in ("wal", "memory"):
            return
        try:
            cursor.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() >= deadline:
                raise
        time.sleep(delay)
        delay = min(delay * 2, 0.2)


def is_sqlite(engine: sa.Engine) -> bool:
    return engine.dialect.name == "sqlite"
