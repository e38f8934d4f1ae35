"""Type checking the condition language against the fields in scope (a FactSchema's types):
conditions, numeric expressions, and category literals checked against their field's values.
"""

from __future__ import annotations

from collections.abc import Mapping

from decision_service.rules.expression_tree import (
    And,
    Arith,
    Call,
    Cmp,
    ExpressionError,
    Field,
    In,
    Lit,
    Missing,
    Neg,
    Node,
    Not,
    Or,
)
from decision_service.rules.schema import BOOLEAN, NUMBER, FieldType

LOGIC = "logic"


def check_condition(node: Node, env: Mapping[str, FieldType]) -> Node:
    """Type-check a `when` condition and return it with bare boolean fields made explicit."""
    node = _logic(node, env)
    return node


def check_number(node: Node, env: Mapping[str, FieldType]) -> Node:
    """Type-check a numeric expression (compute, max_amount)."""
    t = _value_type(node, env)
    if t.kind != "number":
        raise ExpressionError(f"expected a number, got {t.describe()}", node.pos)
    return node


def _logic(node: Node, env: Mapping[str, FieldType]) -> Node:
    if isinstance(node, And):
        return And(tuple(_logic(i, env) for i in node.items), node.pos)
    if isinstance(node, Or):
        return Or(tuple(_logic(i, env) for i in node.items), node.pos)
    if isinstance(node, Not):
        return Not(_logic(node.operand, env), node.pos)
    if isinstance(node, Missing):
        _value_type(node.operand, env)
        if not isinstance(node.operand, Field):
            raise ExpressionError("`is missing` applies to a field", node.pos)
        return node
    if isinstance(node, Cmp):
        lt = _value_type(node.left, env)
        rt = _value_type(node.right, env)
        if lt.kind != rt.kind:
            raise ExpressionError(
                f"cannot compare {lt.describe()} with {rt.describe()} (`{node.op}`)", node.pos
            )
        if node.op not in {"==", "!="} and lt.kind != "number":
            raise ExpressionError(f"`{node.op}` needs numbers, got {lt.kind}", node.pos)
        if isinstance(node.left, Lit) and isinstance(node.right, Lit):
            raise ExpressionError("comparison of two literals", node.pos)
        for side, other in ((node.left, rt), (node.right, lt)):
            _check_category_literal(side, other)
        return node
    if isinstance(node, In):
        t = _value_type(node.operand, env)
        if t.kind == "number":
            pass
        for lit in node.values:
            lt = _value_type(lit, env)
            if lt.kind != t.kind:
                raise ExpressionError(
                    f"list value {lit.value!r} is {lt.kind}, field is {t.describe()}", lit.pos
                )
            _check_category_literal(lit, t)
        return node
    t = _value_type(node, env)
    if t.kind == "boolean":  # a bare boolean field: `records` means `records == true`
        return Cmp("==", node, Lit(True, node.pos), node.pos)
    raise ExpressionError(f"expected a condition, got a {t.kind} value", node.pos)


def _check_category_literal(node: Node, ftype: FieldType) -> None:
    if isinstance(node, Lit) and ftype.kind == "category" and node.value not in ftype.values:
        raise ExpressionError(
            f"{node.value!r} is not a valid value; expected one of {', '.join(ftype.values)}",
            node.pos,
        )


def _value_type(node: Node, env: Mapping[str, FieldType]) -> FieldType:
    if isinstance(node, Lit):
        v = node.value
        if isinstance(v, bool):
            return BOOLEAN
        if isinstance(v, str):
            return FieldType("category", (v,))
        return NUMBER
    if isinstance(node, Field):
        t = env.get(node.name)
        if t is None:
            known = ", ".join(sorted(env))
            raise ExpressionError(f"unknown field {node.name!r} (known: {known})", node.pos)
        return t
    if isinstance(node, Arith | Neg | Call):
        operands = (
            (node.left, node.right)
            if isinstance(node, Arith)
            else (node.operand,)
            if isinstance(node, Neg)
            else node.args
        )
        for operand in operands:
            t = _value_type(operand, env)
            if t.kind != "number":
                what = node.fn + "()" if isinstance(node, Call) else "arithmetic"
                raise ExpressionError(f"{what} needs numbers, got {t.describe()}", operand.pos)
        return NUMBER
    raise ExpressionError("a condition cannot be used as a value here", node.pos)
