"""Analysts' and operators' endpoints: active rules, validated reload, health, metrics."""

from __future__ import annotations

from typing import Any

from litestar import Request, Response, get, post

from decision_service.api.actor import actor_name
from decision_service.api.errors import error, json_response
from decision_service.api.metrics import Metrics
from decision_service.service import Service

PUBLIC = {"roles": ["public"]}
ANALYST = {"roles": ["analyst"]}
ADMIN = {"roles": ["admin"]}


def operation_handlers(service: Service, metrics: Metrics) -> list[Any]:
    # Scrapers usually carry no key; a setting closes /metrics to analysts and auditors.
    metrics_opt = PUBLIC if service.settings.metrics_public else {"roles": ["analyst", "auditor"]}

    @get(
        "/rules",
        tags=["rules"],
        summary="The active ruleset: name, version, sha256, engine",
        opt=ANALYST,
    )
    async def active_rules() -> Response:
        return json_response(service.rules_status())

    @post(
        "/rules/reload",
        tags=["rules"],
        status_code=200,
        summary="Parse, compile and test the rule files; swap only if all pass",
        opt=ADMIN,
    )
    async def reload_rules(request: Request) -> Response:
        ok, detail = await service.reload_rules(actor_name(request))
        metrics.rule_reloads.labels("ok" if ok else "rejected").inc()
        if not ok:
            return error(
                422,
                "rules rejected; the previous version keeps serving",
                errors=detail,
                active=service.rules_status(),
            )
        return json_response(service.rules_status())

    @get("/health/live", tags=["health"], summary="The process is up", opt=PUBLIC)
    async def live() -> Response:
        return json_response({"status": "live"})

    @get(
        "/health/ready",
        tags=["health"],
        summary="Ready only when model, rules and audit store are all usable",
        opt=PUBLIC,
    )
    async def ready() -> Response:
        checks = await service.readiness()
        ok = all(checks.values())
        return json_response(
            {"status": "ready" if ok else "not ready", "checks": checks}, 200 if ok else 503
        )

    @get("/metrics", tags=["health"], summary="Prometheus exposition", opt=metrics_opt)
    async def prometheus() -> Response:
        return Response(metrics.render(), media_type=metrics.content_type)

    return [active_rules, reload_rules, live, ready, prometheus]
