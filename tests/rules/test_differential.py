"""Both engines fire the same rules, in the same order, with the same results, on real
applications scored by the real model plus generated boundary cases (>= 10,000 in all)."""

from __future__ import annotations

import time

import pytest

from decision_service.rules.compiled import CompiledEngine
from decision_service.rules.durable import DurableEngine
from decision_service.rules.language import load_ruleset

from ._data import POLICY, SCHEMA, generated_applications, real_applications, score


def _key(ev):
    return (
        ev.outcome,
        ev.max_amount,
        ev.derived,
        [(f.id, f.priority, f.values, f.then) for f in ev.fired],
        [(r.code, r.text) for r in ev.reasons],
    )


def assert_untraced_agrees(engine, facts: dict, traced) -> None:
    """Without the trace (a challenger's run): the same evaluation, and the entries' ids only."""
    u = engine.evaluate(facts, trace=False)
    assert u.fired == [] and u.fired_ids == [f.id for f in traced.fired] == u.ids(), facts
    assert (u.outcome, u.max_amount, u.derived, u.reasons, u.capped_by) == (
        traced.outcome,
        traced.max_amount,
        traced.derived,
        traced.reasons,
        traced.capped_by,
    ), facts


@pytest.fixture(scope="module")
def cases() -> list[dict]:
    real = [{**app, "pd": score(app)} for app in real_applications()]
    real = [{k: v for k, v in a.items() if v is not None} for a in real]
    return real + generated_applications(10_000 - len(real) + 1_000)


def test_engines_agree_on_the_shipped_policy(cases):
    assert len(cases) >= 10_000
    rs = load_ruleset(POLICY, SCHEMA)
    compiled, durable = CompiledEngine(rs), DurableEngine(rs)
    start = time.perf_counter()
    fired_ids: set[str] = set()
    outcomes: dict[str, int] = {}
    for facts in cases:
        a, b = compiled.evaluate(facts), durable.evaluate(facts)
        assert _key(a) == _key(b), facts
        assert_untraced_agrees(compiled, facts, a)
        fired_ids.update(f.id for f in a.fired)
        outcomes[a.outcome] = outcomes.get(a.outcome, 0) + 1
        assert "risk_band" in a.derived  # every scored application gets a band
    assert time.perf_counter() - start < 60
    # the data exercise every rule and every outcome
    assert fired_ids == {r.id for r in rs.rules}
    assert set(outcomes) == {"approve", "refer", "decline"}
    durable.close()


def test_real_applications_are_scored_by_the_model():
    apps = real_applications()
    assert len(apps) == 4454
    pds = [score(a) for a in apps[:200]]
    assert all(0.0 < p < 1.0 for p in pds)
    assert len(set(pds)) > 100
