"""Cells of a decision table: `< 0.08`, `[0.08..0.15)`, `"owner", "rent"`, `is missing`, `-`.

A cell becomes a condition on its column built from the expression tree (`Cmp`, `In`,
`Missing`, `And`, `Not`), type-checked like any condition; errors carry an offset into the cell.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from decision_service.rules import expressions as ex
from decision_service.rules.expression_parser import _number
from decision_service.rules.schema import FieldType
from decision_service.rules.tables import Column

_INTERVAL = re.compile(
    r"^\s*(?P<lo_b>[\[\(\]])\s*(?P<lo>-?\s*[0-9.eE+-]+)\s*\.\.\s*(?P<hi>-?\s*[0-9.eE+-]+)\s*"
    r"(?P<hi_b>[\]\)\[])\s*$"
)
_OPS = ("<=", ">=", "==", "!=", "<", ">")
_NUMBER = re.compile(r"^-?(\d+(\.\d*)?([eE][+-]?\d+)?|\.\d+([eE][+-]?\d+)?)$")
_PLACEHOLDER = "_"


def cell_text(v: Any) -> str | None:
    """A YAML cell value as cell text (YAML turns `true`, `36` and `0.5` into values)."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return repr(v)
    if isinstance(v, str):
        return v
    return None


def _substitute(node: ex.Node, col: ex.Node) -> ex.Node:
    """Replace the placeholder field by the column's expression."""
    if isinstance(node, ex.Field):
        return col if node.name == _PLACEHOLDER else node
    if isinstance(node, ex.Cmp):
        return ex.Cmp(node.op, _substitute(node.left, col), _substitute(node.right, col), node.pos)
    if isinstance(node, ex.In):
        return ex.In(_substitute(node.operand, col), node.values, node.negated, node.pos)
    if isinstance(node, ex.Missing):
        return ex.Missing(_substitute(node.operand, col), node.negated, node.pos)
    if isinstance(node, ex.Not):
        return ex.Not(_substitute(node.operand, col), node.pos)
    if isinstance(node, ex.And | ex.Or):
        return type(node)(tuple(_substitute(i, col) for i in node.items), node.pos)
    if isinstance(node, ex.Arith):
        return ex.Arith(
            node.op, _substitute(node.left, col), _substitute(node.right, col), node.pos
        )
    if isinstance(node, ex.Neg):
        return ex.Neg(_substitute(node.operand, col), node.pos)
    if isinstance(node, ex.Call):
        return ex.Call(node.fn, tuple(_substitute(a, col) for a in node.args), node.pos)
    return node


def _split_items(text: str) -> list[tuple[str, int]]:
    """Comma-separated items with their offsets (commas inside quotes do not split)."""
    items, start, quote = [], 0, None
    for i, c in enumerate(text):
        if quote:
            if c == quote:
                quote = None
        elif c in "\"'":
            quote = c
        elif c == ",":
            items.append((text[start:i], start))
            start = i + 1
    items.append((text[start:], start))
    out = []
    for raw, off in items:
        stripped = raw.strip()
        out.append((stripped, off + (len(raw) - len(raw.lstrip()))))
    return out


def _literal(item: str, pos: int, col: Column) -> ex.Lit:
    if not item:
        raise ex.ExpressionError("empty value in a list of values", pos)
    if item[0] in "\"'":
        if len(item) < 2 or item[-1] != item[0]:
            raise ex.ExpressionError("unterminated text", pos)
        return ex.Lit(item[1:-1], pos)
    if _NUMBER.match(item):
        return ex.Lit(_number(item.lstrip("-")) * (-1 if item.startswith("-") else 1), pos)
    if item in {"true", "false"}:
        return ex.Lit(item == "true", pos)
    if col.type.kind == "category" and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_.-]*", item):
        return ex.Lit(item, pos)  # a bare category code
    raise ex.ExpressionError(f"cannot read {item!r} as a value", pos)


