"""POST /decide's responder: the HTTP side of the deciding use case (decision_service/deciding.py),
framework-free (bytes in, status, body and headers out); decide_route.py mounts it.

The body is decoded by msgspec straight into the card's Application type (decoding is the
validation). A decision is answered only after its audit record is committed; if the store
cannot commit, the answer is 503 and no decision is returned. With an ``Idempotency-Key``
header, a retry of the same request answers the recorded decision again (marked by
``Idempotency-Replayed: true``); the same key with another request is a 422.
"""

from __future__ import annotations

import json
from pathlib import Path
from random import getrandbits
from time import perf_counter_ns, time_ns
from typing import Any
from urllib.parse import parse_qs

import msgspec
import structlog
from opentelemetry import propagate, trace
from opentelemetry.context import Context

from decision_service.api import docs_ui
from decision_service.api.errors import error_body
from decision_service.api.metrics import Metrics
from decision_service.api.responses import gated, ok, problem
from decision_service.api.telemetry import end_server_span, log_rejected, server_span
from decision_service.audit import AuditUnavailable, CommitOutcomeUnknown, idempotency
from decision_service.deciding import Ask, IdempotencyConflict
from decision_service.decision import Decision
from decision_service.scoring import application_type
from decision_service.scoring.application import ApplicationDecoder, InvalidApplication
from decision_service.service import Service

log = structlog.get_logger("decision_service.decide")
_STAGES = ("validate", "score", "rules", "explain", "audit")
_PIPELINE_STAGES = ("score", "rules", "explain")
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
DECIDE_RESPONSES = gated(
    {
        200: ok(
            Decision,
            "The decision, committed to the audit log before this answer",
            json.loads((Path(docs_ui.__file__).parent / "decision-example.json").read_text()),
        ),
        400: problem(
            400,
            "A malformed Idempotency-Key",
            "send one Idempotency-Key header, not several; nothing was decided",
            kind="invalid-idempotency-key",
        ),
        422: problem(
            422,
            "Not a valid application (`errors` names every bad field by JSON path), or an "
            "Idempotency-Key already used with another request",
            "invalid application; nothing was decided",
            kind="invalid-application",
            errors=[{"field": "$.age", "message": "Expected `int` >= 18"}],
        ),
        503: problem(
            503,
            "The audit store could not record the decision, so none was made (Retry-After: 1); "
            "or it may have been recorded (the detail says so, with its decision_id)",
            "audit store unavailable: the decision could not be recorded, so none was made; "
            "retry later",
            kind="audit-unavailable",
            application_id="APP-CD-00003",
        ),
    },
    body=True,
)
# Who may call /decide: the route's `opt`, read by the gate on both paths (route, fast path).
DECIDE_OPT: dict[str, Any] = {"roles": ["decider"]}


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


def _idempotency_key(raw_headers: list[tuple[bytes, bytes]]) -> list[bytes]:
    """Every Idempotency-Key header value (ASGI header names are lower case)."""
    return [value for name, value in raw_headers if name == idempotency.HEADER]


def claim_of(
    raw_headers: list[tuple[bytes, bytes]],
    route: bytes,
    query: bytes,
    body: bytes,
    caller: str = "",
) -> idempotency.Claim | None:
    """The request's idempotency claim, None without the header (InvalidIdempotencyKey if bad).

    The fingerprint covers the route, the query (``explain`` changes the answer) and the exact
    body bytes, so a retry must resend the same request.
    """
    values = _idempotency_key(raw_headers)
    if not values:
        return None
    if len(values) > 1:
        raise idempotency.InvalidIdempotencyKey("send one Idempotency-Key header, not several")
    return idempotency.claim(values[0], route, query, body, caller=caller)


REPLAYED = (b"idempotency-replayed", b"true")
Reply = tuple[int, bytes, list[tuple[bytes, bytes]]]  # status, JSON body, extra headers
_encode_error = msgspec.json.Encoder().encode


def error_reply(
    status: int, detail: str, headers: list[tuple[bytes, bytes]] | None = None, **extra: Any
) -> Reply:
    return status, _encode_error(error_body(status, detail, **extra)), headers or []


def log_decision(logger: Any, decision: Decision, latency_us: int, trace_id: str) -> None:
    """The one JSON log line per decision (the benchmark times this very function)."""
    logger.info(
        "decision",
        decision_id=decision.decision_id,
        application_id=decision.application_id,
        outcome=decision.outcome,
        pd=decision.pd,
        rules_fired=[r.id for r in decision.trace.rules_fired],
        latency_us=latency_us,
        trace_id=trace_id,
    )


