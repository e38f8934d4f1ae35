"""Auditors' endpoints: find decisions, read them exactly as stored, replay, verify the chain.

Every read of personal data is recorded in ``access_log`` (who, route, filters, how many
records) and committed BEFORE the data is answered: if it cannot be recorded, 503.
"""

from __future__ import annotations

import asyncio
import re
from datetime import datetime
from typing import Annotated, Any, Literal

import msgspec
from litestar import Request, Response, get, post
from litestar.params import FromPath, FromQuery, QueryParameter

from decision_service.api.actor import actor_name
from decision_service.api.errors import error, json_response
from decision_service.api.responses import (
    AUDIT_UNAVAILABLE,
    BAD_PARAMETER,
    SECURED,
    UNSUPPORTED,
    DecisionPage,
    RecordView,
    gated,
    ok,
    problem,
)
from decision_service.audit import AuditUnavailable, Filters, InvalidCursor, StoredDecision
from decision_service.audit.chain import VerifyReport
from decision_service.audit.queries import DECISION_ID_PATTERN, MAX_LIMIT
from decision_service.challengers.stored import results_for
from decision_service.challengers.stored import view as challenger_view
from decision_service.dates import EXPECTED, InvalidDate, parse_instant
from decision_service.replay import Replayer, ReplayError, ReplayResult
from decision_service.service import Service

AUDITOR = {"roles": ["auditor"]}  # personal data: auditors (and admin) only
_NOT_FOUND = problem(404, "No stored decision has this id", "no decision 0193…")
_BAD_PATH = problem(
    400, "A path parameter is invalid", "invalid parameter decision_id: …", kind="invalid-parameter"
)
RECORD = gated(
    {
        200: ok(RecordView, "The stored record (decision as answered, request as received)"),
        404: _NOT_FOUND,
        400: _BAD_PATH,
        503: AUDIT_UNAVAILABLE,
    }
)
PAGE = gated(
    {
        200: ok(DecisionPage, "Records in decision order; next_cursor is null on the last page"),
        400: BAD_PARAMETER,
        503: AUDIT_UNAVAILABLE,
    }
)
REPLAYED = gated(
    {
        200: ok(ReplayResult, "The re-decision compared with the record, field by field"),
        404: _NOT_FOUND,
        409: problem(
            409,
            "The recorded model or ruleset version cannot be loaded",
            "cannot replay: model 0.9.0 is not in models/",
        ),
        415: UNSUPPORTED,
        400: _BAD_PATH,
        503: AUDIT_UNAVAILABLE,
    }
)
VERIFIED = gated(
    {
        200: ok(VerifyReport, "Every chain walked; problems name the first break"),
        400: BAD_PARAMETER,  # `incremental` must be a boolean
        503: AUDIT_UNAVAILABLE,
    }
)
_RECORD_FIELDS = ("chain_id", "seq", "prev_hash", "record_hash", "code_version")
_is_decision_id = re.compile(DECISION_ID_PATTERN).match
DATE_HELP = f"{EXPECTED[len('expected ') :]}; naive times are UTC"
_AT = re.compile(r"at `\$\.([a-z_]+)`")


def _query_name(exc: msgspec.ValidationError) -> str:
    """The query parameter a Filters error names (msgspec says `$.field`)."""
    found = _AT.search(str(exc))
    return found.group(1) if found else "filter"


def record_view(stored: StoredDecision) -> dict[str, Any]:
    """The stored record: the decision and the request byte for byte, and its chain links."""
    return {
        "decision": msgspec.Raw(stored.decision_json.encode()),
        "request": msgspec.Raw(stored.request_json.encode()),
        "record": {name: getattr(stored, name) for name in _RECORD_FIELDS},
    }


