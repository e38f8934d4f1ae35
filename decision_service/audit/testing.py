"""Helpers for tests that need plausible decisions and requests (no model or rules needed)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import msgspec
import sqlalchemy as sa
import uuid_utils

from decision_service.audit.encoding import pack, unpack
from decision_service.audit.tables import decision_table
from decision_service.decision import (
    Decision,
    FiredRule,
    ModelRef,
    Reason,
    RulesetRef,
    Trace,
)

MODEL = ModelRef("underwriting", "1.0.0", "3f" * 32)
RULESET = RulesetRef("risk-appetite", "2026.11.0", "a7" * 32, "durable_rules")

_RULES = {
    "DTI-REFER": FiredRule(
        "DTI-REFER",
        50,
        "dti > 0.43 and pd > 0.08",
        {"dti": 0.51, "pd": 0.0912},
        {"outcome": "refer"},
    ),
    "PD-APPETITE": FiredRule("PD-APPETITE", 90, "pd > 0.25", {"pd": 0.31}, {"outcome": "decline"}),
    "KO-AGE": FiredRule("KO-AGE", 100, "age < 18", {"age": 17}, {"outcome": "decline"}),
    "LIMIT-BAND-C": FiredRule(
        "LIMIT-BAND-C",
        10,
        'risk_band == "C"',
        {"risk_band": "C"},
        {"max_amount": "min(requested_amount, annual_income * 0.25)"},
    ),
}


def sample_request(application_id: str = "APP-2026-000123", **fields: Any) -> bytes:
    """An application body as a client might send it (with spacing and a line break)."""
    body = {
        "application_id": application_id,
        "age": 41,
        "annual_income": 52000.0,
        "requested_amount": 12000.0,
        "dti": 0.31,
        "home": "rent",
        "employer": "Bäckerei Müller",
        **fields,
    }
    return msgspec.json.format(msgspec.json.encode(body), indent=1)


def sample_decision(
    *,
    application_id: str = "APP-2026-000123",
    outcome: str = "approve",
    pd: float = 0.0431,
    risk_band: str | None = "B",
    rules: list[str] | None = None,
    model: ModelRef = MODEL,
    ruleset: RulesetRef = RULESET,
    decided_at: datetime | str | None = None,
    decision_id: str | None = None,
    trace_id: str | None = "4bf92f3577b34da6a3ce929d0e0e4736",
) -> Decision:
    """A plausible decision; ``rules`` are ids of fired rules (known ids get realistic traces)."""
    fired = [
        _RULES.get(rule_id) or FiredRule(rule_id, 1, "true", {}, {}) for rule_id in rules or []
    ]
    if decided_at is None:
        decided_at = datetime.now(UTC)
    if isinstance(decided_at, datetime):
        decided_at = decided_at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    reasons = [Reason(f"RUL-{r.id}", "rule", f"rule {r.id} fired") for r in fired]
    if outcome != "approve":
        reasons.append(Reason("MDL-REVOL-UTIL", "model", "Revolving utilisation", 0.41))
    return Decision(
        decision_id=decision_id or str(uuid_utils.uuid7()),
        application_id=application_id,
        outcome=outcome,  # type: ignore[arg-type]
        approved_amount=12000.0 if outcome == "approve" else None,
        pd=pd,
        risk_band=risk_band,
        reasons=reasons,
        trace=Trace(
            model=model,
            ruleset=ruleset,
            rules_fired=fired,
            timings_us={"validate": 2, "score": 18, "rules": 60},
        ),
        decided_at=decided_at,
        trace_id=trace_id,
    )


def edit_record(
    engine: sa.Engine,
    *,
    request: Callable[[str], str] | None = None,
    decision: Callable[[str], str] | None = None,
    **where: Any,
) -> int:
    """Tamper as an attacker with SQL access would: rewrite the stored request and/or decision
    texts of the records matching ``where`` (column == value), packed as the store packs them.
    Returns how many records were rewritten."""
    table = decision_table
    clauses = [table.c[name] == value for name, value in where.items()]
    with engine.begin() as conn:
        rows = conn.execute(sa.select(table.c.decision_id, table.c.record).where(*clauses)).all()
        for decision_id, record in rows:
            request_json, decision_json = unpack(record)
            if request is not None:
                request_json = request(request_json)
            if decision is not None:
                decision_json = decision(decision_json)
            conn.execute(
                sa.update(table)
                .where(table.c.decision_id == decision_id)
                .values(record=pack(request_json, decision_json))
            )
    return len(rows)


def stored_texts(engine: sa.Engine) -> dict[str, tuple[str, str]]:
    """decision_id → (request_json, decision_json) of every stored record, unpacked."""
    table = decision_table
    with engine.connect() as conn:
        rows = conn.execute(sa.select(table.c.decision_id, table.c.record)).all()
    return {decision_id: unpack(record) for decision_id, record in rows}


def fail_head_updates(engine: sa.Engine) -> threading.Event:
    """From now on, every commit of `engine`'s writer fails late: at the chain-head update,
    when the batch's decisions (and any new fired sets) are already inserted. Clear the
    returned event to let commits through again."""
    failing = threading.Event()
    failing.set()

    @sa.event.listens_for(engine, "before_cursor_execute")
    def _explode(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if failing.is_set() and statement.startswith("UPDATE chain_head"):
            raise RuntimeError("disk on fire")

    return failing
