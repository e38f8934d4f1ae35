"""Operators' model registry endpoints: GET /models, POST /models/active (admin).

Every switch is in the registry's log (model_event) and in change_log (who, from → to); see the
ModelRegistry docstring for how every worker follows the live version.
"""

from __future__ import annotations

import asyncio
from typing import Any, Literal

import msgspec
import sqlalchemy as sa
from litestar import Request, Response, get, post

from decision_service.api.actor import actor_name
from decision_service.api.errors import error, json_response
from decision_service.api.openapi import request_body_operation
from decision_service.api.responses import (
    MODEL_SWITCH_EXAMPLE,
    SECURED,
    ModelListing,
    ModelSwitch,
    gated,
    ok,
    problem,
)
from decision_service.audit import AuditStore
from decision_service.models_cli import listing, record_model_change
from decision_service.scoring.registry import ModelRegistry, RegistryError


class ActiveModelChange(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Body of POST /models/active."""

    action: Literal["promote", "rollback"] = "promote"
    version: str | None = None  # required to promote
    reason: str | None = None


def model_handlers(registry: ModelRegistry, store: AuditStore) -> list[Any]:
    @get(
        "/models",
        tags=["models"],
        summary="Model versions, the live one, promotion gate results and the model log",
        opt={"roles": ["analyst", "auditor"]},  # and admin, who may call everything
        security=SECURED,
        responses=gated(
            {
                200: ok(ModelListing, "Every version with its gate result; the live one; the log"),
                503: problem(503, "The registry cannot be read", "model registry unavailable"),
            }
        ),
    )
    async def list_models() -> Response:
        try:
            data = await asyncio.to_thread(listing, registry)
        except sa.exc.SQLAlchemyError:
            return error(503, "model registry unavailable: the audit store cannot be read")
        return json_response(data)

    @post(
        "/models/active",
        tags=["models"],
        status_code=200,
        summary="Promote a version (gated) or roll back; every worker follows within seconds",
        opt={"roles": ["admin"]},
        security=SECURED,
        responses=gated(
            {
                200: ok(
                    ModelSwitch,
                    "The change made (model_event) and the version now live",
                    MODEL_SWITCH_EXAMPLE,
                ),
                400: problem(400, "A body that is not a change", "invalid body"),
                404: problem(404, "No such model version", "no model version 9.9.9"),
                409: problem(409, "Retired, or already live", "version 1.1.0 is retired"),
                422: problem(422, "The promotion gate refused", "promotion refused"),
                503: problem(503, "The registry cannot be written", "audit store unavailable"),
            },
            body=True,
        ),
        operation_class=request_body_operation(
            ActiveModelChange,
            {"action": "promote", "version": "1.1.0", "reason": "challenger won on Q3 traffic"},
            {},
            "`promote` a version (it must pass the promotion gate), or `rollback` to the one "
            "that served before.",
        ),
    )
    async def set_active(request: Request) -> Response:
        try:
            change = msgspec.json.decode(await request.body(), type=ActiveModelChange)
        except (msgspec.ValidationError, msgspec.DecodeError) as exc:
            return error(400, f"invalid body: {exc}")
        if change.action == "promote" and not change.version:
            return error(400, "promote needs a version")
        actor = actor_name(request)
        try:
            if change.action == "promote":
                event = await asyncio.to_thread(
                    registry.promote, change.version or "", actor, change.reason
                )
            else:
                event = await asyncio.to_thread(registry.rollback, actor, change.reason)
        except RegistryError as exc:
            gate = msgspec.to_builtins(exc.gate) if exc.gate is not None else None
            return error(exc.status, str(exc), gate=gate, live=registry.state().live)
        except sa.exc.SQLAlchemyError:
            return error(503, "model registry unavailable: nothing was changed", live=None)
        unrecorded = await asyncio.to_thread(record_model_change, store, registry.model_name, event)
        return json_response(
            {"event": event, "live": registry.state().live, "change_log": unrecorded is None}
        )

    return [list_models, set_active]
