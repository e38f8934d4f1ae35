"""From (request, Decision) to the columns of one audit record (without its chain fields)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import msgspec

from decision_service.audit.encoding import CorruptRecord, pack, unpack
from decision_service.decision import Decision

_encoder = msgspec.json.Encoder()


def parse_time(value: str | datetime) -> datetime:
    """An RFC 3339 string or datetime → aware UTC datetime (naive means UTC)."""
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def request_text(request: bytes | bytearray | memoryview | str) -> str:
    """The request body as stored: the exact text received (it must be UTF-8 JSON)."""
    if isinstance(request, str):
        return request
    return bytes(request).decode("utf-8")


def record_columns(
    request: bytes | bytearray | memoryview | str, decision: Decision, code_version: str
) -> tuple[dict[str, Any], list[str]]:
    """The columns of one decision, and the ids of the rules it fired (deduplicated).

    ``request_json`` and ``decision_json`` are what the chain MACs; ``record`` (both, packed)
    is what is stored."""
    trace = decision.trace
    model, ruleset = trace.model, trace.ruleset
    columns = {
        "decision_id": decision.decision_id,
        "decided_at": parse_time(decision.decided_at),
        "application_id": decision.application_id,
        "outcome": decision.outcome,
        "pd": float(decision.pd),
        "risk_band": decision.risk_band,
        "approved_amount": (
            None if decision.approved_amount is None else float(decision.approved_amount)
        ),
        "model_name": model.name,
        "model_version": model.version,
        "model_sha256": model.sha256,
        "ruleset_name": ruleset.name,
        "ruleset_version": ruleset.version,
        "ruleset_sha256": ruleset.sha256,
        "engine": ruleset.engine,
        "code_version": code_version,
        "trace_id": decision.trace_id,
        "request_json": request_text(request),
        "decision_json": _encoder.encode(decision).decode("utf-8"),
    }
    columns["record"] = pack(columns["request_json"], columns["decision_json"])
    rules = list(dict.fromkeys(rule.id for rule in trace.rules_fired))
    return columns, rules


def expand(row: Mapping[str, Any], *, lenient: bool = False) -> dict[str, Any]:
    """A stored decision row with its ``record`` unpacked into ``request_json`` and
    ``decision_json`` (what the chain MACs and readers show). ``lenient``: a record that does
    not unpack reads as two empty texts (verify names the record) instead of raising."""
    values = dict(row)
    try:
        values["request_json"], values["decision_json"] = unpack(values.pop("record"))
    except CorruptRecord:
        if not lenient:
            raise
        values["request_json"] = values["decision_json"] = ""
    return values


class _RuleId(msgspec.Struct):
    id: str


class _TraceRules(msgspec.Struct):
    rules_fired: list[_RuleId]


class _ReasonCode(msgspec.Struct):
    code: str


class _Fired(msgspec.Struct):
    trace: _TraceRules
    reasons: list[_ReasonCode]


_fired_decoder = msgspec.json.Decoder(_Fired)


def fired_rule_ids(decision_json: str | bytes) -> list[str]:
    """Ids of the rules a stored decision fired, in firing order."""
    return [rule.id for rule in _fired_decoder.decode(decision_json).trace.rules_fired]


def reason_codes(decision_json: str | bytes) -> list[str]:
    return [reason.code for reason in _fired_decoder.decode(decision_json).reasons]
