"""Parsing the condition language: the tokenizer and a recursive-descent parser from text to
the syntax tree (expression_tree.py). Errors are ExpressionError(message, 0-based offset).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

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
