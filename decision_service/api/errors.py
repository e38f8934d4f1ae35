"""Error bodies: one shape for every 4xx/5xx we answer ourselves."""

from __future__ import annotations

from typing import Any

import msgspec
from litestar import Response

JSON = "application/json"
_encode = msgspec.json.Encoder().encode


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    content = body if isinstance(body, bytes) else _encode(body)
    return Response(content=content, status_code=status, media_type=JSON, headers=headers)


def error_body(status: int, detail: str, **extra: Any) -> dict[str, Any]:
    return {"status_code": status, "detail": detail} | extra


def error(status: int, detail: str, **extra: Any) -> Response:
    return json_response(error_body(status, detail, **extra), status)
