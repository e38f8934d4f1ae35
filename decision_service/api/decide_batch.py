"""POST /decide/batch: a loan system's queue of applications, one request, one commit.

The body is a JSON array of applications. Each item is validated on its own, from its own
bytes exactly as received (what the audit record keeps, as if it had come through /decide);
every valid one is decided and ALL of them are recorded in one commit before the answer (503
and no decision if that commit fails); every invalid one is answered as ``{index, errors}``
with /decide's field paths. An Idempotency-Key makes a retried batch return the same decisions.
"""

from __future__ import annotations

from random import getrandbits
from typing import Any

import msgspec
from litestar import Request, Response, post
from opentelemetry import trace

from decision_service.api.decide import (
    EXAMPLE,
    REPLAYED,
    Decider,
    Reply,
    _caller_context,
    _error,
    _explain_asked,
    answer,
    claim_of,
    unrecorded_reply,
)
from decision_service.api.openapi import IDEMPOTENCY_KEY, request_body_operation
from decision_service.api.responses import (
    BATCH_EXAMPLE,
    SECURED,
    BatchAnswer,
    gated,
    ok,
    problem,
)
from decision_service.audit import AuditUnavailable, idempotency
from decision_service.deciding import Ask, IdempotencyConflict
from decision_service.scoring.application import InvalidApplication

ROUTE = b"POST /decide/batch"
_items = msgspec.json.Decoder(list[msgspec.Raw]).decode


class BatchDecider:
    """The batch endpoint over the same Decider parts (decoder, use case, metrics, errors)."""

    def __init__(self, decider: Decider, batch_max: int) -> None:
        self.decider, self.batch_max = decider, batch_max
        self._encode = msgspec.json.Encoder().encode

    async def respond(
        self, body: bytes, query: bytes, headers: list[tuple[bytes, bytes]], caller: str = ""
    ) -> Reply:
        decider, metrics = self.decider, self.decider.metrics
        try:
            claim = claim_of(headers, ROUTE, query, body, caller) if headers else None
        except idempotency.InvalidIdempotencyKey as exc:
            metrics.rejected.inc()
            return _error(400, f"{exc}; nothing was decided", kind="invalid-idempotency-key")
        try:
            items = _items(body)
        except (msgspec.DecodeError, msgspec.ValidationError, UnicodeDecodeError) as exc:
            metrics.rejected.inc()
            message = "expected a JSON array of applications"
            if isinstance(exc, msgspec.DecodeError | UnicodeDecodeError):
                message = f"malformed JSON: {exc}"
            errors = [{"field": "$", "message": message}]
            return _error(
                422, "invalid batch; nothing was decided", kind="invalid-application", errors=errors
            )
        if not items or len(items) > self.batch_max:
            metrics.rejected.inc()
            detail = f"a batch holds 1 to {self.batch_max} applications, not {len(items)}"
            return _error(422, f"{detail}; nothing was decided", kind="invalid-request")
        parent = _caller_context(headers)
        span: trace.Span = (
            decider.service.tracer.start_span("POST /decide/batch", context=parent)
            if parent is not None or decider._tracing
            else trace.INVALID_SPAN
        )
        trace_id = (
            format(span.get_span_context().trace_id, "032x")
            if span.is_recording()
            else f"{getrandbits(128) or 1:032x}"
        )
        explain = _explain_asked(query)
        asks: list[Ask] = []
        invalid: list[dict[str, Any]] = []
        for index, raw in enumerate(items):
            text = bytes(raw)  # this item's bytes exactly as received
            try:
                app = decider._decode(text)
            except InvalidApplication as exc:
                invalid.append({"index": index, "errors": msgspec.to_builtins(exc.errors)})
                continue
            asks.append(Ask(app, text, explain, trace_id, {}))
        if invalid:
            metrics.rejected.inc(len(invalid))
        try:
            decided = await decider.deciding.decide_many_and_record(asks, claim=claim)
        except (IdempotencyConflict, AuditUnavailable) as exc:
            return unrecorded_reply(exc, metrics, span, claim is not None, trace_id, None)
        span.end()
        if not decided.replayed:
            for decision in decided.decisions:
                metrics.decisions.labels(decision.outcome).inc()
                metrics.pd.observe(decision.pd)
        answer = {"decisions": decided.decisions, "errors": invalid}
        return 200, self._encode(answer), [REPLAYED] if decided.replayed else []


def decide_batch_handler(batch: BatchDecider, max_body_bytes: int) -> Any:
    @post(
        "/decide/batch",
        summary="Decide a batch of loan applications in one request (one commit)",
        description="Body: a JSON array of applications (each as for POST /decide), at most "
        "DECISION_BATCH_MAX. Answer: `decisions` (the valid ones, in order) and `errors` "
        "(`{index, errors}` for each invalid one). All decisions are recorded in one commit "
        "before the answer; 503 means none was. `Idempotency-Key` makes a retry safe.",
        tags=["decisions"],
        status_code=200,
        media_type="application/json",
        request_max_body_size=max_body_bytes,
        opt={"roles": ["decider"], "max_body_bytes": max_body_bytes},
        security=SECURED,
        responses=gated(
            {
                200: ok(
                    BatchAnswer,
                    "The valid items' decisions, and each invalid item's errors",
                    BATCH_EXAMPLE,
                ),
                400: problem(
                    400,
                    "A malformed Idempotency-Key",
                    "Idempotency-Key must be …",
                    kind="invalid-idempotency-key",
                ),
                422: problem(422, "Not a batch of applications", "invalid batch"),
                503: problem(503, "Nothing was recorded, so none was decided", "unavailable"),
            },
            body=True,
        ),
        operation_class=request_body_operation(
            batch.decider.app_type,
            [EXAMPLE],
            {"explain": "Model reason codes on approvals too"},
            "A JSON array of applications, each as for POST /decide.",
            [IDEMPOTENCY_KEY],
            max_items=batch.batch_max,
        ),
    )
    async def decide_batch(request: Request) -> Response:
        return await answer(batch.respond, request)

    return decide_batch
