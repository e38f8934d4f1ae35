"""Writing rows: fixed statements straight to the driver (many rows at once), inserts that skip
a key already there; and the ruleset texts."""

from __future__ import annotations

import contextlib
import functools
import importlib
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from decision_service.audit.tables import ruleset_text_table


@functools.cache
def _plan(
    dialect: sa.Dialect, statement: sa.Executable
) -> tuple[str, list[tuple[str, Callable[[Any], Any] | None]], bool]:
    """The statement's SQL for this dialect, its parameters in order with their types' bind
    processors, and whether the driver takes them positionally."""
    compiled = statement.compile(dialect=dialect)
    names = list(compiled.positiontup or []) if compiled.positional else list(compiled.params)
    columns = [(name, compiled.binds[name].type.bind_processor(dialect)) for name in names]
    return str(compiled), columns, compiled.positional


@functools.cache
def _insert(table: sa.Table) -> sa.Insert:
    return sa.insert(table)


def driver_execute(
    conn: sa.Connection, statement: sa.Executable, rows: list[dict[str, Any]]
) -> None:
    """``statement`` (a fixed, module-level one: plans are kept per statement) for each row,
    straight to the driver: executemany, or execute for one row. SQLAlchemy's own parameter
    handling cost more than the statement itself (an insert: ~55 µs of ~80 µs per record; the
    writer's chain-head update: ~40% of a one-record commit); the parameters' own bind
    processors still run, so what is stored is exactly what ``conn.execute`` stores."""
    sql, columns, positional = _plan(conn.dialect, statement)
    if positional:
        params: list[Any] = [
            tuple(row[n] if p is None else p(row[n]) for n, p in columns) for row in rows
        ]
    else:
        params = [{n: row[n] if p is None else p(row[n]) for n, p in columns} for row in rows]
    conn.exec_driver_sql(sql, params[0] if len(params) == 1 else params)


def bulk_insert(conn: sa.Connection, table: sa.Table, rows: list[dict[str, Any]]) -> None:
    """The rows into ``table``, in one executemany straight to the driver (driver_execute)."""
    driver_execute(conn, _insert(table), rows)


def insert_or_skip(conn: sa.Connection, table: sa.Table, key: list[str]) -> Any:
    """An INSERT that does nothing when a row with the same `key` exists (ON CONFLICT DO
    NOTHING: SQLite and PostgreSQL). The dialect's own INSERT is imported here, on use: the
    PostgreSQL dialect would cost a CLI command on SQLite ~30 ms of start-up."""
    dialect = importlib.import_module(f"sqlalchemy.dialects.{conn.dialect.name}")
    return dialect.insert(table).on_conflict_do_nothing(index_elements=key)


def remember_ruleset(engine: sa.Engine, sha256: str, name: str, version: str, text: str) -> None:
    """Insert a ruleset text if its sha256 is not stored yet (safe against a concurrent insert)."""
    table = ruleset_text_table
    row = {
        "sha256": sha256,
        "name": name,
        "version": version,
        "text": text,
        "first_seen": datetime.now(UTC),
    }
    with contextlib.suppress(sa.exc.IntegrityError), engine.begin() as conn:
        if conn.execute(sa.select(table.c.sha256).where(table.c.sha256 == sha256)).first():
            return
        conn.execute(sa.insert(table), [row])
