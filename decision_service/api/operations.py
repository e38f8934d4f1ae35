"""Analysts' and operators' endpoints: active rules, validated reload, health, metrics."""

from __future__ import annotations

import re
from typing import Any

from litestar import Request, Response, get, post
from prometheus_client import CONTENT_TYPE_LATEST as CONTENT_TYPE

from decision_service.api.actor import actor_name
from decision_service.api.errors import error, json_response
from decision_service.api.metrics import Metrics
from decision_service.api.responses import (
    SECURED,
    UNSUPPORTED,
    Live,
    Ready,
    RulesStatus,
    gated,
    ok,
    problem,
    public,
)
from decision_service.service import Service

PUBLIC = {"roles": ["public"]}
ANALYST = {"roles": ["analyst"]}
ADMIN = {"roles": ["admin"]}
RULES = gated({200: ok(RulesStatus, "The active ruleset and its rules")})
RELOADED = gated(
    {
        200: ok(RulesStatus, "The new active ruleset (unchanged if the files did not change)"),
        415: UNSUPPORTED,
        422: problem(
            422,
            "A rule file does not parse, compile or pass its tests: the previous version keeps "
            "serving (`active`); `errors` names file:line:col of each problem",
            "rules rejected; the previous version keeps serving",
            kind="rules-rejected",
            errors=[
                {
                    "field": "rules/risk-appetite.yaml:12:11",
                    "message": "DTI-REFER: unknown field 'dtii'",
                }
            ],
        ),
    }
)
LIVE = public({200: ok(Live, "The process is up", {"status": "live"})})
READY = public(
    {
        200: ok(
            Ready,
            "Model, rules and audit store all usable",
            {"status": "ready", "checks": {"model": True, "rules": True, "audit_store": True}},
        ),
        503: ok(
            Ready,
            "Something is not usable: `checks` says what",
            {"status": "not ready", "checks": {"model": True, "rules": True, "audit_store": False}},
        ),
    }
)


_LOCATED = re.compile(r"^(?P<at>[^\s:]+(?::\d+){1,2}): (?P<message>.*)$", re.S)


def rule_error(text: str) -> dict[str, str]:
    """A rule-file error (`file:line:col: RULE-ID: message`) as a problem's field error."""
    found = _LOCATED.match(text)
    if found is None:
        return {"field": "", "message": text}
    return {"field": found["at"], "message": found["message"]}


def operation_handlers(service: Service, metrics: Metrics) -> list[Any]:
    # Scrapers usually carry no key; a setting closes /metrics to analysts and auditors.
    metrics_opt = PUBLIC if service.settings.metrics_public else {"roles": ["analyst", "auditor"]}
    exposition = {
        200: ok(str, "Prometheus text exposition format (text/plain)", None, CONTENT_TYPE)
    }
    metrics_responses = public(exposition) if metrics_opt is PUBLIC else gated(exposition)

    @get(
        "/rules",
        tags=["rules"],
        summary="The active ruleset: name, version, sha256, engine",
        opt=ANALYST,
        security=SECURED,
        responses=RULES,
    )
    async def active_rules() -> Response:
        return json_response(service.rules_status())

    @post(
        "/rules/reload",
        tags=["rules"],
        status_code=200,
        summary="Parse, compile and test the rule files; swap only if all pass",
        opt=ADMIN,
        security=SECURED,
        responses=RELOADED,
    )
    async def reload_rules(request: Request) -> Response:
        ok, detail = await service.reload_rules(actor_name(request))  # counted by on_reload
        if not ok:
            return error(
                422,
                "rules rejected; the previous version keeps serving",
                kind="rules-rejected",
                errors=[rule_error(text) for text in detail],
                active=service.rules_status(),
            )
        return json_response(service.rules_status())

    @get("/health/live", tags=["health"], summary="The process is up", opt=PUBLIC, responses=LIVE)
    async def live() -> Response:
        return json_response({"status": "live"})

    @get(
        "/health/ready",
        tags=["health"],
        summary="Ready only when model, rules and audit store are all usable",
        opt=PUBLIC,
        responses=READY,
    )
    async def ready() -> Response:
        checks = await service.readiness()
        ok = all(checks.values())
        return json_response(
            {"status": "ready" if ok else "not ready", "checks": checks}, 200 if ok else 503
        )

    @get(
        "/metrics",
        tags=["health"],
        summary="Prometheus exposition",
        opt=metrics_opt,
        media_type=CONTENT_TYPE,
        security=None if metrics_opt is PUBLIC else SECURED,
        responses=metrics_responses,
    )
    async def prometheus() -> Response:
        return Response(metrics.render(), media_type=metrics.content_type)

    return [active_rules, reload_rules, live, ready, prometheus]
