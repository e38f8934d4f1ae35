"""The one gate every request passes: authentication, role, rate limit, body size, content
type. The Litestar middleware (api/auth.py) and the /decide ASGI fast path (api/decide.py) both
call `Gate.admit` and `Gate.read_body`; there is no second implementation to drift.

Order: 401 (no/unknown/revoked key) → 403 (wrong role) → 429 (rate) → 413 (declared size) →
415 (body not JSON). A route with no declared roles is admin-only (fail closed; a test also
refuses such a route).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import msgspec
from litestar.types import Receive, Scope, Send

from decision_service.access import PUBLIC, ROLES, Principal, allowed
from decision_service.access.cache import KeyCache
from decision_service.access.limits import LocalLimiter, Rate, RedisLimiter, parse_rate
from decision_service.api.errors import PROBLEM, error_body
from decision_service.settings import Settings

Reply = tuple[int, bytes, list[tuple[bytes, bytes]]]  # status, JSON body, extra headers
JSON_TYPES: tuple[bytes, ...] = (b"application/json",)
FAIL_CLOSED_ROLES: tuple[str, ...] = ("admin",)
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
_encode = msgspec.json.Encoder().encode
_CHALLENGE = (b"www-authenticate", b'Bearer realm="decision-service"')
_BAD_TOKEN = (b"www-authenticate", b'Bearer realm="decision-service", error="invalid_token"')


def route_roles(opt: Mapping[str, Any]) -> Sequence[str]:
    return opt.get("roles") or FAIL_CLOSED_ROLES


def reply(status: int, detail: str, headers: list[tuple[bytes, bytes]] | None = None) -> Reply:
    return status, _encode(error_body(status, detail)), headers or []


class BodyTooLarge(Exception):
    def __init__(self, limit: int) -> None:
        super().__init__(limit)
        self.reply = reply(413, f"request body larger than {limit} bytes")


class Disconnected(Exception):
    """The client went away before sending the whole body."""


class Gate:
    def __init__(
        self,
        keys: KeyCache,
        limiter: Any,
        rates: Mapping[str, Rate | None],
        max_body_bytes: int,
        on_denied: Callable[[int], None] | None = None,
    ) -> None:
        self.keys, self.limiter, self.max_body = keys, limiter, max_body_bytes
        self.on_denied = on_denied  # e.g. a metrics counter by status
        self.rates = dict(rates)
        # In-process buckets are taken without an await (a few hundred ns saved per request).
        self._local = limiter if isinstance(limiter, LocalLimiter) else None

    async def admit(
        self,
        scope: Scope,
        roles: Sequence[str],
        content_types: Sequence[bytes] = JSON_TYPES,
        max_body: int | None = None,
    ) -> Reply | None:
        """None if the request may go on (its principal is then in scope["user"]); else the
        error reply to send instead. `max_body`: the route's own body limit (opt
        "max_body_bytes", e.g. /decide/batch), else the service's."""
        denied = await self._admit(scope, roles, content_types, max_body or self.max_body)
        if denied is not None and self.on_denied is not None:
            self.on_denied(denied[0])
        return denied

    async def _admit(
        self, scope: Scope, roles: Sequence[str], content_types: Sequence[bytes], max_body: int
    ) -> Reply | None:
        authorization = content_type = length = None
        chunked = False
        for name, value in scope["headers"]:
            if name == b"authorization":
                authorization = value
            elif name == b"content-type":
                content_type = value
            elif name == b"content-length":
                length = value
            elif name == b"transfer-encoding":
                chunked = True
        if PUBLIC not in roles:
            denied = await self._authenticate(scope, roles, authorization)
            if denied is not None:
                return denied
        size = 0
        if length is not None:
            try:
                size = int(length)
            except ValueError:
                return reply(400, "bad Content-Length")
            if size > max_body:
                return reply(413, f"request body larger than {max_body} bytes")
        if (size or chunked) and scope["method"] in _BODY_METHODS:
            media = (content_type or b"").split(b";", 1)[0].strip().lower()
            if media not in content_types:
                accepted = ", ".join(t.decode() for t in content_types)
                return reply(415, f"request body must be {accepted}")
        return None

    async def _authenticate(
        self, scope: Scope, roles: Sequence[str], authorization: bytes | None
    ) -> Reply | None:
        if authorization is None or authorization[:7].lower() != b"bearer ":
            return reply(401, "an API key is required: Authorization: Bearer <key>", [_CHALLENGE])
        principal = self.keys.lookup(authorization[7:].strip())
        if principal is None:
            return reply(401, "unknown or revoked API key", [_BAD_TOKEN])
        if not allowed(principal, roles):
            return reply(403, f"role {principal.role} may not call this endpoint")
        scope["user"] = principal
        rate = self.rates.get(principal.role)
        if rate is not None:
            if self._local is not None:
                wait = self._local.take_now(principal.name, rate)
            else:
                wait = await self.limiter.take(principal.name, rate)
            if wait > 0:
                retry = str(max(1, math.ceil(wait))).encode()
                return reply(429, f"rate limit {rate.text} exceeded", [(b"retry-after", retry)])
        return None

    async def read_body(self, receive: Receive) -> bytes:
        """The whole body, refused (BodyTooLarge) as soon as it passes the limit."""
        chunks: list[bytes] = []
        size, more = 0, True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise Disconnected
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body:
                raise BodyTooLarge(self.max_body)
            chunks.append(chunk)
            more = message.get("more_body", False)
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def current_principal(scope: Scope) -> Principal | None:
    user = scope.get("user")
    return user if isinstance(user, Principal) else None


async def send_reply(send: Send, answer: Reply, extra: Sequence[tuple[bytes, bytes]] = ()) -> None:
    """Send a denial: a problem details body (api/errors.py)."""
    status, body, headers = answer
    start = [(b"content-type", PROBLEM.encode()), (b"content-length", str(len(body)).encode())]
    await send(
        {"type": "http.response.start", "status": status, "headers": [*start, *headers, *extra]}
    )
    await send({"type": "http.response.body", "body": body})


def role_rates(settings: Settings) -> dict[str, Rate | None]:
    """Each role's rate: `rate_limit_<role>` if set, else `rate_limit`."""
    default = parse_rate(settings.rate_limit)
    rates: dict[str, Rate | None] = {}
    for role in ROLES:
        override = getattr(settings, f"rate_limit_{role}")
        rates[role] = default if override is None else parse_rate(override)
    return rates


def build_gate(
    settings: Settings, keys: KeyCache, on_denied: Callable[[int], None] | None = None
) -> Gate:
    limiter = RedisLimiter(settings.redis_url) if settings.redis_url else LocalLimiter()
    return Gate(keys, limiter, role_rates(settings), settings.max_body_bytes, on_denied)