def parse_cell(text: str, col: Column, env: Mapping[str, FieldType]) -> tuple[ex.Node, str]:
    """A cell test as a condition on the column, and its text for the trace.

    Raises ExpressionError with a 0-based offset into `text`.
    """
    stripped = text.strip()
    lead = len(text) - len(text.lstrip())
    m = re.fullmatch(r"not\s*\((.*)\)\s*", stripped, re.S)
    if m:
        inner_off = lead + m.start(1)
        try:
            node, shown = parse_cell(m.group(1), col, env)
        except ex.ExpressionError as e:
            raise ex.ExpressionError(e.message, e.pos + inner_off) from None
        return ex.Not(node, lead), f"not ({shown})"
    if stripped in {"is missing", "is not missing"}:
        if not isinstance(col.node, ex.Field):
            raise ex.ExpressionError("`is missing` applies to a column that is a field", lead)
        node = ex.Missing(col.node, stripped == "is not missing", lead)
        return node, f"{col.text} {stripped}"
    for op in _OPS:
        if stripped.startswith(op):
            # parse "_ <op> <rest>" so that offsets map back to the cell by a fixed shift
            shift = len(_PLACEHOLDER) + 1 - lead
            try:
                parsed = ex.parse(f"{_PLACEHOLDER} {text.lstrip()}")
            except ex.ExpressionError as e:
                raise ex.ExpressionError(e.message, max(e.pos - shift, 0)) from None
            if not isinstance(parsed, ex.Cmp) or not (
                isinstance(parsed.left, ex.Field) and parsed.left.name == _PLACEHOLDER
            ):
                raise ex.ExpressionError("a cell compares the column with one value", lead)
            checked = _check(parsed, col, env, shift)
            return _substitute(checked, col.node), f"{col.text} {stripped}"
    m = _INTERVAL.match(text)
    if m:
        if col.type.kind != "number":
            raise ex.ExpressionError(f"an interval needs a number column, not {col.type.kind}", 0)
        try:
            lo = float(m.group("lo").replace(" ", ""))
            hi = float(m.group("hi").replace(" ", ""))
        except ValueError:
            raise ex.ExpressionError("interval bounds must be numbers", m.start("lo")) from None
        lo_v = int(lo) if lo.is_integer() and "." not in m.group("lo") else lo
        hi_v = int(hi) if hi.is_integer() and "." not in m.group("hi") else hi
        if lo > hi or (lo == hi and not (m.group("lo_b") == "[" and m.group("hi_b") == "]")):
            raise ex.ExpressionError(f"empty interval {stripped}", m.start("lo"))
        lo_op = ">=" if m.group("lo_b") == "[" else ">"
        hi_op = "<=" if m.group("hi_b") == "]" else "<"
        node = ex.And(
            (
                ex.Cmp(lo_op, col.node, ex.Lit(lo_v, m.start("lo")), m.start("lo")),
                ex.Cmp(hi_op, col.node, ex.Lit(hi_v, m.start("hi")), m.start("hi")),
            ),
            lead,
        )
        return node, f"{col.text} in {stripped}"
    if stripped.startswith(("[", "(", "]")):
        raise ex.ExpressionError(
            "write an interval as [lo..hi], [lo..hi), (lo..hi] or (lo..hi)", lead
        )
    items = _split_items(text)
    lits = tuple(_literal(item, off, col) for item, off in items)
    if len(lits) == 1:
        node: ex.Node = ex.Cmp("==", ex.Field(_PLACEHOLDER, 0), lits[0], lits[0].pos)
    else:
        node = ex.In(ex.Field(_PLACEHOLDER, 0), lits, False, lits[0].pos)
    checked = _check(node, col, env, 0)
    final = _substitute(checked, col.node)
    return final, ex.unparse(final)


def _check(node: ex.Node, col: Column, env: Mapping[str, FieldType], shift: int) -> ex.Node:
    local = {**env, _PLACEHOLDER: col.type}
    try:
        return ex.check_condition(node, local)
    except ex.ExpressionError as e:
        raise ex.ExpressionError(e.message, max(e.pos - shift, 0)) from None
