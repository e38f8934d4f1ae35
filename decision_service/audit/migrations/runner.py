"""The Alembic side of the migrations (imported only when a database is not simply current).

Every command runs on one connection in one transaction that first takes a lock (PostgreSQL: an
advisory lock; SQLite: the writer engine's BEGIN IMMEDIATE), so workers and replicas starting
together migrate once. Pass the writer engine (``make_engine(url, writer=True)``) on SQLite.
"""

from __future__ import annotations

import logging
import re
import tempfile
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from decision_service.audit.migrations import SchemaError, SchemaStatus, State

# Quiet before alembic is imported: it logs its plugin setup (and "Context impl …") at info.
logging.getLogger("alembic").setLevel(logging.WARNING)

from alembic import command  # noqa: E402
from alembic.autogenerate import compare_metadata  # noqa: E402
from alembic.config import Config  # noqa: E402
from alembic.runtime.migration import MigrationContext  # noqa: E402
from alembic.script import ScriptDirectory  # noqa: E402

HERE = Path(__file__).parent
ADOPTED = "0001"  # the revision whose schema release 0.1.0 created without Alembic
_LOCK_KEY = 0x6465636973696F6E  # "decision": the advisory lock every migration takes


def _config(connection: sa.Connection | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(HERE))
    config.set_main_option("version_path_separator", "os")
    config.attributes["connection"] = connection
    return config


def _script() -> ScriptDirectory:
    return ScriptDirectory.from_config(_config())


def head() -> str:
    rev = _script().get_current_head()
    assert rev is not None
    return rev


def _release_metadata() -> sa.MetaData:
    script = _script().get_revision(ADOPTED)
    assert script is not None
    return script.module.release_metadata()


def release_differences(conn: sa.Connection) -> list[Any]:
    """How the database's tables differ from release 0.1.0's (only those tables count)."""
    release = _release_metadata()
    context = MigrationContext.configure(conn, opts={"compare_type": True})
    diffs = compare_metadata(context, release)
    return [
        d
        for d in diffs
        if not (isinstance(d, tuple) and d[0] == "remove_table" and d[1].name not in release.tables)
    ]


def _status(conn: sa.Connection) -> SchemaStatus:
    code_head = head()
    current = MigrationContext.configure(conn).get_current_revision()
    if current is None:
        tables = set(sa.inspect(conn).get_table_names())
        if not tables & set(_release_metadata().tables):
            return SchemaStatus("empty", None, code_head)
        state: State = "foreign" if release_differences(conn) else "release"
        return SchemaStatus(state, None, code_head)
    if current == code_head:
        return SchemaStatus("current", current, code_head)
    known = {r.revision for r in _script().walk_revisions()}
    return SchemaStatus("behind" if current in known else "ahead", current, code_head)


def status(engine: sa.Engine) -> SchemaStatus:
    with engine.connect() as conn:
        result = _status(conn)
        conn.rollback()
    return result


def _lock(conn: sa.Connection) -> None:
    if conn.dialect.name == "postgresql":
        conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": _LOCK_KEY})


def upgrade(engine: sa.Engine, target: str = "head") -> tuple[SchemaStatus, SchemaStatus]:
    """Migrate to ``target``; returns the status before and after. Raises SchemaError for a
    database this code cannot migrate (a newer revision, or tables of no known schema)."""
    with engine.begin() as conn:
        _lock(conn)
        before = _status(conn)
        if before.state == "ahead":
            raise SchemaError(f"database schema {before.describe()}: use a newer release")
        if before.state == "foreign":
            raise SchemaError(f"database {before.describe()}; refusing to adopt it")
        if before.state != "current":
            config = _config(conn)
            if before.state == "release":
                command.stamp(config, ADOPTED)
            command.upgrade(config, target)
        after = _status(conn)
    return before, after


def revision(message: str) -> Path:
    """Write the next migration: what ``TABLES`` has that head lacks (compared on a scratch
    SQLite database upgraded to head). Review it, then test it on PostgreSQL too."""
    from decision_service.audit.engine import make_engine

    slug = re.sub(r"[^a-z0-9]+", "_", message.lower()).strip("_")[:40]
    next_id = f"{int(head()) + 1:04d}"
    with tempfile.TemporaryDirectory() as tmp:
        engine = make_engine(f"sqlite:///{tmp}/head.db", writer=True)
        try:
            upgrade(engine)
            with engine.begin() as conn:
                script = command.revision(
                    _config(conn), message=message, autogenerate=True, rev_id=next_id
                )
        finally:
            engine.dispose()
    assert script is not None and not isinstance(script, list)
    path = Path(script.path)
    final = path.with_name(f"{next_id}_{slug}.py")
    path.rename(final)
    return final
