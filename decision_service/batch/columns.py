"""Applications as columns: one NumPy array per field, with a mask of known (not missing) values.

Three kinds, as in the rules' fact schema: numbers (float64, plus which values are Python ints,
so a trace shows `1000` where the row path shows `1000` and `1000.0` where it shows that),
categories (int16 codes into a vocabulary, -1 = missing) and booleans. The same columns feed the
model (`matrix`, encoded exactly as the scorer encodes one request) and the vectorized rules.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from decision_service.rules.schema import FactSchema, FieldType
from decision_service.scoring.card import FeatureSpec

MISSING_CODE = -1


@dataclass
class Col:
    """One fact over n rows. `values` is meaningless where `known` is False."""

    kind: str  # number | category | boolean
    values: np.ndarray  # float64 | int16 codes | bool
    known: np.ndarray  # bool
    ints: np.ndarray | bool = False  # number: the value is a Python int at this row
    vocab: tuple[str, ...] = ()  # category: code -> value

    def py(self, i: int) -> Any:
        """The value at row i as the row path holds it (None = missing)."""
        if not self.known[i]:
            return None
        v = self.values[i]
        if self.kind == "number":
            ints = self.ints
            return int(v) if (ints if isinstance(ints, bool) else ints[i]) else float(v)
        if self.kind == "category":
            return self.vocab[v]
        return bool(v)

    def encoded(self) -> np.ndarray:
        """float64 as the model sees it: the value, the category index, 0/1; NaN = missing."""
        return np.where(self.known, self.values.astype(np.float64), np.nan)


def number(values: np.ndarray, known: np.ndarray | None = None, ints: Any = False) -> Col:
    values = np.asarray(values, dtype=np.float64)
    if known is None:
        known = np.isfinite(values)
    return Col("number", values, known, ints)


def category(codes: np.ndarray, vocab: Sequence[str]) -> Col:
    codes = np.asarray(codes, dtype=np.int16)
    return Col("category", codes, codes >= 0, False, tuple(vocab))


def boolean(values: np.ndarray, known: np.ndarray) -> Col:
    return Col("boolean", np.asarray(values, dtype=bool), np.asarray(known, dtype=bool))


@dataclass
class ApplicationColumns:
    """n validated applications: their ids and one Col per model-card feature."""

    ids: list[str]
    cols: dict[str, Col]
    n: int = field(init=False)

    def __post_init__(self) -> None:
        self.n = len(self.ids)

    def matrix(self, specs: Sequence[FeatureSpec]) -> np.ndarray:
        """The (n, features) float64 matrix in the card's order (NaN = missing)."""
        out = np.empty((self.n, len(specs)), dtype=np.float64)
        for j, spec in enumerate(specs):
            out[:, j] = self.cols[spec.name].encoded()
        return out

    def slice(self, lo: int, hi: int) -> ApplicationColumns:
        cols = {
            name: Col(
                c.kind,
                c.values[lo:hi],
                c.known[lo:hi],
                c.ints if isinstance(c.ints, bool) else c.ints[lo:hi],
                c.vocab,
            )
            for name, c in self.cols.items()
        }
        return ApplicationColumns(self.ids[lo:hi], cols)

    def take(self, index: np.ndarray) -> ApplicationColumns:
        cols = {
            name: Col(
                c.kind,
                c.values[index],
                c.known[index],
                c.ints if isinstance(c.ints, bool) else c.ints[index],
                c.vocab,
            )
            for name, c in self.cols.items()
        }
        return ApplicationColumns([self.ids[i] for i in index], cols)

    def to_arrow(self, specs: Sequence[FeatureSpec]) -> Any:
        """The applications as an Arrow table in the request's types (null = missing)."""
        import pyarrow as pa

        arrays = {"application_id": pa.array(self.ids, pa.string())}
        for spec in specs:
            c = self.cols[spec.name]
            mask = ~c.known
            if c.kind == "number":
                values = c.values.astype(np.int64) if spec.type == "integer" else c.values
                arrays[spec.name] = pa.array(np.where(mask, 0, values), mask=mask)
            elif c.kind == "boolean":
                arrays[spec.name] = pa.array(c.values, mask=mask)
            else:
                vocab = pa.array(c.vocab, pa.string())
                arrays[spec.name] = vocab.take(pa.array(np.where(mask, 0, c.values), mask=mask))
        return pa.table(arrays)

    # -- builders --------------------------------------------------------------------------

    @classmethod
    def from_structs(cls, apps: Sequence[Any], specs: Sequence[FeatureSpec]) -> ApplicationColumns:
        """From decoded Application structs (JSONL input, the audit store's requests)."""
        ids = [a.application_id for a in apps]
        cols = {}
        for spec in specs:
            raw = [getattr(a, spec.name) for a in apps]
            cols[spec.name] = from_values(raw, spec_type(spec), integer=spec.type == "integer")
        return cls(ids, cols)


def spec_type(spec: FeatureSpec) -> FieldType:
    if spec.type in ("integer", "number"):
        return FieldType("number", integer=spec.type == "integer")
    if spec.type == "boolean":
        return FieldType("boolean")
    return FieldType("category", tuple(spec.categories or ()))


def from_values(raw: Sequence[Any], ftype: FieldType, *, integer: bool | None = None) -> Col:
    """A Col from Python values (None = missing). `integer`: every value is an int (typed
    input); None: look at each value (facts given as dicts may mix ints and floats)."""
    n = len(raw)
    known = np.fromiter((v is not None for v in raw), dtype=bool, count=n)
    if ftype.kind == "number":
        values = np.fromiter((0.0 if v is None else v for v in raw), dtype=np.float64, count=n)
        if integer is None:
            ints: Any = np.fromiter((type(v) is int for v in raw), dtype=bool, count=n)
        else:
            ints = integer
        return Col("number", values, known, ints)
    if ftype.kind == "boolean":
        values = np.fromiter((bool(v) for v in raw), dtype=bool, count=n)
        return Col("boolean", values, known)
    index = {c: i for i, c in enumerate(ftype.values)}
    codes = np.fromiter(
        (MISSING_CODE if v is None else index[v] for v in raw), dtype=np.int16, count=n
    )
    return Col("category", codes, known, False, ftype.values)


def facts_columns(facts: Sequence[Mapping[str, Any]], schema: FactSchema) -> dict[str, Col]:
    """Columns of fact dicts as the engines take them (normalised by the schema first)."""
    rows = [schema.normalise(f) for f in facts]
    return {
        name: from_values([r.get(name) for r in rows], ftype)
        for name, ftype in schema.fields.items()
    }
