"""GET /challengers/{name}/report: champion vs challenger on live traffic (JSON or HTML)."""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Annotated, Any, Literal

import sqlalchemy as sa
from litestar import Response, get
from litestar.params import FromPath, FromQuery, QueryParameter

from decision_service.api.errors import error
from decision_service.api.openapi import alternatives_operation, html_page
from decision_service.api.responses import BAD_PARAMETER, SECURED, gated, ok, problem
from decision_service.challengers import report as challenger_report
from decision_service.challengers.report import ChallengerReport


def challenger_handlers(engine: sa.Engine) -> list[Any]:
    @get(
        "/challengers/{name:str}/report",
        tags=["rules"],
        summary="Champion vs challenger on the same live traffic",
        opt={"roles": ["analyst"]},
        security=SECURED,
        responses=gated(
            {
                200: ok(ChallengerReport, "Agreement, flips, KPIs (`format=html`: a page)"),
                400: BAD_PARAMETER,
                404: problem(404, "No results for that challenger", "no challenger x"),
                503: problem(503, "The audit store cannot be read", "audit store unavailable"),
            }
        ),
        operation_class=alternatives_operation(
            {200: html_page("<!doctype html><html>… champion vs challenger …</html>")}
        ),
    )
    async def report(
        name: FromPath[str],
        from_: Annotated[datetime | None, QueryParameter(name="from")] = None,
        to: FromQuery[datetime | None] = None,
        format: FromQuery[Literal["json", "html"]] = "json",
    ) -> Response:
        if len(name) > 128:
            return error(404, "no such challenger")
        try:
            rep = await asyncio.to_thread(challenger_report.report, engine, name, from_, to)
        except sa.exc.SQLAlchemyError:
            return error(503, "audit store unavailable: no challenger report")
        if rep.decisions == 0 and rep.errors == 0:
            return error(404, f"no results recorded for challenger {name!r}")
        if format == "html":
            return Response(challenger_report.render_html(rep), media_type="text/html")
        return Response(challenger_report.to_json(rep), media_type="application/json")

    return [report]
