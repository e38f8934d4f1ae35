"""Both engines agree exactly on a policy using every hit policy (unique, first, priority,
collect, collect sum/count/min/max), over real applications scored by the real model and
generated boundary cases."""

from __future__ import annotations

from pathlib import Path

from decision_service.rules.compiled import CompiledEngine
from decision_service.rules.durable import DurableEngine
from decision_service.rules.language import load_ruleset
from decision_service.rules.verify import verify

from ._data import SCHEMA, generated_applications, real_applications, score
from .test_differential import _key, assert_untraced_agrees

POLICY = Path(__file__).parent / "fixtures" / "tables_all_policies.yaml"


def test_engines_agree_on_every_hit_policy() -> None:
    rs = load_ruleset(POLICY, SCHEMA)
    assert [f for f in verify(rs) if f.severity == "error"] == []
    real = [{**a, "pd": score(a)} for a in real_applications()[:1500]]
    cases = [{k: v for k, v in a.items() if v is not None} for a in real]
    cases += generated_applications(3000, seed=7)
    compiled, durable = CompiledEngine(rs), DurableEngine(rs)
    fired: set[str] = set()
    outcomes: set[str] = set()
    for facts in cases:
        a, b = compiled.evaluate(facts), durable.evaluate(facts)
        assert _key(a) == _key(b), facts
        assert_untraced_agrees(compiled, facts, a)
        assert_untraced_agrees(durable, facts, b)
        fired.update(f.id for f in a.fired)
        outcomes.add(a.outcome)
    durable.close()
    # every row and every aggregate entry is exercised by the data
    assert {r.id for r in rs.rules} <= fired
    assert {"SCORE", "FLAGS", "CAPS", "TOP"} <= fired
    assert outcomes == {"approve", "refer", "decline"}
