"""The decision: what /decide answers and what the audit store keeps (with the request)."""

from __future__ import annotations

from typing import Any, Literal, get_args

import msgspec

Outcome = Literal["approve", "refer", "decline"]
OUTCOMES: tuple[str, ...] = get_args(Outcome)  # in order of severity


class Reason(msgspec.Struct, frozen=True, omit_defaults=True):
    code: str
    source: Literal["rule", "model"]
    text: str
    contribution: float | None = None  # SHAP contribution (log-odds) for model reasons


class ModelRef(msgspec.Struct, frozen=True):
    name: str
    version: str
    sha256: str


class RulesetRef(msgspec.Struct, frozen=True):
    name: str
    version: str
    sha256: str
    engine: str


class FiredRule(msgspec.Struct, frozen=True):
    id: str
    priority: int
    when: str
    values: dict[str, Any]  # every field the condition read, as it saw it (None = missing)
    then: dict[str, Any]


class Trace(msgspec.Struct):
    model: ModelRef
    ruleset: RulesetRef
    rules_fired: list[FiredRule]
    timings_us: dict[str, int]


class Decision(msgspec.Struct):
    decision_id: str
    application_id: str
    outcome: Outcome
    approved_amount: float | None
    pd: float
    risk_band: str | None
    reasons: list[Reason]
    trace: Trace
    decided_at: str  # RFC 3339, UTC, microseconds
    trace_id: str | None = None
