"""The syntax tree of the condition language: its nodes, ExpressionError (message and offset),
and the transforms on a tree: the fields it reads, negation normal form, and source text.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Union


@dataclass(frozen=True, slots=True)
class Lit:
    value: Any  # int | float | str | bool
    pos: int


@dataclass(frozen=True, slots=True)
class Field:
    name: str
    pos: int


@dataclass(frozen=True, slots=True)
class Arith:
    op: str  # + - * /
    left: Node
    right: Node
    pos: int


@dataclass(frozen=True, slots=True)
class Neg:
    operand: Node
    pos: int


@dataclass(frozen=True, slots=True)
class Call:
    fn: str  # min | max
    args: tuple[Node, ...]
    pos: int


@dataclass(frozen=True, slots=True)
class Cmp:
    op: str  # == != < <= > >=
    left: Node
    right: Node
    pos: int


@dataclass(frozen=True, slots=True)
class In:
    operand: Node
    values: tuple[Lit, ...]
    negated: bool
    pos: int


@dataclass(frozen=True, slots=True)
class Missing:
    operand: Node
    negated: bool  # `is not missing`
    pos: int


@dataclass(frozen=True, slots=True)
class And:
    items: tuple[Node, ...]
    pos: int


@dataclass(frozen=True, slots=True)
class Or:
    items: tuple[Node, ...]
    pos: int


@dataclass(frozen=True, slots=True)
class Not:
    operand: Node
    pos: int


Node = Union[Lit, Field, Arith, Neg, Call, Cmp, In, Missing, And, Or, Not]  # noqa: UP007


class ExpressionError(ValueError):
    def __init__(self, message: str, pos: int) -> None:
        super().__init__(message)
        self.message = message
        self.pos = pos


def fields_of(node: Node) -> list[str]:
    """Every field the expression reads, in order of first appearance."""
    out: dict[str, None] = {}

    def walk(n: Node) -> None:
        if isinstance(n, Field):
            out.setdefault(n.name)
        elif isinstance(n, Arith):
            walk(n.left)
            walk(n.right)
        elif isinstance(n, Neg | Not | Missing | In):
            walk(n.operand)
        elif isinstance(n, Call):
            for a in n.args:
                walk(a)
        elif isinstance(n, Cmp):
            walk(n.left)
            walk(n.right)
        elif isinstance(n, And | Or):
            for i in n.items:
                walk(i)

    walk(node)
    return list(out)


INVERSE = {"==": "!=", "!=": "==", "<": ">=", "<=": ">", ">": "<=", ">=": "<"}
FLIP = {"==": "==", "!=": "!=", "<": ">", "<=": ">=", ">": "<", ">=": "<="}


def to_nnf(node: Node, negate: bool = False) -> Node:
    """Push `not` down to the atoms (De Morgan, inverted comparisons).

    Exact under Kleene logic: a comparison on a missing value is unknown either way, and
    `not (x is missing)` is `x is not missing`. The result has no `Not` nodes.
    """
    if isinstance(node, Not):
        return to_nnf(node.operand, not negate)
    if isinstance(node, And):
        items = tuple(to_nnf(i, negate) for i in node.items)
        return Or(items, node.pos) if negate else And(items, node.pos)
    if isinstance(node, Or):
        items = tuple(to_nnf(i, negate) for i in node.items)
        return And(items, node.pos) if negate else Or(items, node.pos)
    if not negate:
        return node
    if isinstance(node, Cmp):
        return Cmp(INVERSE[node.op], node.left, node.right, node.pos)
    if isinstance(node, In):
        return In(node.operand, node.values, not node.negated, node.pos)
    if isinstance(node, Missing):
        return Missing(node.operand, not node.negated, node.pos)
    raise TypeError(f"not a condition: {node!r}")


def unparse(node: Node) -> str:
    """Canonical source text of an expression (for messages and generated names)."""
    if isinstance(node, Lit):
        v = node.value
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, str):
            return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
        return repr(v)
    if isinstance(node, Field):
        return node.name
    if isinstance(node, Neg):
        return f"-({unparse(node.operand)})"
    if isinstance(node, Arith):
        return f"({unparse(node.left)} {node.op} {unparse(node.right)})"
    if isinstance(node, Call):
        return f"{node.fn}({', '.join(unparse(a) for a in node.args)})"
    if isinstance(node, Cmp):
        return f"{unparse(node.left)} {node.op} {unparse(node.right)}"
    if isinstance(node, In):
        vals = ", ".join(unparse(v) for v in node.values)
        return f"{unparse(node.operand)} {'not in' if node.negated else 'in'} [{vals}]"
    if isinstance(node, Missing):
        return f"{unparse(node.operand)} is {'not ' if node.negated else ''}missing"
    if isinstance(node, Not):
        return f"not ({unparse(node.operand)})"
    if isinstance(node, And):
        return "(" + " and ".join(unparse(i) for i in node.items) + ")"
    if isinstance(node, Or):
        return "(" + " or ".join(unparse(i) for i in node.items) + ")"
    raise TypeError(repr(node))
