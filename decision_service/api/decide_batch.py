"""POST /decide/batch: a loan system's queue of applications, one request, one commit.

The body is a JSON array of applications. Each item is validated on its own, from its own
bytes exactly as received (what the audit record keeps, as if it had come through /decide);
every valid one is decided and ALL of them are recorded in one commit before the answer (503
and no decision if that commit fails); every invalid one is answered as ``{index, errors}``
with /decide's field paths. An Idempotency-Key makes a retried batch return the same decisions.
"""

from __future__ import annotations

from time import time_ns
from typing import Any

import msgspec
from litestar import Request, Response, post

from decision_service.api.decide import (
    EXAMPLE,
    REPLAYED,
    Decider,
    Reply,
    _explain_asked,
    claim_of,
    unrecorded_reply,
)
from decision_service.api.decide_route import answer
from decision_service.api.openapi import IDEMPOTENCY_KEY, request_body_operation
from decision_service.api.responses import (
    BATCH_EXAMPLE,
    SECURED,
    BatchAnswer,
    gated,
    ok,
    problem,
)
from decision_service.api.telemetry import end_server_span, log_rejected
from decision_service.audit import AuditUnavailable, idempotency
from decision_service.deciding import Ask, IdempotencyConflict
from decision_service.scoring.application import InvalidApplication

PATH = "/decide/batch"
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
        span, trace_id = decider.root_span(PATH, headers, time_ns())
        try:
            claim = claim_of(headers, ROUTE, query, body, caller) if headers else None
        except idempotency.InvalidIdempotencyKey as exc:
            return decider.rejected(
                span, trace_id, 400, f"{exc}", "invalid-idempotency-key", route=PATH
            )
        try:
            items = _items(body)
        except (msgspec.DecodeError, msgspec.ValidationError, UnicodeDecodeError) as exc:
            message = "expected a JSON array of applications"
            if isinstance(exc, msgspec.DecodeError | UnicodeDecodeError):
                message = f"malformed JSON: {exc}"
            errors = [{"field": "$", "message": message}]
            return decider.rejected(
                span, trace_id, 422, "invalid batch", "invalid-application", errors, route=PATH
            )
        if not items or len(items) > self.batch_max:
            detail = f"a batch holds 1 to {self.batch_max} applications, not {len(items)}"
            return decider.rejected(span, trace_id, 422, detail, "invalid-request", route=PATH)
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
        if invalid:  # answered 200 with the valid ones decided: one line names the bad items
            metrics.rejected.inc(len(invalid))
            paths = [
                {"field": f"$[{item['index']}]{error['field'].removeprefix('$')}"}
                for item in invalid
                for error in item["errors"]
            ]
            log_rejected(PATH, 200, "invalid-application", paths, trace_id)
        try:
            decided = await decider.deciding.decide_many_and_record(asks, claim=claim)
        except (IdempotencyConflict, AuditUnavailable) as exc:
            return unrecorded_reply(exc, metrics, span, claim is not None, trace_id, None, PATH)
        end_server_span(span, 200)
        if not decided.replayed:
            for decision in decided.decisions:
                metrics.decided(decision)
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
