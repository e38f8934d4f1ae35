"""Error bodies: RFC 9457 problem details, one shape for every 4xx/5xx this service answers.

Our handlers, the Gate, the /decide adapter and Litestar's own exceptions (exception handlers
registered on the app: query-parameter 400s, unknown routes, 405s, 500s) all answer
``application/problem+json``::

    {"type": "urn:decision-service:problem:invalid-application", "title": "Invalid application",
     "status": 422, "detail": "…", "errors": [{"field": "$.age", "message": "…"}]}

``type`` is a URN naming the kind of problem (docs/api.md lists them), ``title`` is fixed per
type, ``detail`` explains this occurrence, ``errors`` names each bad field (a JSON path for body
fields, the parameter's name for query parameters). Some problems add members of their own
(``application_id``, ``decision_id``, ``idempotency_key``, ``active``).
"""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

import msgspec
import structlog
from litestar import Request, Response
from litestar.exceptions import HTTPException, ValidationException

from decision_service.api.telemetry import log_rejected, request_trace_id

JSON = "application/json"
PROBLEM = "application/problem+json"
TYPE_PREFIX = "urn:decision-service:problem:"
_encode = msgspec.json.Encoder().encode
log = structlog.get_logger("decision_service.api")

# Problem type (slug) → its fixed title. A status's default type is in _BY_STATUS.
TITLES: dict[str, str] = {
    "bad-request": "Bad request",
    "invalid-parameter": "Invalid query or path parameter",
    "invalid-idempotency-key": "Invalid Idempotency-Key",
    "unauthenticated": "API key missing, unknown or revoked",
    "forbidden": "Role not allowed",
    "not-found": "Not found",
    "method-not-allowed": "Method not allowed",
    "conflict": "Conflict",
    "body-too-large": "Request body too large",
    "unsupported-media-type": "Unsupported media type",
    "invalid-request": "Invalid request",
    "invalid-application": "Invalid application",
    "idempotency-conflict": "Idempotency-Key reused with another request",
    "rules-rejected": "Rules rejected",
    "rate-limited": "Rate limit exceeded",
    "internal": "Internal error",
    "audit-unavailable": "Audit store unavailable",
    "unavailable": "Service unavailable",
}
_BY_STATUS: dict[int, str] = {
    400: "bad-request",
    401: "unauthenticated",
    403: "forbidden",
    404: "not-found",
    405: "method-not-allowed",
    409: "conflict",
    413: "body-too-large",
    415: "unsupported-media-type",
    422: "invalid-request",
    429: "rate-limited",
    500: "internal",
    503: "unavailable",
}


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    content = body if isinstance(body, bytes) else _encode(body)
    return Response(content=content, status_code=status, media_type=JSON, headers=headers)


def error_body(
    status: int,
    detail: str,
    *,
    kind: str | None = None,
    errors: list[dict[str, Any]] | None = None,
    instance: str | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """A problem details object; `kind` is the problem type's slug (default: by status)."""
    slug = kind or _BY_STATUS.get(status)
    body: dict[str, Any] = {
        "type": TYPE_PREFIX + slug if slug else "about:blank",
        "title": TITLES[slug] if slug else HTTPStatus(status).phrase,
        "status": status,
        "detail": detail,
    }
    if instance is not None:
        body["instance"] = instance
    if errors is not None:
        body["errors"] = errors
    return body | extra


def error(
    status: int, detail: str, headers: dict[str, str] | None = None, **extra: Any
) -> Response:
    return Response(
        content=_encode(error_body(status, detail, **extra)),
        status_code=status,
        media_type=PROBLEM,
        headers=headers,
    )


def _public_name(key: str) -> str:
    """A handler's parameter as the client spells it (`from_` is the query parameter `from`)."""
    return key[:-1] if key.endswith("_") and key[:-1] in ("from",) else key


def _validation_errors(extra: Any) -> list[dict[str, Any]]:
    found = []
    for item in extra if isinstance(extra, list) else []:
        if isinstance(item, dict):
            field = _public_name(str(item.get("key") or item.get("source") or ""))
            found.append({"field": field, "message": str(item.get("message", ""))})
    return found


def http_problem(request: Request, exc: HTTPException) -> Response:
    """Litestar's own HTTP errors (routing, parameter validation, the guard) as problems."""
    status = exc.status_code
    headers = dict(exc.headers or {})
    if isinstance(exc, ValidationException):
        errors = _validation_errors(exc.extra)
        said = "; ".join(f"{e['field']}: {e['message']}" for e in errors)
        detail = f"invalid parameter {said}" if errors else "invalid request parameters"
        trace_id = request_trace_id(request.scope["headers"])
        log_rejected(request.url.path, 400, "invalid-parameter", errors, trace_id)
        return error(400, detail, headers, kind="invalid-parameter", errors=errors)
    detail = exc.detail if exc.detail else HTTPStatus(status).phrase
    if status == 404 and detail == "Not Found":
        detail = f"no route {request.url.path}"
    elif status == 405:
        detail = f"{request.method} is not allowed on {request.url.path}"
    return error(status, detail, headers)


def internal_problem(request: Request, exc: Exception) -> Response:
    """Anything unexpected: logged with its stack, answered without it."""
    log.error("unhandled_error", path=request.url.path, error=type(exc).__name__, exc_info=exc)
    return error(500, "internal error")


EXCEPTION_HANDLERS: dict[Any, Any] = {HTTPException: http_problem, 500: internal_problem}
