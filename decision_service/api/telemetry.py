"""The service's telemetry wiring: which events feed which metric, and the operator's log lines
(start-up, rejected requests). Metrics themselves are in metrics.py, tracing set-up in
observability.py.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from random import getrandbits
from typing import Any

import structlog
from opentelemetry import trace
from opentelemetry.context import Context

from decision_service.api.metrics import Metrics
from decision_service.rules.registry import ReloadResult
from decision_service.service import Service
from decision_service.startup import database_label

log = structlog.get_logger("decision_service.api")
MAX_FIELDS = 20  # field paths named in one rejection line


def watch_metrics(service: Service, metrics: Metrics) -> None:
    """Connect the service's events to the metrics: audit commits, rule loads from every source
    (start-up, HTTP, the file watcher) and the ruleset in force (also after a scheduled switch,
    seen on the next decision or scrape)."""

    def ruleset_now() -> None:
        snap = service.rules.active()
        metrics.ruleset_switched(snap.name, snap.version, snap.sha256, snap.engine_name)

    def reloaded(source: str, result: ReloadResult) -> None:
        metrics.reloaded(source, result.ok)
        ruleset_now()

    service.store.on_commit = metrics.audit_committed
    service.on_reload = reloaded
    metrics.on_scrape = ruleset_now
    metrics.reloaded("startup", True)  # bootstrap loaded the rules (it raises otherwise)
    ruleset_now()


def log_started(service: Service) -> None:
    """One line per worker once it serves: model, ruleset and database (no password)."""
    card, snap = service.scorer.card, service.rules.active()
    settings = service.settings
    log.info(
        "started",
        pid=os.getpid(),
        model=card.name,
        model_version=card.version,
        model_sha256=card.model_sha256,
        ruleset=snap.name,
        ruleset_version=snap.version,
        ruleset_sha256=snap.sha256,
        rule_count=len(snap.ruleset.rules),
        rules_engine=snap.engine_name,
        database=database_label(settings.database_url),
        otel_exporter=settings.otel_exporter,
    )


def request_trace_id(headers: Sequence[tuple[bytes, bytes]]) -> str:
    """The caller's trace id (W3C traceparent) if it sent one, else a new one: what a request
    refused before any span exists is logged under, so the caller's own trace finds the line."""
    for name, value in headers:
        if name == b"traceparent":
            parts = value.split(b"-")
            if len(parts) >= 2 and len(parts[1]) == 32:
                return parts[1].decode("latin-1").lower()
    return f"{getrandbits(128) or 1:032x}"


def log_rejected(
    path: str, status: int, kind: str, errors: Sequence[dict[str, Any]] | None, trace_id: str
) -> None:
    """One line per request refused as invalid. Never the body or the error messages (they
    could quote what was sent): the field paths that were wrong, and how many."""
    errors = errors or []
    log.info(
        "request_rejected",
        path=path,
        status=status,
        problem=kind,
        error_count=len(errors),
        fields=[str(e.get("field", "")) for e in errors[:MAX_FIELDS]],
        trace_id=trace_id,
    )


def server_span(
    tracer: trace.Tracer, route: str, parent: Context | None, start_ns: int
) -> trace.Span:
    """The root span of a POST request this service serves: kind SERVER, HTTP semantic-
    convention attributes, started when the request was (its stage spans fall inside it)."""
    return tracer.start_span(
        f"POST {route}",
        context=parent,
        kind=trace.SpanKind.SERVER,
        start_time=start_ns,
        attributes={
            "http.request.method": "POST",
            "http.route": route,
            "url.path": route,
            "url.scheme": "http",
        },
    )


def end_server_span(span: trace.Span, status: int) -> None:
    """The answer's status on the span; a server span is in error on 5xx only (semconv)."""
    if span.is_recording():
        span.set_attribute("http.response.status_code", status)
        if status >= 500:
            span.set_status(trace.StatusCode.ERROR)
            span.set_attribute("error.type", str(status))
    span.end()
