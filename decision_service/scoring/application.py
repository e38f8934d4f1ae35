"""The application (request) type, built from the model card, and its feature vector.

Constraints live on the type (msgspec `Meta`), so decoding is validation. Missing values follow
the card: a feature with `missing: allow` may be null or absent (the model sees NaN, rules see
`is missing`); every other feature is required. Unknown fields are rejected, never ignored: a
misspelt optional field would otherwise be silently scored as missing.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Sequence
from functools import cache
from typing import Annotated, Any, Literal

import msgspec

from decision_service.scoring.card import FeatureSpec, ModelCard

ApplicationId = Annotated[
    str,
    msgspec.Meta(
        min_length=1,
        max_length=64,
        # `(?!\n)`: Python's `$` also matches before a final newline; JSON Schema's does not.
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._:-]*(?!\n)$",
        description="The lender's own id for this application",
    ),
]


def _field_type(spec: FeatureSpec) -> Any:
    meta: dict[str, Any] = {"description": spec.description}
    if spec.range is not None:
        meta |= {"ge": spec.range[0], "le": spec.range[1]}
    if spec.type == "integer":
        if spec.range is not None:
            meta |= {"ge": int(spec.range[0]), "le": int(spec.range[1])}
        tp: Any = Annotated[int, msgspec.Meta(**meta)]
    elif spec.type == "number":
        tp = Annotated[float, msgspec.Meta(**meta)]
    elif spec.type == "boolean":
        tp = Annotated[bool, msgspec.Meta(**meta)]
    else:
        assert spec.categories, f"category feature {spec.name} has no categories"
        tp = Annotated[Literal[spec.categories], msgspec.Meta(**meta)]  # type: ignore[valid-type]
    return tp | None if spec.missing == "allow" else tp


def _build_type(features: tuple[FeatureSpec, ...]) -> type[msgspec.Struct]:
    required = [(f.name, _field_type(f)) for f in features if f.missing == "reject"]
    optional = [(f.name, _field_type(f), None) for f in features if f.missing == "allow"]
    return msgspec.defstruct(
        "Application",
        [("application_id", ApplicationId), *required, *optional],
        forbid_unknown_fields=True,
        frozen=True,
        module=__name__,
    )


@cache
def _type_for(features: tuple[FeatureSpec, ...]) -> type[msgspec.Struct]:
    return _build_type(features)


def application_type(card: ModelCard) -> type[msgspec.Struct]:
    """The msgspec Struct an application must decode into for this model (its request fields,
    which may include fields the model does not use)."""
    return _type_for(card.request_fields)


class FieldError(msgspec.Struct, frozen=True):
    field: str  # JSON path, e.g. "$.income"
    message: str


class InvalidApplication(ValueError):
    """A body that is not a valid application; `errors` names every bad field."""

    def __init__(self, errors: list[FieldError]) -> None:
        super().__init__("; ".join(f"{e.field}: {e.message}" for e in errors))
        self.errors = errors


# What a hostile body can make a JSON decoder raise besides its own errors: invalid UTF-8 inside
# a string, and nesting deep enough to exhaust the untyped decoder's recursion.
_UNREADABLE = (msgspec.DecodeError, UnicodeDecodeError, RecursionError)


def _unreadable(exc: Exception) -> FieldError:
    if isinstance(exc, UnicodeDecodeError):
        return FieldError("$", f"body is not valid UTF-8 (byte {exc.start})")
    if isinstance(exc, RecursionError):
        return FieldError("$", "malformed JSON: nested too deeply")
    return FieldError("$", f"malformed JSON: {exc}")


def _bare(info: Any) -> Any:
    while isinstance(info, msgspec.inspect.Metadata):  # Annotated[...] constraints, unwrapped
        info = info.type
    return info


@cache
def _integer_fields(app_type: type[msgspec.Struct]) -> frozenset[str]:
    """The JSON names of the integer fields (nullable or not)."""
    out = set()
    for f in msgspec.structs.fields(app_type):
        info = _bare(msgspec.inspect.type_info(f.type))
        kinds = info.types if isinstance(info, msgspec.inspect.UnionType) else (info,)
        if any(isinstance(_bare(k), msgspec.inspect.IntType) for k in kinds):
            out.add(f.encode_name)
    return frozenset(out)


def _integral(raw: dict[str, Any], ints: frozenset[str]) -> dict[str, Any] | None:
    """`raw` with the integral floats of integer fields as ints; None if it has none."""
    fixed = {k: int(v) for k, v in raw.items() if k in ints and type(v) is float and v.is_integer()}
    return raw | fixed if fixed else None


def integral_floats(app_type: type[msgspec.Struct], body: bytes | str) -> msgspec.Struct | None:
    """The application of a body msgspec refused, if integral floats (`"age": 30.0`) were its
    only fault: JSON Schema's `integer` is any number without a fractional part, and msgspec's
    strict `int` takes none. Slow path, only taken for bodies the fast decoder refused."""
    try:
        raw = msgspec.json.decode(body)
    except _UNREADABLE:
        return None
    fixed = _integral(raw, _integer_fields(app_type)) if isinstance(raw, dict) else None
    if fixed is None:
        return None
    try:
        return msgspec.convert(fixed, app_type)
    except msgspec.ValidationError:
        return None


@cache
def _decoder(app_type: type[msgspec.Struct]) -> msgspec.json.Decoder:
    return msgspec.json.Decoder(app_type)


def decode_application(app_type: type[msgspec.Struct], body: bytes | str) -> msgspec.Struct:
    """msgspec's typed decode, integral floats of integer fields taken as integers (as by
    `ApplicationDecoder`): for stored requests (replay) and batch lines. Raises msgspec's
    errors."""
    try:
        return _decoder(app_type).decode(body)
    except msgspec.ValidationError:
        app = integral_floats(app_type, body)
        if app is None:
            raise
        return app


class ApplicationDecoder:
    """Body bytes → a validated application, or InvalidApplication naming every bad field.

    An integer field takes an integral float as that integer (30.0 is 30; 30.5 is refused): on
    the slow path only, so valid integer bodies decode at msgspec's speed.

    Duplicate keys are refused: msgspec keeps the last one silently, so `{"age": 46, "age": 99}`
    would be decided on 99 while a reader of the stored request (or a proxy that checked it)
    sees 46. Without a backslash in the body no string can hold a quote, so every `"name":`
    is a key and one regex pass finds repeats (~1 µs); escaped bodies take the exact check.
    """

    def __init__(self, app_type: type[msgspec.Struct]) -> None:
        self.app_type = app_type
        self._decode = msgspec.json.Decoder(app_type).decode
        fields = msgspec.structs.fields(app_type)
        names = b"|".join(re.escape(f.encode_name.encode()) for f in fields)
        self._keys = re.compile(rb'"(' + names + rb')"\s*:').findall

    def __call__(self, body: bytes) -> msgspec.Struct:
        try:
            app = self._decode(body)
        except (msgspec.ValidationError, *_UNREADABLE):
            app = integral_floats(self.app_type, body)
            if app is None:
                raise InvalidApplication(field_errors(self.app_type, body)) from None
        duplicate = self._duplicate_key(body)
        if duplicate is not None:
            raise InvalidApplication([FieldError(f"$.{duplicate}", "duplicate key")])
        return app

    def _duplicate_key(self, body: bytes) -> str | None:
        if b"\\" in body:
            seen: list[str] = []
            json.loads(body, object_pairs_hook=lambda pairs: seen.extend(k for k, _ in pairs))
        else:
            seen = [k.decode() for k in self._keys(body)]
        if len(seen) == len(set(seen)):
            return None
        return next(k for i, k in enumerate(seen) if k in seen[:i])


def field_errors(app_type: type[msgspec.Struct], body: bytes) -> list[FieldError]:
    """Every bad field of a body that failed to decode (msgspec stops at the first).

    Slow path, only taken for invalid input: each field is checked on its own.
    """
    try:
        raw = msgspec.json.decode(body)
    except _UNREADABLE as exc:
        return [_unreadable(exc)]
    if not isinstance(raw, dict):
        return [FieldError("$", "expected a JSON object")]
    raw = _integral(raw, _integer_fields(app_type)) or raw
    fields = msgspec.structs.fields(app_type)
    known = {f.encode_name for f in fields}
    errors = [FieldError(f"$.{k}", "unknown field") for k in raw if k not in known]
    for f in fields:
        if f.encode_name not in raw:
            if f.required:
                errors.append(FieldError(f"$.{f.encode_name}", "required field is missing"))
            continue
        probe = msgspec.defstruct("Probe", [(f.name, f.type)])
        try:
            msgspec.convert({f.encode_name: raw[f.encode_name]}, probe)
        except msgspec.ValidationError as exc:
            message = str(exc).removesuffix(f" - at `$.{f.encode_name}`")
            errors.append(FieldError(f"$.{f.encode_name}", message))
    return errors


Encoder = Callable[[Any], float]


def _encoder(spec: FeatureSpec) -> Encoder:
    nan = math.nan
    if spec.type == "category":
        codes = {c: float(i) for i, c in enumerate(spec.categories or ())}
        return lambda v: nan if v is None else codes[v]
    if spec.type == "boolean":
        return lambda v: nan if v is None else (1.0 if v else 0.0)
    return lambda v: nan if v is None else float(v)


def feature_encoders(features: Sequence[FeatureSpec]) -> list[tuple[str, Encoder]]:
    return [(f.name, _encoder(f)) for f in features]
