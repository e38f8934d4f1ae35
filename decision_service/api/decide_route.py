"""POST /decide over HTTP: the documented Litestar route and the ASGI fast path in front of it.

Both hand the raw body, query, headers and the caller's key name to the same responder
(`decide.Decider.respond`); the fast path admits each request through the same Gate as the
Litestar middleware, so it is not a second door.
"""

from __future__ import annotations

from typing import Any

import structlog
from litestar import Request, Response, post
from litestar.types import ASGIApp, Receive, Scope, Send

from decision_service.api.decide import DECIDE_OPT, DECIDE_RESPONSES, EXAMPLE, Decider, error_reply
from decision_service.api.errors import PROBLEM
from decision_service.api.gate import (
    JSON_TYPES,
    BodyTooLarge,
    Disconnected,
    Gate,
    current_principal,
    send_reply,
)
from decision_service.api.headers import security_headers
from decision_service.api.openapi import IDEMPOTENCY_KEY, request_body_operation
from decision_service.api.responses import SECURED

log = structlog.get_logger("decision_service.decide")


def decide_handler(decider: Decider) -> Any:
    """The documented route (OpenAPI at /schema; what TestClient and mounts use)."""

    @post(
        "/decide",
        summary="Decide one loan application",
        description="Body: an application as described by the model card (see GET /rules for "
        "the active ruleset). `?explain=true` asks for model reason codes on approvals too. "
        "422 names every bad field; 503 means the audit store could not record the decision, "
        "so none was made (or, when it says so, that it may have been recorded). "
        "`Idempotency-Key: <1-255 of A-Za-z0-9._~:+/=->` makes retries safe: the same key with "
        "the same request answers the recorded decision again (`Idempotency-Replayed: true`), "
        "with another request 422; a malformed key is a 400.",
        tags=["decisions"],
        status_code=200,
        media_type="application/json",
        operation_class=request_body_operation(
            decider.app_type,
            EXAMPLE,
            {"explain": "Model reason codes on approvals too"},
            headers=[IDEMPOTENCY_KEY],
        ),
        opt=DECIDE_OPT,
        security=SECURED,
        responses=DECIDE_RESPONSES,
    )
    async def decide(request: Request) -> Response:
        return await answer(decider.respond, request)

    return decide


async def answer(respond: Any, request: Request) -> Response:
    """A Litestar route over a framework-free responder (`Decider.respond`, the batch's): raw
    body, query, headers and the caller's key name in; its reply as a Response out."""
    principal = current_principal(request.scope)
    status, content, headers = await respond(
        await request.body(),
        request.scope["query_string"],
        request.scope["headers"],
        principal.name if principal else "",
    )
    return Response(
        content,
        status_code=status,
        media_type=PROBLEM if status >= 400 else "application/json",
        headers={k.decode(): v.decode() for k, v in headers},
    )


def fast_path(app: ASGIApp, decider: Decider, gate: Gate) -> ASGIApp:
    """POST /decide straight from ASGI; everything else (and lifespan) through Litestar.

    Litestar's routing, request and response objects cost ~55 µs per request, about as much
    as scoring, SHAP and the compiled rules together; the other endpoints keep all of it.
    Not a second door: the same Gate as the Litestar middleware admits the request (key, role
    from DECIDE_OPT, rate, size, content type), reads the body under the same limit, and the
    same security headers go on every answer.
    """
    roles = DECIDE_OPT["roles"]
    content_types = DECIDE_OPT.get("content_types", JSON_TYPES)
    secure = security_headers("/decide")
    json_type = (b"content-type", b"application/json")
    problem_type = (b"content-type", PROBLEM.encode())

    async def asgi(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != "/decide" or scope["method"] != "POST":
            await app(scope, receive, send)
            return
        denied = await gate.admit(scope, roles, content_types)
        if denied is None:
            try:
                body = await gate.read_body(receive)
            except Disconnected:
                return
            except BodyTooLarge as exc:
                denied = exc.reply
        if denied is not None:
            await send_reply(send, denied, secure)
            return
        try:
            principal = current_principal(scope)
            status, content, headers = await decider.respond(
                body, scope["query_string"], scope["headers"], principal.name if principal else ""
            )
        except Exception:
            log.exception("decide_failed")
            status, content, headers = error_reply(500, "internal error; nothing was decided")
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    problem_type if status >= 400 else json_type,
                    (b"content-length", str(len(content)).encode()),
                    *headers,
                    *secure,
                ],
            }
        )
        await send({"type": "http.response.body", "body": content})

    return asgi
