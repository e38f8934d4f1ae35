"""Schema migrations (Alembic), run from code: no alembic.ini, ``script_location`` is this folder.

    status(engine)    # SchemaStatus: empty | release (0.1.0, unversioned) | behind | current | ...
    upgrade(engine)   # empty: create; release 0.1.0: adopt (stamp 0001 if tables match); up
    history()         # the revisions, oldest first
    revision(msg)     # write the next migration from what TABLES has and head lacks (autogenerate)

A database already at the code's head is recognised by one query on ``alembic_version``
without importing Alembic (a third of a CLI command's start-up CPU); anything else goes to
``runner``, the Alembic side.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    import sqlalchemy as sa

VERSIONS = Path(__file__).parent / "versions"

State = Literal["empty", "release", "behind", "current", "ahead", "foreign"]


class SchemaError(Exception):
    """The database's schema cannot be brought to the code's (unknown or newer revision)."""


@dataclass(frozen=True)
class SchemaStatus:
    state: State
    current: str | None  # the database's revision (None: no alembic_version)
    head: str  # the code's revision

    def describe(self) -> str:
        return {
            "empty": f"empty (no audit tables); code needs {self.head}",
            "release": f"release 0.1.0 schema (unversioned); code needs {self.head}",
            "behind": f"at {self.current}; code needs {self.head}",
            "current": f"at {self.current} (current)",
            "ahead": f"at {self.current}, newer than this code ({self.head})",
            "foreign": (
                "has audit tables that are not any known schema (no alembic_version); "
                f"code needs {self.head}"
            ),
        }[self.state]


def _version_files() -> list[Path]:
    """The migration files, oldest first: each is named after its revision number (``0001``,
    ``0002``…; ``revision`` writes them so)."""
    return sorted(VERSIONS.glob("[0-9][0-9][0-9][0-9]_*.py"))


def head() -> str:
    """The newest revision, from the file names (a test checks this equals Alembic's head)."""
    return _version_files()[-1].name[:4]


def _current_fast(engine: sa.Engine) -> SchemaStatus | None:
    """The database's status if it is simply current; None when only Alembic can tell."""
    import sqlalchemy as sa

    code_head = head()
    try:
        with engine.connect() as conn:
            rows = conn.execute(sa.text("SELECT version_num FROM alembic_version")).all()
            conn.rollback()
    except sa.exc.DBAPIError:  # no alembic_version table (empty, release 0.1.0, foreign)
        return None
    if [tuple(r) for r in rows] == [(code_head,)]:
        return SchemaStatus("current", code_head, code_head)
    return None


def status(engine: sa.Engine) -> SchemaStatus:
    fast = _current_fast(engine)
    if fast is not None:
        return fast
    from decision_service.audit.migrations import runner

    return runner.status(engine)


def upgrade(engine: sa.Engine, target: str = "head") -> tuple[SchemaStatus, SchemaStatus]:
    """Migrate to ``target``; returns the status before and after. Raises SchemaError for a
    database this code cannot migrate (a newer revision, or tables of no known schema)."""
    fast = _current_fast(engine) if target == "head" else None
    if fast is not None:
        return fast, fast
    from decision_service.audit.migrations import runner

    return runner.upgrade(engine, target)


def history() -> list[tuple[str, str | None, str]]:
    """(revision, down_revision, first line of its docstring), oldest first: read from the
    files' literals, as Alembic reads them (a test compares the two), without importing it."""
    out = []
    for path in _version_files():
        module = ast.parse(path.read_text(encoding="utf-8"))
        names = {
            t.id: node.value
            for node in module.body
            if isinstance(node, ast.Assign)
            for t in node.targets
            if isinstance(t, ast.Name)
        }
        doc = (ast.get_docstring(module) or "").splitlines()
        revision = ast.literal_eval(names["revision"])
        out.append((revision, ast.literal_eval(names["down_revision"]), doc[0] if doc else ""))
    return out


def revision(message: str) -> Path:
    """Write the next migration (see ``runner.revision``)."""
    from decision_service.audit.migrations import runner

    return runner.revision(message)
