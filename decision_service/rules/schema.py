"""The facts a rule may see: application fields (from the model card) and model outputs."""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, Literal

import msgspec
import yaml

Kind = Literal["number", "category", "boolean"]


class FieldType(msgspec.Struct, frozen=True):
    """Type of one fact: a number, one of a closed set of category codes, or a boolean."""

    kind: Kind
    values: tuple[str, ...] = ()  # category codes (category only)
    integer: bool = False  # an integer-valued number (informative; numbers compare as reals)

    def describe(self) -> str:
        if self.kind == "category":
            return "category (" + ", ".join(self.values) + ")"
        return self.kind


NUMBER = FieldType("number")
INTEGER = FieldType("number", integer=True)
BOOLEAN = FieldType("boolean")


def category(*values: str) -> FieldType:
    return FieldType("category", tuple(values))


class FactError(ValueError):
    """A fact has the wrong type for the schema (raised before any rule runs)."""


# Model outputs: always present when rules run.
MODEL_OUTPUTS: dict[str, FieldType] = {"pd": NUMBER}


class FactSchema(msgspec.Struct, frozen=True, dict=True):  # dict: the cached normaliser
    fields: dict[str, FieldType]
    optional: frozenset[str] = frozenset()

    @classmethod
    def from_card_features(cls, features: Iterable[Mapping[str, Any]]) -> FactSchema:
        """Build from the model card's feature list (dicts: name, type, categories, missing)."""
        fields: dict[str, FieldType] = {}
        optional: set[str] = set()
        for feature in features:
            name = feature["name"]
            kind = feature["type"]
            if kind == "integer":
                fields[name] = INTEGER
            elif kind == "number":
                fields[name] = NUMBER
            elif kind == "boolean":
                fields[name] = BOOLEAN
            elif kind == "category":
                fields[name] = category(*(str(c) for c in feature["categories"]))
            else:
                raise ValueError(f"feature {name!r}: unknown type {kind!r}")
            if feature.get("missing", "reject") == "allow":
                optional.add(name)
        for name, ftype in MODEL_OUTPUTS.items():
            fields.setdefault(name, ftype)
        return cls(fields=fields, optional=frozenset(optional))

    @classmethod
    def from_card_file(cls, path: Path) -> FactSchema:
        """Build from a model card file (model_card.yaml) without loading the model."""
        return cls.from_card_features(yaml.safe_load(path.read_text())["features"])

    def normalise(self, facts: Mapping[str, Any]) -> dict[str, Any]:
        """Strict copy of `facts`: numbers are int/float, booleans bool, categories known codes.

        None and NaN mean missing and are dropped; unknown keys are dropped (rules cannot use
        them); a value of the wrong type raises FactError.
        """
        return self.normaliser(facts)

    @functools.cached_property
    def normaliser(self) -> Callable[[Mapping[str, Any]], dict[str, Any]]:
        """`normalise` as one generated straight-line function, built once per schema: a fast
        accept per field for values that are already exactly right (every decoded request),
        `normalise_value` (the strict path: NaN, infinities, wrong types) for anything else.
        Keys come out in schema order: rules read facts by name."""
        lines = ["def normalise(facts):", "    g = facts.get", "    out = {}"]
        env: dict[str, Any] = {"normalise_value": normalise_value, "inf": math.inf}
        for i, (name, ftype) in enumerate(self.fields.items()):
            env[f"T{i}"], env[f"V{i}"] = ftype, frozenset(ftype.values)
            if ftype.kind == "number":
                ok = "(t is int or (t is float and -inf < v < inf))"
            elif ftype.kind == "boolean":
                ok = "t is bool"
            else:
                ok = f"(t is str and v in V{i})"
            lines += [
                f"    v = g({name!r})",
                "    if v is not None:",
                "        t = type(v)",
                f"        out[{name!r}] = v if {ok} else normalise_value({name!r}, T{i}, v)",
            ]
        lines.append("    return out")
        exec(compile("\n".join(lines), "<normalise>", "exec"), env)  # names from our schema
        return env["normalise"]


def normalise_value(name: str, ftype: FieldType, value: Any) -> Any:
    kind = ftype.kind
    if kind == "number":
        if isinstance(value, bool) or not isinstance(value, int | float):
            # numpy scalars: accept via their Python value
            item = getattr(value, "item", None)
            if item is None or isinstance(value, bool | str):
                raise FactError(f"{name}: expected a number, got {value!r}")
            value = item()
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise FactError(f"{name}: expected a number, got {value!r}")
        if isinstance(value, float):
            if math.isnan(value):
                return None
            if math.isinf(value):
                raise FactError(f"{name}: infinite value")
        return value
    if kind == "boolean":
        if not isinstance(value, bool):
            item = getattr(value, "item", None)
            value = item() if item is not None else value
            if not isinstance(value, bool):
                raise FactError(f"{name}: expected true/false, got {value!r}")
        return value
    if not isinstance(value, str):
        raise FactError(f"{name}: expected one of {', '.join(ftype.values)}, got {value!r}")
    if value not in ftype.values:
        raise FactError(f"{name}: {value!r} is not one of {', '.join(ftype.values)}")
    return value


def card_schema(card: Any) -> FactSchema:
    """The facts rules may use: the model card's application fields and the model's outputs.
    (Here, not in service.py, so that `rules check` need not import the whole service.)"""
    return FactSchema.from_card_features(msgspec.to_builtins(card.request_fields))
