"""Security headers on every response: the Litestar app adds them in `before_send` (404s and
framework errors included), the /decide fast path adds the very same list."""

from __future__ import annotations

from litestar.types import Message, Scope

Headers = list[tuple[bytes, bytes]]

_COMMON: Headers = [
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    # Decisions, stored applications and verify reports are personal data: never cached by a
    # browser or a proxy. Nothing this API answers is worth caching anyway.
    (b"cache-control", b"no-store"),
]
_API: Headers = [
    *_COMMON,
    (b"content-security-policy", b"default-src 'none'; frame-ancestors 'none'"),
]
# The /schema pages: the docs UI's scripts, styles and the document, all from this app itself
# (api/docs_ui), so nothing but 'self' (and the data: images inside Swagger UI's CSS).
_DOCS: Headers = [
    *_COMMON,
    (
        b"content-security-policy",
        b"default-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'; "
        b"form-action 'none'; frame-ancestors 'none'",
    ),
]


def security_headers(path: str) -> Headers:
    return _DOCS if path.startswith("/schema") else _API


async def add_security_headers(message: Message, scope: Scope) -> None:
    """Litestar `before_send` hook: add each header the response did not set itself."""
    if message["type"] != "http.response.start":
        return
    headers = list(message.get("headers") or [])
    present = {name.lower() for name, _ in headers}
    headers.extend(h for h in security_headers(scope.get("path", "")) if h[0] not in present)
    message["headers"] = headers
