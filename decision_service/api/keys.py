"""Key management over HTTP (admin only); the same functions as `decision-service keys`."""

from __future__ import annotations

import asyncio
from typing import Any

import msgspec
import sqlalchemy as sa
import structlog
from litestar import Request, Response, get, post
from litestar.params import FromPath

from decision_service.access.keys import KeyInfo, KeyRefused, create_key, list_keys, revoke_key
from decision_service.api.actor import actor_name
from decision_service.api.errors import error, json_response
from decision_service.api.openapi import request_body_operation
from decision_service.api.responses import (
    KEY_EXAMPLE,
    MADE_KEY_EXAMPLE,
    SECURED,
    KeyView,
    MadeKey,
    gated,
    ok,
    problem,
)
from decision_service.audit import AuditStore, AuditUnavailable

log = structlog.get_logger("decision_service.access")

ADMIN_ONLY = {"roles": ["admin"]}


class NewKey(msgspec.Struct, forbid_unknown_fields=True):
    name: str
    role: str


_REFUSED = problem(422, "Not {name, role}, or an unknown role", "unknown role 'root'")
LISTED = gated({200: ok(list[KeyView], "Every key (never the key itself)", [KEY_EXAMPLE])})
MADE = gated(
    {
        201: ok(MadeKey, "The new key: shown this once, stored only as a hash", MADE_KEY_EXAMPLE),
        409: problem(409, "A key with this name exists", "key e2e-decider exists"),
        422: _REFUSED,
    },
    body=True,
)
REVOKED = gated(
    {
        200: ok(KeyView, "The revoked key", KEY_EXAMPLE),
        404: problem(404, "No key by this name", "no key x"),
        400: problem(400, "A path parameter is invalid", "invalid parameter name: …"),
    }
)


def key_view(k: KeyInfo) -> dict[str, Any]:
    return {
        "name": k.name,
        "role": k.role,
        "created_at": k.created_at,
        "last_used_at": k.last_used_at,
        "revoked_at": k.revoked_at,
    }


def key_handlers(engine: sa.Engine, store: AuditStore | None = None) -> list[Any]:
    async def changed(request: Request, action: str, name: str, after: dict[str, Any]) -> None:
        """change_log: which key made or revoked which key; the change stands if it fails."""
        if store is None:
            return
        try:
            await store.record_change(actor_name(request), action, name, None, after)
        except AuditUnavailable as exc:
            log.error("change_log_write_failed", action=action, error=str(exc))

    @get(
        "/keys",
        tags=["keys"],
        summary="API keys: name, role, created, last used, revoked",
        opt=ADMIN_ONLY,
        security=SECURED,
        responses=LISTED,
    )
    async def keys() -> Response:
        return json_response([key_view(k) for k in await asyncio.to_thread(list_keys, engine)])

    @post(
        "/keys",
        tags=["keys"],
        status_code=201,
        opt=ADMIN_ONLY,
        security=SECURED,
        responses=MADE,
        operation_class=request_body_operation(
            NewKey,
            {"name": "los-prod", "role": "decider"},
            {},
            "The key's name (unique) and role: decider, analyst, auditor or admin.",
        ),
        summary="Make a key: the answer is the only time the key is shown",
    )
    async def make_key(request: Request) -> Response:
        try:
            wanted = msgspec.json.decode(await request.body(), type=NewKey)
        except (msgspec.ValidationError, msgspec.DecodeError) as exc:
            return error(422, f'expected {{"name": …, "role": …}}: {exc}')
        try:
            key = await asyncio.to_thread(create_key, engine, wanted.name, wanted.role)
        except KeyRefused as exc:
            return error(409 if "exists" in str(exc) else 422, str(exc))
        await changed(request, "key.create", wanted.name, {"role": wanted.role})
        return json_response({"name": wanted.name, "role": wanted.role, "key": key}, 201)

    @post(
        "/keys/{name:str}/revoke",
        tags=["keys"],
        status_code=200,
        opt=ADMIN_ONLY,
        summary="Revoke a key (every worker refuses it within a second)",
        security=SECURED,
        responses=REVOKED,
    )
    async def revoke(request: Request, name: FromPath[str]) -> Response:
        try:
            info = await asyncio.to_thread(revoke_key, engine, name)
        except KeyRefused as exc:
            return error(404, str(exc))
        when = info.revoked_at.isoformat() if info.revoked_at else None
        await changed(request, "key.revoke", name, {"role": info.role, "revoked_at": when})
        return json_response(key_view(info))

    return [keys, make_key, revoke]
