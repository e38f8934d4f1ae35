"""The compiled engine's value code (compute, max_amount, arithmetic in conditions) against
the reference evaluator (expression_values.value): unknown operands, division by zero and
non-finite results are unknown (None), literals and fields are read as they are."""

from __future__ import annotations

import itertools
import math

import pytest

from decision_service.rules import expressions as ex
from decision_service.rules.compiled import compile_value

EXPRESSIONS = [
    "a / b",
    "a / 0",
    "a / 0.0",
    "a / -2",
    "0 / a",
    "a * 12",
    "-a",
    "-(a - b)",
    "-3 * a",
    "a - -1.5",
    "(c + a / b) / a",
    "b / (a * 12)",
    "min(a, b * 12)",
    "max(a, 1000)",
    "min(a, b * 3, max(c - b, 0) + a)",
    "a * b * c",
    "1 + 2",
    "-(a)",
]
VALUES = [None, 0, 0.0, 3, -2, 2.5, 1e308, -1e308, 7.0]


@pytest.mark.parametrize("text", EXPRESSIONS)
def test_compiled_values_match_the_reference(text):
    node = ex.parse(text)
    fn = compile_value(node, text)
    for a, b, c in itertools.product(VALUES, repeat=3):
        facts = {k: v for k, v in (("a", a), ("b", b), ("c", c)) if v is not None}
        want, got = ex.value(node, facts), fn(facts)
        assert (want is None) == (got is None), (text, facts, want, got)
        if want is not None:
            assert type(want) is type(got) and (want == got or math.isnan(want)), (text, facts)
