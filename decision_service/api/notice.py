"""GET /decisions/{decision_id}/notice: the adverse-action notice (auditor), JSON or HTML.

It reads personal data: the read is recorded in access_log (who, which decision) and committed
before the notice is answered; 503 if it cannot be recorded.
"""

from __future__ import annotations

import html
import re
from typing import Any, Literal

import msgspec
import sqlalchemy as sa
from litestar import Request, Response, get
from litestar.params import FromPath, FromQuery

from decision_service.adverse_action import LenderBook, NoAdverseAction, Notice, build_notice
from decision_service.api.actor import actor_name
from decision_service.api.errors import error, json_response
from decision_service.api.openapi import alternatives_operation, html_page
from decision_service.api.responses import (
    AUDIT_UNAVAILABLE,
    BAD_PARAMETER,
    SECURED,
    gated,
    ok,
    problem,
)
from decision_service.audit import AuditStore, AuditUnavailable
from decision_service.audit.queries import DECISION_ID_PATTERN

ROUTE = "GET /decisions/{decision_id}/notice"
_is_decision_id = re.compile(DECISION_ID_PATTERN).match


def _money(value: float | None) -> str:
    return "" if value is None else f"{value:,.2f}"


def render_notice_html(notice: Notice) -> str:
    esc = html.escape
    lender = notice.lender
    reasons = "".join(f"<li>{esc(r.text)}</li>" for r in notice.reasons)
    offer = ""
    if notice.action == "reduced":
        offer = (
            f"<p>You asked for {_money(notice.requested_amount)}; we can offer "
            f"{_money(notice.offered_amount)}.</p>"
        )
    paragraphs = "".join(
        f"<p>{esc(' '.join(text.split()))}</p>"
        for text in (lender.rights, lender.credit_report)
        if text.strip()
    )
    return (
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>"
        f"<title>Notice of action taken — {esc(notice.application_id)}</title>"
        "<style>body{font-family:serif;max-width:40em;margin:2em auto;line-height:1.4}</style>"
        f"</head><body><p><strong>{esc(lender.name)}</strong><br>{esc(lender.address)}<br>"
        f"{esc(lender.contact)}</p>"
        f"<h1>Notice of action taken on your application</h1>"
        f"<p>Application {esc(notice.application_id)}, decided {esc(notice.decided_at)}.</p>"
        f"<p>{esc(notice.statement)}</p>{offer}"
        f"<h2>Principal reasons</h2><ol>{reasons}</ol>{paragraphs}"
        f"<p><small>Reference: decision {esc(notice.decision_id)}</small></p></body></html>\n"
    )


def notice_handlers(store: AuditStore, lenders: LenderBook) -> list[Any]:
    @get(
        "/decisions/{decision_id:str}/notice",
        tags=["audit"],
        summary="Adverse-action notice: principal reasons in plain language (JSON or HTML)",
        opt={"roles": ["auditor"]},  # and admin
        security=SECURED,
        responses=gated(
            {
                200: ok(Notice, "The notice (HTML with `format=html` or `Accept: text/html`)"),
                400: BAD_PARAMETER,
                404: problem(404, "No such decision", "no decision 0193…"),
                409: problem(409, "A full approval has no adverse action", "approved in full"),
                503: AUDIT_UNAVAILABLE,
            }
        ),
        operation_class=alternatives_operation(
            {200: html_page("<!doctype html><html lang='en'>… Notice of action taken …</html>")}
        ),
    )
    async def notice(
        request: Request,
        decision_id: FromPath[str],
        lender: FromQuery[str | None] = None,
        format: FromQuery[Literal["json", "html"] | None] = None,
    ) -> Response:
        try:
            chosen = lenders.get(lender)
        except KeyError as exc:
            return error(400, str(exc.args[0]))
        try:
            stored = await store.get(decision_id) if _is_decision_id(decision_id) else None
        except (AuditUnavailable, sa.exc.SQLAlchemyError):
            return error(503, "audit store unavailable", kind="audit-unavailable")
        filters = {"decision_id": decision_id, "lender": lender, "format": format}
        try:
            returned = 0 if stored is None else 1
            await store.record_access(actor_name(request), ROUTE, filters, returned)
        except AuditUnavailable as exc:  # a problem, as on every route (it was plain JSON)
            detail = f"the read could not be recorded: {exc}"
            return error(503, detail, {"retry-after": "1"}, kind="audit-unavailable")
        if stored is None:
            return error(404, f"no decision {decision_id}")
        decode = msgspec.json.decode
        try:
            built = build_notice(decode(stored.request_json), decode(stored.decision_json), chosen)
        except NoAdverseAction as exc:
            return error(409, str(exc), decision_id=decision_id)
        wants_html = format == "html" or (
            format is None and "text/html" in request.headers.get("accept", "")
        )
        if wants_html:
            return Response(render_notice_html(built), media_type="text/html")
        return json_response(built)

    return [notice]
