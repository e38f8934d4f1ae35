"""Target 6: bytes on disk per decision, all tables and indexes, SQLite and PostgreSQL.

Measured on the stores the decide phases filled (the real server wrote them), after the server
stopped: SQLite per table and index from the ``dbstat`` virtual table (after a WAL checkpoint),
PostgreSQL from ``pg_total_relation_size`` of every table (heap, TOAST and indexes).
"""

from __future__ import annotations

import contextlib
import sqlite3
from typing import Any

from benchmarks.harness.stores import Store, pg_conninfo


def sqlite_bytes(store: Store) -> dict[str, Any]:
    path = store.sqlite_path
    assert path is not None
    with contextlib.closing(sqlite3.connect(path)) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        decisions = conn.execute("SELECT count(*) FROM decision").fetchone()[0]
        page = conn.execute("PRAGMA page_size").fetchone()[0]
        pages = conn.execute("PRAGMA page_count").fetchone()[0]
        free = conn.execute("PRAGMA freelist_count").fetchone()[0]
        parts: dict[str, int] = {}
        with contextlib.suppress(sqlite3.OperationalError):  # dbstat not compiled in
            for name, size in conn.execute(
                "SELECT name, sum(pgsize) FROM dbstat GROUP BY name ORDER BY 2 DESC"
            ):
                parts[name] = size
    total = (pages - free) * page
    return {"decisions": decisions, "bytes": total, "parts": parts, "file_bytes": pages * page}


def postgres_bytes(store: Store) -> dict[str, Any]:
    import psycopg

    with psycopg.connect(pg_conninfo(store.url), connect_timeout=5) as conn:
        decisions = conn.execute("SELECT count(*) FROM decision").fetchone()[0]
        rows = conn.execute(
            "SELECT c.relname, pg_table_size(c.oid), pg_indexes_size(c.oid) "
            "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE c.relkind = 'r' AND n.nspname = 'public' ORDER BY 1"
        ).fetchall()
    parts = {f"{name} (table)": t for name, t, _ in rows}
    parts |= {f"{name} (indexes)": i for name, _, i in rows}
    return {
        "decisions": decisions,
        "bytes": sum(t + i for _, t, i in rows),
        "parts": dict(sorted(parts.items(), key=lambda kv: -kv[1])),
    }


def measure(store: Store) -> dict[str, Any]:
    data = sqlite_bytes(store) if store.sqlite_path is not None else postgres_bytes(store)
    data["per_decision"] = data["bytes"] / data["decisions"] if data["decisions"] else None
    data["backend"] = store.label
    return data
