"""The condition language: tokenizer, recursive-descent parser, type checker, evaluator.

Nothing here calls `eval`. Semantics are three-valued (Kleene): a comparison on a missing value
is unknown (None), `not unknown` is unknown, and a rule fires only when its condition is True.
Arithmetic on a missing value, division by zero and non-finite results are unknown too.

This module is the language's public surface (read as `ex.`): the syntax tree and its
transforms are in expression_tree.py, parsing in expression_parser.py, type checking in
expression_types.py, three-valued evaluation in expression_values.py.
"""

from __future__ import annotations

from decision_service.rules.expression_parser import (
    FUNCTIONS,
    KEYWORDS,
    Token,
    parse,
    tokenize,
)
from decision_service.rules.expression_tree import (
    FLIP,
    INVERSE,
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
    fields_of,
    to_nnf,
    unparse,
)
from decision_service.rules.expression_types import (
    LOGIC,
    check_condition,
    check_number,
)
from decision_service.rules.expression_values import finite, truth, value

__all__ = [
    "FLIP",
    "FUNCTIONS",
    "INVERSE",
    "KEYWORDS",
    "LOGIC",
    "And",
    "Arith",
    "Call",
    "Cmp",
    "ExpressionError",
    "Field",
    "In",
    "Lit",
    "Missing",
    "Neg",
    "Node",
    "Not",
    "Or",
    "Token",
    "check_condition",
    "check_number",
    "fields_of",
    "finite",
    "parse",
    "to_nnf",
    "tokenize",
    "truth",
    "unparse",
    "value",
]
