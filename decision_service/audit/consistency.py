"""One record, one truth: a decision's indexed columns must say what its decision JSON says.

Each record keeps the decision twice: the JSON exactly as answered (the truth, what replay and
exports read) and a few columns copied from it so auditors' filters can use indexes. The copies
are checked here, by ``audit verify`` and by replay, so a column edited on its own (which would
hide a decision from a filter or change a report) is named, never trusted.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

import msgspec

from decision_service.audit.records import parse_time


class _Model(msgspec.Struct):
    name: str
    version: str
    sha256: str


class _Ruleset(msgspec.Struct):
    name: str
    version: str
    sha256: str
    engine: str


class _Trace(msgspec.Struct):
    model: _Model
    ruleset: _Ruleset


class _Indexed(msgspec.Struct):
    decision_id: str
    application_id: str
    outcome: str
    pd: float
    trace: _Trace
    decided_at: str
    approved_amount: float | None = None
    risk_band: str | None = None
    trace_id: str | None = None


_decoder = msgspec.json.Decoder(_Indexed)


def indexed_values(decision_json: str | bytes) -> dict[str, Any]:
    """The indexed columns as the decision JSON has them (what exports and reports show)."""
    d = _decoder.decode(decision_json)
    model, ruleset = d.trace.model, d.trace.ruleset
    return {
        "decision_id": d.decision_id,
        "decided_at": parse_time(d.decided_at),
        "application_id": d.application_id,
        "outcome": d.outcome,
        "pd": d.pd,
        "risk_band": d.risk_band,
        "approved_amount": d.approved_amount,
        "model_name": model.name,
        "model_version": model.version,
        "model_sha256": model.sha256,
        "ruleset_name": ruleset.name,
        "ruleset_version": ruleset.version,
        "ruleset_sha256": ruleset.sha256,
        "engine": ruleset.engine,
        "trace_id": d.trace_id,
    }


def disagreements(
    row: Mapping[str, Any], truth: Mapping[str, Any] | None = None
) -> list[tuple[str, Any, Any]]:
    """(column, column value, true value) for every indexed column that differs from
    ``truth`` (default: the record's own decision JSON)."""
    if truth is None:
        try:
            truth = indexed_values(row["decision_json"])
        except (msgspec.DecodeError, ValueError) as exc:
            return [("decision_json", None, f"unreadable: {exc}")]
    out: list[tuple[str, Any, Any]] = []
    for name, expected in truth.items():
        value = row[name]
        if isinstance(value, str) and isinstance(expected, datetime):
            value = parse_time(value)
        if value != expected:
            out.append((name, _plain(value), _plain(expected)))
    return out


def describe(row: Mapping[str, Any]) -> str | None:
    """One line naming every column that disagrees with the decision JSON, or None."""
    found = disagreements(row)
    if not found:
        return None
    parts = [f"{name}: column {value!r}, decision JSON {truth!r}" for name, value, truth in found]
    return "indexed columns disagree with the stored decision: " + "; ".join(parts)


def _plain(value: Any) -> Any:
    return value.isoformat() if isinstance(value, datetime) else value