def decision_handlers(service: Service, replayer: Replayer) -> list[Any]:
    store = service.store

    async def accessed(
        request: Request, route: str, filters: dict[str, Any], returned: int
    ) -> Response | None:
        """Record the read; a 503 to answer instead if it cannot be recorded."""
        try:
            await store.record_access(actor_name(request), route, filters, returned)
        except AuditUnavailable as exc:
            return error(
                503,
                f"the read could not be recorded: {exc}",
                {"retry-after": "1"},
                kind="audit-unavailable",
            )
        return None

    async def read_one(request: Request, route: str, decision_id: str) -> StoredDecision | Response:
        """The stored decision, its read recorded first; else the 503 or 404 to answer."""
        stored = await store.get(decision_id) if _is_decision_id(decision_id) else None
        refused = await accessed(
            request,
            route,
            {"decision_id": decision_id},
            0 if stored is None else 1,
        )
        if refused is not None:
            return refused
        if stored is None:
            return error(404, f"no decision {decision_id}")
        return stored

    @get(
        "/decisions/{decision_id:str}",
        tags=["audit"],
        summary="One stored decision",
        opt=AUDITOR,
        security=SECURED,
        responses=RECORD,
    )
    async def get_decision(request: Request, decision_id: FromPath[str]) -> Response:
        stored = await read_one(request, "GET /decisions/{decision_id}", decision_id)
        if isinstance(stored, Response):
            return stored
        view = record_view(stored)
        try:  # what the challengers would have decided (recorded, never answered)
            rows = await asyncio.to_thread(results_for, store.reader, decision_id)
        except Exception as exc:
            return error(503, f"audit store unavailable: {exc}", kind="audit-unavailable")
        view["challengers"] = [challenger_view(r) for r in rows]
        return json_response(view)

    @get(
        "/decisions",
        tags=["audit"],
        summary="Find decisions (filters, cursor pagination)",
        opt=AUDITOR,
        security=SECURED,
        responses=PAGE,
    )
    async def list_decisions(
        request: Request,
        from_: Annotated[str | None, QueryParameter(name="from", description=DATE_HELP)] = None,
        to: Annotated[str | None, QueryParameter(description=DATE_HELP)] = None,
        application_id: FromQuery[str | None] = None,
        outcome: FromQuery[Literal["approve", "refer", "decline"] | None] = None,
        rule: FromQuery[str | None] = None,
        model_version: FromQuery[str | None] = None,
        ruleset_version: FromQuery[str | None] = None,
        limit: Annotated[int, QueryParameter(ge=1, le=MAX_LIMIT)] = 100,
        cursor: FromQuery[str | None] = None,
    ) -> Response:
        bad = []
        dates: dict[str, datetime | None] = {"from": None, "to": None}
        for name, text in (("from", from_), ("to", to)):
            try:
                dates[name] = None if text is None else parse_instant(text)
            except InvalidDate as exc:
                bad.append({"field": name, "message": str(exc)})
        if bad:
            detail = "invalid filter " + "; ".join(f"{e['field']}: {e['message']}" for e in bad)
            return error(400, detail, kind="invalid-parameter", errors=bad)
        try:
            filters = msgspec.convert(
                {
                    "from": dates["from"],
                    "to": dates["to"],
                    "application_id": application_id,
                    "outcome": outcome,
                    "rule": rule,
                    "model_version": model_version,
                    "ruleset_version": ruleset_version,
                },
                Filters,
                from_attributes=False,
            )
        except msgspec.ValidationError as exc:
            field = _query_name(exc)
            return error(
                400,
                f"invalid filter {field}: {exc}",
                kind="invalid-parameter",
                errors=[{"field": field, "message": str(exc).split(" - at ")[0]}],
            )
        try:
            found = await store.page(filters, limit=limit, cursor=cursor)
        except InvalidCursor as exc:
            return error(
                400,
                str(exc),
                kind="invalid-parameter",
                errors=[{"field": "cursor", "message": str(exc)}],
            )
        query = msgspec.to_builtins(filters) | {"limit": limit, "cursor": cursor}
        refused = await accessed(request, "GET /decisions", query, len(found.items))
        if refused is not None:
            return refused
        return json_response(
            {"items": [record_view(s) for s in found.items], "next_cursor": found.next_cursor}
        )

    @post(
        "/decisions/{decision_id:str}/replay",
        tags=["audit"],
        status_code=200,
        summary="Re-decide with the recorded model and ruleset versions",
        opt=AUDITOR,
        security=SECURED,
        responses=REPLAYED,
    )
    async def replay(request: Request, decision_id: FromPath[str]) -> Response:
        stored = await read_one(request, "POST /decisions/{decision_id}/replay", decision_id)
        if isinstance(stored, Response):
            return stored
        try:
            result = await asyncio.to_thread(replayer.replay, stored)
        except ReplayError as exc:
            return error(409, f"cannot replay: {exc}")
        return json_response(result)

    @get(
        "/audit/verify",
        tags=["audit"],
        summary="Check every chain against the audit key and the signed checkpoints",
        description="Runs in a child process at low CPU priority, one at a time per worker: "
        "callers arriving while one runs share its report. `incremental=true` checks each "
        "chain only from the last verify that passed.",
        opt=AUDITOR,
        security=SECURED,
        responses=VERIFIED,
    )
    async def verify(incremental: FromQuery[bool] = False) -> Response:
        try:
            report = await store.verify(incremental=incremental)
        except AuditUnavailable as exc:
            return error(503, str(exc), {"retry-after": "5"}, kind="audit-unavailable")
        return json_response(report)

    return [get_decision, list_decisions, replay, verify]
