"""OpenAPI beyond what Litestar infers: request bodies the handlers decode themselves (/decide,
/decide/batch, /keys, /models/active: faster, and every bad field is reported), declared here
from their msgspec types; and the other media types a response may come in (HTML pages)."""

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


Alternatives = dict[int, dict[str, OpenAPIMediaType]]


def html_page(example: str) -> dict[str, OpenAPIMediaType]:
    """A page for people (`format=html`): self-contained HTML, no script."""
    return {"text/html": OpenAPIMediaType(schema=Schema(type=OpenAPIType.STRING), example=example)}


def alternatives_operation(also: Alternatives) -> type:
    """An Operation class whose responses also come in the media types of `also` (status →
    media type → its schema): Litestar's ResponseSpec declares one media type per status."""

    @dataclass
    class WithAlternatives(Operation):
        def __post_init__(self) -> None:
            for status, content in also.items():
                response = (self.responses or {})[str(status)]
                response.content = {**(response.content or {}), **content}  # type: ignore[union-attr]

    return WithAlternatives


def request_body_operation(
    struct: type[msgspec.Struct],
    example: Any,
    flags: dict[str, str],
    description: str = "One loan application; fields, ranges and categories follow the model card.",
    headers: list[Parameter] | None = None,
    *,
    max_items: int | None = None,
) -> type:
    """An Operation class whose request body is `struct` (with an example) — or, with
    `max_items`, a JSON array of 1 to max_items of them —, whose boolean query parameters are
    `flags` (name → description), plus header parameters."""
    schema = msgspec.json.schema(struct)
    root = _schema(schema["$defs"][schema["$ref"].rsplit("/", 1)[-1]])
    if max_items is not None:
        root = Schema(type=OpenAPIType.ARRAY, items=root, min_items=1, max_items=max_items)
    body = RequestBody(
        content={"application/json": OpenAPIMediaType(schema=root, example=example)},
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
