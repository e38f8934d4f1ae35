"""Evaluating the condition language, three-valued (Kleene): the reference semantics used for
the trace, caps and computes on the durable engine, and tests. None is unknown.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from decision_service.rules.expression_tree import (
    And,
    Arith,
    Call,
    Cmp,
    Field,
    In,
    Lit,
    Missing,
    Neg,
    Node,
    Not,
    Or,
)


def finite(x: Any) -> Any:
    """Non-finite arithmetic results are unknown."""
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


def value(node: Node, facts: Mapping[str, Any]) -> Any:
    """Value of a value expression; None means missing/unknown."""
    if isinstance(node, Lit):
        return node.value
    if isinstance(node, Field):
        return facts.get(node.name)
    if isinstance(node, Neg):
        v = value(node.operand, facts)
        return None if v is None else -v
    if isinstance(node, Arith):
        a = value(node.left, facts)
        b = value(node.right, facts)
        if a is None or b is None:
            return None
        if node.op == "+":
            return finite(a + b)
        if node.op == "-":
            return finite(a - b)
        if node.op == "*":
            return finite(a * b)
        if b == 0:
            return None
        return finite(a / b)
    if isinstance(node, Call):
        args = [value(a, facts) for a in node.args]
        if any(a is None for a in args):
            return None
        return min(args) if node.fn == "min" else max(args)
    raise TypeError(f"not a value expression: {node!r}")


def truth(node: Node, facts: Mapping[str, Any]) -> bool | None:
    """Kleene three-valued truth of a (type-checked) condition: True, False or None (unknown)."""
    if isinstance(node, And):
        result: bool | None = True
        for item in node.items:
            t = truth(item, facts)
            if t is False:
                return False
            if t is None:
                result = None
        return result
    if isinstance(node, Or):
        result = False
        for item in node.items:
            t = truth(item, facts)
            if t is True:
                return True
            if t is None:
                result = None
        return result
    if isinstance(node, Not):
        t = truth(node.operand, facts)
        return None if t is None else not t
    if isinstance(node, Missing):
        is_missing = value(node.operand, facts) is None
        return not is_missing if node.negated else is_missing
    if isinstance(node, In):
        v = value(node.operand, facts)
        if v is None:
            return None
        found = any(v == lit.value for lit in node.values)
        return not found if node.negated else found
    if isinstance(node, Cmp):
        a = value(node.left, facts)
        b = value(node.right, facts)
        if a is None or b is None:
            return None
        return _COMPARE[node.op](a, b)
    raise TypeError(f"not a condition: {node!r}")


_COMPARE = {
    "==": lambda a, b: a == b,
    "!=": lambda a, b: a != b,
    "<": lambda a, b: a < b,
    "<=": lambda a, b: a <= b,
    ">": lambda a, b: a > b,
    ">=": lambda a, b: a >= b,
}
