"""Litestar's own errors come out as problem details too: the role guard's 401/403 on a route
reached without the access middleware, parameter validation, unknown routes."""

from __future__ import annotations

from typing import Annotated

from litestar import Litestar, get
from litestar.params import QueryParameter
from litestar.testing import TestClient

from decision_service.api.auth import role_guard
from decision_service.api.errors import EXCEPTION_HANDLERS, PROBLEM


@get("/closed", opt={"roles": ["auditor"]}, sync_to_thread=False)
def closed() -> dict[str, str]:
    return {"ok": "no"}


@get("/open", opt={"roles": ["public"]}, sync_to_thread=False)
def open_route(
    from_: Annotated[int, QueryParameter(name="from", ge=1)] = 1,
) -> dict[str, int]:
    return {"from": from_}


def _app() -> Litestar:
    # No AccessMiddleware: the guard alone closes the route (a mount elsewhere, say).
    return Litestar(
        [closed, open_route], guards=[role_guard], exception_handlers=EXCEPTION_HANDLERS
    )


def test_guard_and_framework_errors_are_problems() -> None:
    with TestClient(_app()) as c:
        denied = c.get("/closed")
        assert denied.status_code == 401
        assert denied.headers["content-type"] == PROBLEM
        assert denied.headers["www-authenticate"] == "Bearer"
        body = denied.json()
        assert body["type"] == "urn:decision-service:problem:unauthenticated"
        assert body["status"] == 401 and body["detail"] == "an API key is required"

        bad = c.get("/open", params={"from": "0"})
        assert bad.status_code == 400 and bad.headers["content-type"] == PROBLEM
        problem = bad.json()
        assert problem["type"] == "urn:decision-service:problem:invalid-parameter"
        assert [e["field"] for e in problem["errors"]] == ["from"]
        assert "from_" not in bad.text

        missing = c.get("/nowhere")
        assert missing.status_code == 404 and missing.json()["detail"] == "no route /nowhere"
        assert c.post("/open").json()["status"] == 405
