"""POST /decide: validate → decide → record (committed) → answer.

The body is decoded by msgspec straight into the card's Application type (decoding is the
validation). A decision is answered only after its audit record is committed; if the store
cannot commit, the answer is 503 and no decision is returned.
"""

from __future__ import annotations

from random import getrandbits
from time import perf_counter_ns, time_ns
from urllib.parse import parse_qs

import msgspec
import structlog
from litestar import Request, Response, post
from opentelemetry import propagate, trace
from opentelemetry.context import Context

from decision_service.api.errors import error, json_response
from decision_service.api.metrics import Metrics
from decision_service.api.openapi import request_body_operation
from decision_service.audit import AuditUnavailable
from decision_service.decision import Decision
from decision_service.scoring import application_type
from decision_service.scoring.application import field_errors
from decision_service.service import Service

log = structlog.get_logger("decision_service.decide")
_STAGES = ("validate", "score", "rules", "explain", "audit")
EXAMPLE = {
    "application_id": "APP-CD-00003",
    "age": 46,
    "seniority": 10,
    "home": "owner",
    "marital": "married",
    "records": True,
    "job": "freelance",
    "term": 36,
    "expenses": 90.0,
    "income": 200.0,
    "assets": 3000.0,
    "debt": 0.0,
    "amount": 2000.0,
    "price": 2985.0,
}


def _explain_asked(query: bytes) -> bool:
    """`?explain=true`, read straight from the scope: Litestar's query parsing and signature
    model cost more than the whole rule evaluation on this hot path."""
    if not query:
        return False
    values = parse_qs(query.decode("latin-1")).get("explain", [])
    return bool(values) and values[-1].lower() in ("true", "1", "yes")


def _caller_context(raw_headers: list[tuple[bytes, bytes]]) -> Context | None:
    """The caller's trace context if it sent one (W3C traceparent), else a new trace."""
    for name, _ in raw_headers:
        if name in (b"traceparent", b"Traceparent"):
            carrier = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in raw_headers}
            return propagate.extract(carrier)
    return None


def _emit_stage_spans(
    tracer: trace.Tracer, parent: trace.Span, start_ns: int, timings: dict[str, int]
) -> None:
    """Child spans per stage, from the timings the pipeline measured (only when sampled)."""
    ctx = trace.set_span_in_context(parent)
    t = start_ns
    for stage in _STAGES:
        took = timings.get(stage, 0) * 1000
        tracer.start_span(stage, context=ctx, start_time=t).end(end_time=t + took)
        t += took


def decide_handler(service: Service, metrics: Metrics) -> Response:
    app_type = application_type(service.scorer.card)
    decoder = msgspec.json.Decoder(app_type)
    encode = msgspec.json.Encoder().encode
    tracer, store = service.tracer, service.store
    log_decisions = service.settings.log_decisions
    tracing = service.settings.otel_exporter != "none"

    @post(
        "/decide",
        summary="Decide one loan application",
        description="Body: an application as described by the model card (see GET /rules for "
        "the active ruleset). `?explain=true` asks for model reason codes on approvals too. "
        "422 names every bad field; 503 means the audit store could not record the decision, "
        "so none was made.",
        tags=["decisions"],
        status_code=200,
        media_type="application/json",
        operation_class=request_body_operation(
            app_type, EXAMPLE, {"explain": "Model reason codes on approvals too"}
        ),
    )
    async def decide(request: Request) -> Response:
        start_wall, t0 = time_ns(), perf_counter_ns()
        body = await request.body()
        explain = _explain_asked(request.scope["query_string"])
        try:
            app = decoder.decode(body)
        except (msgspec.ValidationError, msgspec.DecodeError):
            metrics.rejected.inc()
            errors = field_errors(app_type, body)
            return error(422, "invalid application; nothing was decided", errors=errors)
        timings = {"validate": (perf_counter_ns() - t0) // 1000}
        caller = _caller_context(request.scope["headers"])
        if caller is None and not tracing:
            # Nothing to record and no caller trace to join: a fresh W3C trace id is all we
            # need, without the cost of a non-recording SDK span.
            span = trace.INVALID_SPAN
            trace_id = f"{getrandbits(128) or 1:032x}"
        else:
            span = tracer.start_span("POST /decide", context=caller)
            trace_id = format(span.get_span_context().trace_id, "032x")
        try:
            decision: Decision = service.decide(
                app, explain=explain, trace_id=trace_id, timings_us=timings
            )
            t1 = perf_counter_ns()
            await store.append(body, decision)
        except AuditUnavailable as exc:
            metrics.audit_failures.inc()
            log.error(
                "audit_unavailable",
                application_id=app.application_id,
                error=str(exc),
                trace_id=trace_id,
            )
            span.set_status(trace.StatusCode.ERROR, "audit store unavailable")
            span.end()
            return json_response(
                {
                    "status_code": 503,
                    "application_id": app.application_id,
                    "detail": "audit store unavailable: the decision could not be recorded, "
                    "so none was made; retry later",
                },
                503,
                {"Retry-After": "1"},
            )
        timings["audit"] = (perf_counter_ns() - t1) // 1000
        elapsed = perf_counter_ns() - t0
        if span.is_recording():
            span.set_attributes(
                {"decision.id": decision.decision_id, "decision.outcome": decision.outcome}
            )
            _emit_stage_spans(tracer, span, start_wall, timings)
        span.end()
        metrics.decisions.labels(decision.outcome).inc()
        metrics.latency.observe(elapsed / 1e9)
        metrics.pd.observe(decision.pd)
        if log_decisions:
            log.info(
                "decision",
                decision_id=decision.decision_id,
                application_id=decision.application_id,
                outcome=decision.outcome,
                pd=decision.pd,
                rules_fired=[r.id for r in decision.trace.rules_fired],
                latency_us=elapsed // 1000,
                trace_id=trace_id,
            )
        return json_response(encode(decision))

    return decide
