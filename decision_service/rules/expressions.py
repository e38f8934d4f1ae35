"""The condition language: tokenizer, recursive-descent parser, type checker, evaluator.

Nothing here calls `eval`. Semantics are three-valued (Kleene): a comparison on a missing value
is unknown (None), `not unknown` is unknown, and a rule fires only when its condition is True.
Arithmetic on a missing value, division by zero and non-finite results are unknown too.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Union

from decision_service.rules.schema import BOOLEAN, NUMBER, FieldType

# ---------------------------------------------------------------------------------------------
# AST


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


# ---------------------------------------------------------------------------------------------
# Tokenizer

_TOKEN = re.compile(
    r"""(?P<ws>\s+)
      | (?P<num>\d+(?:\.\d*)?(?:[eE][+-]?\d+)?|\.\d+(?:[eE][+-]?\d+)?)
      | (?P<str>"(?:[^"\\\n]|\\.)*"|'(?:[^'\\\n]|\\.)*')
      | (?P<name>[A-Za-z_][A-Za-z_0-9]*)
      | (?P<op>==|!=|<=|>=|<|>|\+|-|\*|/|\(|\)|\[|\]|,)
    """,
    re.VERBOSE,
)
KEYWORDS = {"and", "or", "not", "in", "is", "missing", "true", "false"}
FUNCTIONS = {"min", "max"}


@dataclass(frozen=True, slots=True)
class Token:
    kind: str  # num str name op kw end
    text: str
    pos: int


def tokenize(text: str) -> list[Token]:
    tokens: list[Token] = []
    pos = 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None:
            raise ExpressionError(f"unexpected character {text[pos]!r}", pos)
        kind = m.lastgroup or ""
        if kind != "ws":
            word = m.group()
            if kind == "name" and word in KEYWORDS:
                kind = "kw"
            elif kind == "name" and word in {"True", "False", "None", "null", "AND", "OR"}:
                hint = {"True": "true", "False": "false", "AND": "and", "OR": "or"}.get(word)
                msg = f"unknown name {word!r}" + (f" (did you mean {hint!r}?)" if hint else "")
                if word in {"None", "null"}:
                    msg = f"{word!r} is not a value here: use `field is missing`"
                raise ExpressionError(msg, pos)
            tokens.append(Token(kind, word, pos))
        pos = m.end()
    tokens.append(Token("end", "", len(text)))
    return tokens


# ---------------------------------------------------------------------------------------------
# Parser

_CMP_OPS = {"==", "!=", "<", "<=", ">", ">="}


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens = tokenize(text)
        self.i = 0

    @property
    def tok(self) -> Token:
        return self.tokens[self.i]

    def take(self) -> Token:
        t = self.tokens[self.i]
        self.i += 1
        return t

    def accept(self, kind: str, text: str) -> Token | None:
        t = self.tok
        if t.kind == kind and t.text == text:
            self.i += 1
            return t
        return None

    def expect(self, kind: str, text: str) -> Token:
        t = self.accept(kind, text)
        if t is None:
            got = self.tok.text or "end of expression"
            raise ExpressionError(f"expected {text!r}, found {got!r}", self.tok.pos)
        return t

    def parse(self) -> Node:
        if self.tok.kind == "end":
            raise ExpressionError("empty expression", 0)
        node = self.or_()
        if self.tok.kind != "end":
            raise ExpressionError(f"unexpected {self.tok.text!r}", self.tok.pos)
        return node

    def or_(self) -> Node:
        first = self.and_()
        items = [first]
        while self.accept("kw", "or"):
            items.append(self.and_())
        return first if len(items) == 1 else Or(tuple(items), first.pos)

    def and_(self) -> Node:
        first = self.not_()
        items = [first]
        while self.accept("kw", "and"):
            items.append(self.not_())
        return first if len(items) == 1 else And(tuple(items), first.pos)

    def not_(self) -> Node:
        t = self.accept("kw", "not")
        if t is not None:
            return Not(self.not_(), t.pos)
        return self.comparison()

    def comparison(self) -> Node:
        left = self.arith()
        t = self.tok
        if t.kind == "op" and t.text in _CMP_OPS:
            self.take()
            right = self.arith()
            if self.tok.kind == "op" and self.tok.text in _CMP_OPS:
                raise ExpressionError(
                    "chained comparisons are not allowed: use `and`", self.tok.pos
                )
            return Cmp(t.text, left, right, t.pos)
        if t.kind == "kw" and t.text == "in":
            self.take()
            return In(left, self.literal_list(), False, t.pos)
        if t.kind == "kw" and t.text == "not" and self.tokens[self.i + 1].text == "in":
            self.take()
            self.take()
            return In(left, self.literal_list(), True, t.pos)
        if t.kind == "kw" and t.text == "is":
            self.take()
            negated = self.accept("kw", "not") is not None
            self.expect("kw", "missing")
            return Missing(left, negated, t.pos)
        return left

    def literal_list(self) -> tuple[Lit, ...]:
        start = self.expect("op", "[")
        values: list[Lit] = []
        while True:
            values.append(self.literal())
            if self.accept("op", "]"):
                break
            self.expect("op", ",")
        if not values:
            raise ExpressionError("empty list", start.pos)
        return tuple(values)

    def literal(self) -> Lit:
        t = self.tok
        sign = 1
        if t.kind == "op" and t.text == "-" and self.tokens[self.i + 1].kind == "num":
            self.take()
            sign = -1
            t = self.tok
        if t.kind == "num":
            self.take()
            return Lit(sign * _number(t.text), t.pos)
        if sign == 1 and t.kind == "str":
            self.take()
            return Lit(_string(t.text), t.pos)
        if sign == 1 and t.kind == "kw" and t.text in {"true", "false"}:
            self.take()
            return Lit(t.text == "true", t.pos)
        raise ExpressionError(f"expected a literal, found {t.text or 'end'!r}", t.pos)

    def arith(self) -> Node:
        node = self.term()
        while self.tok.kind == "op" and self.tok.text in {"+", "-"}:
            t = self.take()
            node = Arith(t.text, node, self.term(), t.pos)
        return node

    def term(self) -> Node:
        node = self.unary()
        while self.tok.kind == "op" and self.tok.text in {"*", "/"}:
            t = self.take()
            node = Arith(t.text, node, self.unary(), t.pos)
        return node

    def unary(self) -> Node:
        t = self.tok
        if t.kind == "op" and t.text == "-":
            self.take()
            operand = self.unary()
            if isinstance(operand, Lit) and not isinstance(operand.value, str | bool):
                return Lit(-operand.value, t.pos)
            return Neg(operand, t.pos)
        return self.primary()

    def primary(self) -> Node:
        t = self.tok
        if t.kind in {"num", "str"} or (t.kind == "kw" and t.text in {"true", "false"}):
            return self.literal()
        if t.kind == "name":
            self.take()
            if self.accept("op", "("):
                if t.text not in FUNCTIONS:
                    raise ExpressionError(
                        f"unknown function {t.text!r} (available: min, max)", t.pos
                    )
                args = [self.arith()]
                while self.accept("op", ","):
                    args.append(self.arith())
                self.expect("op", ")")
                if len(args) < 2:
                    raise ExpressionError(f"{t.text}() needs at least two arguments", t.pos)
                return Call(t.text, tuple(args), t.pos)
            return Field(t.text, t.pos)
        if self.accept("op", "("):
            node = self.or_()
            self.expect("op", ")")
            return node
        raise ExpressionError(f"unexpected {t.text or 'end of expression'!r}", t.pos)


def _number(text: str) -> int | float:
    if re.fullmatch(r"\d+", text):
        return int(text)
    value = float(text)
    if not math.isfinite(value):
        raise ExpressionError(f"number out of range: {text}", 0)
    return value


def _string(text: str) -> str:
    body = text[1:-1]
    return re.sub(r"\\(.)", r"\1", body)


def parse(text: str) -> Node:
    """Parse an expression; raises ExpressionError(message, pos) with a 0-based offset."""
    if not isinstance(text, str):
        raise ExpressionError("expected an expression (text)", 0)
    return _Parser(text).parse()


# ---------------------------------------------------------------------------------------------
# Type checking

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


# ---------------------------------------------------------------------------------------------
# Reference semantics (used for the trace, caps/computes on the durable engine, and tests)


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
