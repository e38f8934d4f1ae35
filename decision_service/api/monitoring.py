"""GET /monitoring/drift: PSI of every feature, pd and the outcome mix over a window.

Analysts (who own the model's monitoring) and auditors (fair lending, model risk) may read it,
admin as always; it shows aggregates only (PSI, shares), never an application, so it is not an
access_log read. Not public like /metrics: the feature distributions are the lender's business.
"""

from __future__ import annotations

import asyncio
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Literal

import sqlalchemy as sa
from litestar import Response, get
from litestar.params import FromQuery, QueryParameter

from decision_service.api.errors import error, json_response
from decision_service.api.openapi import alternatives_operation, html_page
from decision_service.api.responses import BAD_PARAMETER, SECURED, gated, ok, problem
from decision_service.monitoring.drift import DriftReport
from decision_service.monitoring.gauges import DriftGauges
from decision_service.monitoring.render import render_html
from decision_service.monitoring.window import window_report
from decision_service.scoring.card import ModelCardError


def drift_handlers(
    engine: sa.Engine,
    models_dir: Path,
    model_name: str,
    default_version: str,
    gauges: DriftGauges | None = None,
) -> list[Any]:
    @get(
        "/monitoring/drift",
        tags=["monitoring"],
        summary="PSI per feature, pd and outcome mix over a window of stored decisions",
        opt={"roles": ["analyst", "auditor"]},
        security=SECURED,
        responses=gated(
            {
                200: ok(DriftReport, "The drift report (`format=html`: a page of charts)"),
                400: BAD_PARAMETER,
                404: problem(404, "No such model version", "no usable model card"),
                503: problem(503, "The audit store cannot be read", "audit store unavailable"),
            }
        ),
        operation_class=alternatives_operation(
            {200: html_page("<!doctype html><html>… <h1>Drift of 13 decisions …</h1> …</html>")}
        ),
    )
    async def drift(
        from_: Annotated[datetime | None, QueryParameter(name="from")] = None,
        to: FromQuery[datetime | None] = None,
        model_version: FromQuery[str | None] = None,
        format: FromQuery[Literal["json", "html"]] = "json",
    ) -> Response:
        try:
            report = await asyncio.to_thread(
                window_report,
                engine,
                models_dir,
                model_name,
                from_=from_,
                to=to,
                model_version=model_version,
                default_version=default_version,
            )
        except (ModelCardError, FileNotFoundError) as exc:
            return error(404, f"no usable model card: {exc}")
        except sa.exc.SQLAlchemyError:
            return error(503, "audit store unavailable: no drift report")
        if gauges is not None and from_ is None and to is None:
            gauges.update(report)  # the gauges follow the standing (whole-log) view only
        if format == "html":
            return Response(render_html(report), media_type="text/html")
        return json_response(report)

    return [drift]
