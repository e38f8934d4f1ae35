"""Access control inside Litestar: one middleware on the app (authentication, limits) and one
guard (the role a route declares in `opt={"roles": [...]}`), both reading the handler's `opt`
and both delegating to the Gate that the /decide fast path calls too."""

from __future__ import annotations

from litestar.connection import ASGIConnection
from litestar.enums import ScopeType
from litestar.exceptions import NotAuthorizedException, PermissionDeniedException
from litestar.handlers.base import BaseRouteHandler
from litestar.middleware import ASGIMiddleware
from litestar.types import ASGIApp, Receive, Scope, Send

from decision_service.access import PUBLIC, allowed
from decision_service.api.gate import JSON_TYPES, Gate, current_principal, route_roles, send_reply


class AccessMiddleware(ASGIMiddleware):
    """Runs after routing (Litestar builds middleware per route), so the handler's `opt` is
    known: public routes skip the key, the others need one of the declared roles.

    A route declares `opt={"roles": [...]}` and, if its body is not JSON,
    `"content_types": ["application/x-ndjson", ...]` (the media types it accepts)."""

    scopes = (ScopeType.HTTP,)

    def __init__(self, gate: Gate) -> None:
        self.gate = gate

    async def handle(self, scope: Scope, receive: Receive, send: Send, next_app: ASGIApp) -> None:
        opt = scope["route_handler"].opt
        types = opt.get("content_types", JSON_TYPES)
        if types and isinstance(types[0], str):
            types = tuple(t.encode() for t in types)
        denied = await self.gate.admit(scope, route_roles(opt), types, opt.get("max_body_bytes"))
        if denied is not None:
            await send_reply(send, denied)
            return
        await next_app(scope, receive, send)


def role_guard(connection: ASGIConnection, handler: BaseRouteHandler) -> None:
    """The declared roles, checked again where Litestar checks permissions: a route reached
    without the middleware (mounted elsewhere, say) is still closed."""
    roles = route_roles(handler.opt)
    if PUBLIC in roles:
        return
    principal = current_principal(connection.scope)
    if principal is None:
        raise NotAuthorizedException(
            "an API key is required", headers={"WWW-Authenticate": "Bearer"}
        )
    if not allowed(principal, roles):
        raise PermissionDeniedException(f"role {principal.role} may not call this endpoint")
