"""What fired rules do, on both engines: within a stage the first rule in firing order wins a
derived field, an unknown computed value wins nothing, a later stage sees the winners."""

from __future__ import annotations

import pytest

from decision_service.rules.compiled import CompiledEngine
from decision_service.rules.durable import DurableEngine
from decision_service.rules.language import load_ruleset_from_text

from ._data import SCHEMA

RULES = """ruleset: t
version: '1'
rules:
  - {id: HIGH, priority: 9, when: age > 0, then: {compute: {x: income / debt}, set: {y: high}}}
  - {id: LOW, priority: 5, when: age > 0, then: {compute: {x: income * 2}, set: {y: low}}}
  - {id: NEXT, stage: 2, when: 'y == "high"', then: {compute: {z: x * 10}, max_amount: x + 1}}
"""


@pytest.fixture(scope="module")
def engines():
    rs = load_ruleset_from_text(RULES, "t.yaml", SCHEMA)
    built = [CompiledEngine(rs), DurableEngine(rs)]
    yield built
    for e in built:
        e.close()


@pytest.mark.parametrize("trace", [True, False])
def test_the_first_rule_in_firing_order_wins_a_field(engines, trace):
    for engine in engines:
        ev = engine.evaluate({"age": 30, "income": 100, "debt": 4}, trace=trace)
        # HIGH wins x and y (LOW fired, computed its own x, and set nothing)
        assert ev.derived == {"x": 25.0, "y": "high", "z": 250.0}, engine.name
        assert ev.ids() == ["HIGH", "LOW", "NEXT"]
        assert ev.max_amount == 26.0 and ev.capped_by is not None
        if trace:
            then = [f.then for f in ev.fired]
            assert [t.get("computed") for t in then] == [{"x": 25.0}, {"x": 200}, {"z": 250.0}]
            assert [t.get("cap", "-") for t in then] == ["-", "-", 26.0]


def test_an_unknown_value_wins_nothing(engines):
    for engine in engines:
        ev = engine.evaluate({"age": 30, "income": 100, "debt": 0})  # HIGH's x: division by 0
        assert ev.derived == {"x": 200, "y": "high", "z": 2000}, engine.name
        assert ev.fired[0].then["computed"] == {"x": None}
        assert ev.max_amount == 201
