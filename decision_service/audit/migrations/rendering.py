"""How autogenerate writes our column types into a migration: plain SQLAlchemy types only, so a
migration never imports application code (which changes after the migration is written)."""

from __future__ import annotations

from typing import Any

from sqlmodel.sql.sqltypes import AutoString

from decision_service.audit.tables import UTCDateTime


def render_item(kind: str, obj: Any, _autogen_context: Any) -> str | bool:
    if kind != "type":
        return False
    if isinstance(obj, AutoString):
        return f"sa.String(length={obj.length})" if obj.length else "sa.String()"
    if isinstance(obj, UTCDateTime):
        return "sa.DateTime(timezone=True)"
    return False  # alembic's own rendering
