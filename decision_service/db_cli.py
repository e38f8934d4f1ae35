"""`decision-service db …`: the audit database's schema (Alembic migrations, run from code).

db upgrade             apply every pending migration (adopts a release 0.1.0 database)
db current             where the database stands against the code
db history             the migrations this code knows
db revision -m MSG     (developers) write the next migration from TABLES vs head
"""

from __future__ import annotations

import argparse
import dataclasses
import sys

import msgspec
import sqlalchemy as sa
from rich.console import Console
from rich.table import Table

from decision_service.settings import Settings
from decision_service.startup import StartupError, database_label, explain_database


def run(args: argparse.Namespace, settings: Settings) -> int:
    from decision_service.audit import make_engine, migrations

    if args.db_command == "history":
        return _history(args.format, migrations.history(), migrations.head())
    if args.db_command == "revision":
        path = migrations.revision(args.message)
        print(
            f"wrote {path}: review it, `uv run ruff format {path}`, then run "
            "tests/audit/test_migrations.py (SQLite and PostgreSQL)"
        )
        return 0
    url, label = settings.database_url, database_label(settings.database_url)
    try:
        engine = make_engine(url, writer=True, sqlite_synchronous=settings.sqlite_synchronous)
    except Exception as exc:
        raise explain_database(exc, url) from None
    try:
        if args.db_command == "current":
            status = migrations.status(engine)
            data = {"database": label, **dataclasses.asdict(status)}
            _emit(args.format, data, f"database {label}: {status.describe()}")
            return 0
        before, after = migrations.upgrade(engine)
    except migrations.SchemaError as exc:
        raise StartupError(f"database {label}: {exc}") from None
    except sa.exc.SQLAlchemyError as exc:
        raise explain_database(exc, url) from None
    finally:
        engine.dispose()
    if before.state == "current":
        text = f"database {label}: already at {after.current} (current)"
    else:
        text = f"database {label}: upgraded from {before.describe()} to {after.current}"
    _emit(
        args.format,
        {
            "database": label,
            "from": before.current,
            "from_state": before.state,
            "to": after.current,
        },
        text,
    )
    return 0


def _emit(fmt: str, data: dict[str, object], text: str) -> None:
    if fmt == "json":
        sys.stdout.write(msgspec.json.encode(data).decode() + "\n")
    else:
        print(text)


def _history(fmt: str, revisions: list[tuple[str, str | None, str]], head: str) -> int:
    if fmt == "json":
        rows = [{"revision": r, "down_revision": d, "doc": doc} for r, d, doc in revisions]
        sys.stdout.write(msgspec.json.encode({"head": head, "revisions": rows}).decode() + "\n")
        return 0
    table = Table(title="schema migrations")
    for column in ("revision", "after", "what"):
        table.add_column(column)
    for rev, down, doc in revisions:
        table.add_row(rev + (" (head)" if rev == head else ""), down or "-", doc)
    Console().print(table)
    return 0
