"""Reading the challenger results recorded with a decision (audit views and replay)."""

from __future__ import annotations

from typing import Any

import msgspec
import sqlalchemy as sa

from decision_service.audit.tables import challenger_result_table

_SHOWN = (
    "challenger",
    "version",
    "ruleset_sha256",
    "engine",
    "model_version",
    "model_sha256",
    "outcome",
    "approved_amount",
    "risk_band",
    "pd",
    "error",
)


def results_for(engine: sa.Engine, decision_id: str) -> list[dict[str, Any]]:
    """The stored rows of one decision (every column), by challenger name."""
    t = challenger_result_table
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(t).where(t.c.decision_id == decision_id).order_by(t.c.challenger)
        ).mappings()
        return [dict(r) for r in rows]


def view(row: dict[str, Any]) -> dict[str, Any]:
    """A row as the audit API shows it: fired ids and reason codes as lists."""
    out = {name: row[name] for name in _SHOWN}
    out["fired"] = msgspec.json.decode(row["fired_json"])
    out["reasons"] = msgspec.json.decode(row["reasons_json"])
    return out
