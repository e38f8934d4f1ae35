"""OpenAPI for /decide: the handler decodes the raw body itself (faster, and every bad field
is reported), so the request body's schema is declared here from the card's Application type."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import msgspec
from litestar.openapi.spec import (
    OpenAPIMediaType,
    OpenAPIType,
    Operation,
    Parameter,
    RequestBody,
    Schema,
)

_SNAKE = re.compile(r"(?<!^)(?=[A-Z])")


def _schema(node: dict[str, Any]) -> Schema:
    """msgspec's JSON Schema (one flat Struct: scalars, enums, nullable) → Litestar's Schema."""
    kwargs: dict[str, Any] = {}
    for key, value in node.items():
        name = _SNAKE.sub("_", key).lower()
        if key == "type":
            value = OpenAPIType(value)
        elif key == "properties":
            value = {k: _schema(v) for k, v in value.items()}
        elif key == "anyOf":
            value = [_schema(v) for v in value]
        kwargs[name] = value
    return Schema(**kwargs)


def request_body_operation(
    struct: type[msgspec.Struct],
    example: dict[str, Any],
    flags: dict[str, str],
    description: str = "One loan application; fields, ranges and categories follow the model card.",
    headers: list[Parameter] | None = None,
) -> type:
    """An Operation class whose request body is `struct` (with an example), whose boolean
    query parameters are `flags` (name → description), plus header parameters."""
    schema = msgspec.json.schema(struct)
    root = schema["$defs"][schema["$ref"].rsplit("/", 1)[-1]]
    body = RequestBody(
        content={"application/json": OpenAPIMediaType(schema=_schema(root), example=example)},
        required=True,
        description=description,
    )

    parameters = [
        Parameter(
            name=name,
            param_in="query",
            required=False,
            description=text,
            schema=Schema(type=OpenAPIType.BOOLEAN, default=False),
        )
        for name, text in flags.items()
    ] + list(headers or [])

    @dataclass
    class WithBody(Operation):
        def __post_init__(self) -> None:
            self.request_body = body
            self.parameters = parameters

    return WithBody


IDEMPOTENCY_KEY = Parameter(
    name="Idempotency-Key",
    param_in="header",
    required=False,
    description="Makes retries safe: the same key with the same request answers the recorded "
    "decision again (`Idempotency-Replayed: true`); with another request 422; malformed 400. "
    "Scoped to the calling API key.",
    schema=Schema(
        type=OpenAPIType.STRING, min_length=1, max_length=255, pattern=r"^[A-Za-z0-9._~:+/=-]+$"
    ),
)
