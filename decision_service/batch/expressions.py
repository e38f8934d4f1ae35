"""Expressions of the rule language over columns: the validated syntax tree (rules/expressions.py
nodes) compiled to NumPy operations.

A value is a `Col` (values, known); a condition is compiled once into a function giving, for
`negate=False`, the mask of rows where it is definitely true and, for `negate=True`, where it is
definitely false: the compiled engine's T/F construction, so three-valued logic is the same.
A new node of the language is one entry in `_VALUE` or `_TRUTH`.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from typing import Any

import numpy as np

from decision_service.batch.columns import Col
from decision_service.rules import expressions as ex

Env = dict[str, Col]
Value = Callable[[Env], Col]  # a compiled value expression
Truth = Callable[[Env, bool], np.ndarray]  # (env, negate) -> mask where (not) definitely true

_CMP: dict[str, Callable[[Any, Any], np.ndarray]] = {
    "==": operator.eq,
    "!=": operator.ne,
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}
_ARITH = {"+": np.add, "-": np.subtract, "*": np.multiply, "/": np.divide}


# -- value expressions -----------------------------------------------------------------------


def _lit(node: ex.Lit) -> Value:
    v = node.value
    if isinstance(v, bool):
        col = Col("boolean", np.bool_(v), np.bool_(True))
    elif isinstance(v, str):
        col = Col("category", v, np.bool_(True), False, (v,))  # matched by value, see _codes
    else:
        col = Col("number", np.float64(v), np.bool_(True), type(v) is int)
    return lambda env: col


def _field(node: ex.Field) -> Value:
    name = node.name
    return lambda env: env[name]


def _neg(node: ex.Neg) -> Value:
    operand = value(node.operand)

    def run(env: Env) -> Col:
        c = operand(env)
        return Col("number", -c.values, c.known, c.ints)

    return run


def _arith(node: ex.Arith) -> Value:
    left, right, op, div = value(node.left), value(node.right), _ARITH[node.op], node.op == "/"

    def run(env: Env) -> Col:
        a, b = left(env), right(env)
        with np.errstate(all="ignore"):
            r = op(a.values, b.values)
        known = a.known & b.known & np.isfinite(r)
        if div:
            known &= b.values != 0
        ints = False if div else _and(a.ints, b.ints)
        return Col("number", r, known, ints)

    return run


def _call(node: ex.Call) -> Value:
    args = [value(a) for a in node.args]
    better = operator.lt if node.fn == "min" else operator.gt

    def run(env: Env) -> Col:
        # Python's min/max keep the first of equal values: that decides int vs float
        cols = [a(env) for a in args]
        best = cols[0]
        v, known, ints = best.values, best.known, best.ints
        for c in cols[1:]:
            take = better(c.values, v)
            v = np.where(take, c.values, v)
            ints = np.where(take, c.ints, ints)
            known = known & c.known
        return Col("number", v, known, ints)

    return run


def _and(a: Any, b: Any) -> Any:
    if isinstance(a, bool) and isinstance(b, bool):
        return a and b
    return np.logical_and(a, b)


_VALUE: dict[type, Callable[[Any], Value]] = {
    ex.Lit: _lit,
    ex.Field: _field,
    ex.Neg: _neg,
    ex.Arith: _arith,
    ex.Call: _call,
}


def value(node: ex.Node) -> Value:
    return _VALUE[type(node)](node)


# -- conditions: masks of "definitely true" (negate=False) / "definitely false" (True) --------


def _comparable(a: Col, b: Col) -> tuple[Any, Any]:
    """Values of two operands that compare as the row path's do. Categories compare by text:
    a literal becomes the other side's code, two columns their texts."""
    if a.kind != "category":
        return a.values, b.values
    if isinstance(a.values, str) or isinstance(b.values, str):
        lit, col = (a, b) if isinstance(a.values, str) else (b, a)
        code = col.vocab.index(lit.values) if lit.values in col.vocab else -2
        return (code, col.values) if lit is a else (col.values, code)
    return _texts(a), _texts(b)


def _texts(c: Col) -> np.ndarray:
    return np.asarray((*c.vocab, ""), dtype=object)[c.values]


def _cmp(node: ex.Cmp) -> Truth:
    left, right = value(node.left), value(node.right)

    def run(env: Env, negate: bool) -> np.ndarray:
        a, b = left(env), right(env)
        x, y = _comparable(a, b)
        op = ex.INVERSE[node.op] if negate else node.op
        return a.known & b.known & _CMP[op](x, y)

    return run


def _in(node: ex.In) -> Truth:
    operand = value(node.operand)
    wanted = [lit.value for lit in node.values]

    def run(env: Env, negate: bool) -> np.ndarray:
        c = operand(env)
        if c.kind == "category":
            codes = [c.vocab.index(v) for v in wanted if v in c.vocab]
            found = np.isin(c.values, codes)
        else:
            found = np.isin(c.values, wanted)
        return c.known & (found if node.negated == negate else ~found)

    return run


def _missing(node: ex.Missing) -> Truth:
    operand = value(node.operand)

    def run(env: Env, negate: bool) -> np.ndarray:
        known = operand(env).known
        return ~known if node.negated == negate else known

    return run


def _all(items: list[Truth], env: Env, negate: bool) -> np.ndarray:
    out = items[0](env, negate)
    for t in items[1:]:
        out = out & t(env, negate)
    return out


def _any(items: list[Truth], env: Env, negate: bool) -> np.ndarray:
    out = items[0](env, negate)
    for t in items[1:]:
        out = out | t(env, negate)
    return out


def _and_node(node: ex.And) -> Truth:
    items = [truth(i) for i in node.items]
    return lambda env, negate: (_any if negate else _all)(items, env, negate)


def _or_node(node: ex.Or) -> Truth:
    items = [truth(i) for i in node.items]
    return lambda env, negate: (_all if negate else _any)(items, env, negate)


def _not(node: ex.Not) -> Truth:
    operand = truth(node.operand)
    return lambda env, negate: operand(env, not negate)


_TRUTH: dict[type, Callable[[Any], Truth]] = {
    ex.Cmp: _cmp,
    ex.In: _in,
    ex.Missing: _missing,
    ex.And: _and_node,
    ex.Or: _or_node,
    ex.Not: _not,
}


def truth(node: ex.Node) -> Truth:
    return _TRUTH[type(node)](node)