def unrecorded_reply(
    exc: IdempotencyConflict | AuditUnavailable,
    metrics: Metrics,
    span: trace.Span,
    keyed: bool,
    trace_id: str,
    application_id: str | None,
    route: str = "/decide",
) -> Reply:
    """The answer when a request's decisions were not (or may not have been) recorded: 422 for
    a reused Idempotency-Key, 503 otherwise. One mapping for /decide and /decide/batch."""
    if isinstance(exc, IdempotencyConflict):
        metrics.rejected.inc()
        log_rejected(route, 422, "idempotency-conflict", None, trace_id)
        end_server_span(span, 422)
        return error_reply(
            422, f"{exc}; nothing was decided", kind="idempotency-conflict", idempotency_key=exc.key
        )
    metrics.audit_failures.inc()
    unknown = isinstance(exc, CommitOutcomeUnknown)
    log.error(
        "audit_outcome_unknown" if unknown else "audit_unavailable",
        application_id=application_id,
        decision_ids=exc.decision_ids if unknown else None,
        error=str(exc),
        trace_id=trace_id,
    )
    span.set_status(
        trace.StatusCode.ERROR,
        "audit commit outcome unknown" if unknown else "audit store unavailable",
    )
    end_server_span(span, 503)
    if not unknown:
        detail = (
            "audit store unavailable: the decision could not be recorded, so none was made; "
            "retry later"
        )
        return error_reply(
            503,
            detail,
            [(b"retry-after", b"1")],
            kind="audit-unavailable",
            application_id=application_id,
        )
    retry = (
        "retrying with the same Idempotency-Key is safe"
        if keyed
        else "look it up by decision_id before retrying (an Idempotency-Key makes retries safe)"
    )
    detail = (
        "audit store unreachable after the decision was sent to it: the decision may have "
        f"been recorded; {retry}"
    )
    return error_reply(
        503,
        detail,
        [(b"retry-after", b"1")],
        kind="audit-unavailable",
        application_id=application_id,
        decision_id=exc.decision_ids[0] if exc.decision_ids else None,
    )


class Decider:
    """POST /decide without the framework: raw body, query string and headers in; status, JSON
    body and headers out. The Litestar route (OpenAPI, tests) and the ASGI fast path
    (`fast_path`) both call it, so there is one implementation of the endpoint."""

    def __init__(self, service: Service, metrics: Metrics) -> None:
        self.service, self.metrics = service, metrics
        self.deciding = service.deciding
        self.app_type = application_type(service.scorer.card)
        self._decode = ApplicationDecoder(self.app_type)
        self._encode = msgspec.json.Encoder().encode
        self._tracing = service.settings.otel_exporter != "none"

    async def respond(
        self, body: bytes, query: bytes, headers: list[tuple[bytes, bytes]], caller: str = ""
    ) -> Reply:
        """`caller`: the authenticated key's name (scopes Idempotency-Key per caller)."""
        service, metrics = self.service, self.metrics
        start_wall, t0 = time_ns(), perf_counter_ns()
        span, trace_id = self.root_span("/decide", headers, start_wall)
        try:
            claim = claim_of(headers, b"POST /decide", query, body, caller) if headers else None
        except idempotency.InvalidIdempotencyKey as exc:
            return self.rejected(span, trace_id, 400, f"{exc}", "invalid-idempotency-key")
        try:
            app = self._decode(body)
        except InvalidApplication as exc:
            errors = msgspec.to_builtins(exc.errors)
            return self.rejected(
                span, trace_id, 422, "invalid application", "invalid-application", errors
            )
        timings = {"validate": (perf_counter_ns() - t0) // 1000}
        ask = Ask(app, body, _explain_asked(query), trace_id, timings)
        t1 = perf_counter_ns()
        try:
            decided = await self.deciding.decide_and_record(ask, claim=claim)
        except (IdempotencyConflict, AuditUnavailable) as exc:
            return unrecorded_reply(
                exc, metrics, span, claim is not None, trace_id, app.application_id
            )
        decision = decided.decision
        if decided.replayed:  # answered before: the same decision, nothing new decided
            end_server_span(span, 200)
            if service.settings.log_decisions:
                log.info("decision_replayed", decision_id=decision.decision_id, trace_id=trace_id)
            return 200, self._encode(decision), [REPLAYED]
        # the use case decided and recorded: the record's share is what the pipeline did not use
        took_us = (perf_counter_ns() - t1) // 1000
        timings["audit"] = max(0, took_us - sum(timings.get(s, 0) for s in _PIPELINE_STAGES))
        elapsed = perf_counter_ns() - t0
        if span.is_recording():
            span.set_attributes(
                {"decision.id": decision.decision_id, "decision.outcome": decision.outcome}
            )
            _emit_stage_spans(service.tracer, span, start_wall, timings)
        end_server_span(span, 200)
        metrics.decided(decision)
        metrics.timed(timings, elapsed / 1e9)
        if service.settings.log_decisions:
            log_decision(log, decision, elapsed // 1000, trace_id)
        return 200, self._encode(decision), []

    def root_span(
        self, route: str, headers: list[tuple[bytes, bytes]], start_ns: int
    ) -> tuple[trace.Span, str]:
        """The request's SERVER span and its trace id (the caller's, if it sent one)."""
        parent = _caller_context(headers)
        if parent is None and not self._tracing:
            # Nothing to record and no caller trace to join: a fresh W3C trace id is all we
            # need, without the cost of a non-recording SDK span.
            return trace.INVALID_SPAN, f"{getrandbits(128) or 1:032x}"
        span = server_span(self.service.tracer, route, parent, start_ns)
        return span, format(span.get_span_context().trace_id, "032x")

    def rejected(
        self,
        span: trace.Span,
        trace_id: str,
        status: int,
        why: str,
        kind: str,
        errors: list[dict[str, Any]] | None = None,
        route: str = "/decide",
        count: int = 1,
    ) -> Reply:
        """A request refused as invalid: counted, logged (no personal data), answered."""
        self.metrics.rejected.inc(count)
        log_rejected(route, status, kind, errors, trace_id)
        end_server_span(span, status)
        extra = {} if errors is None else {"errors": errors}
        return error_reply(status, f"{why}; nothing was decided", kind=kind, **extra)
