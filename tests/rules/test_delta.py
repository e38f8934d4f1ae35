"""A challenger evaluated by difference from the champion (rules/delta.py) returns exactly what
evaluating it in full returns, on every real application (scored by the real model) and on
generated boundary cases; a difference that is not exact is evaluated in full."""

from __future__ import annotations

import pytest

from decision_service.rules.compiled import CompiledEngine, compile_matcher
from decision_service.rules.delta import Kept, plan
from decision_service.rules.durable import DurableEngine
from decision_service.rules.language import load_ruleset_from_text

from ._data import POLICY, SCHEMA, generated_applications, real_applications, score

TEXT = POLICY.read_text()
KO = "    when: records and pd > 0.30\n"
REF = "    when: records and not pd > 0.30\n"
EXTRA_RULE = """
  - id: REF-TIGHT-BAND-C
    stage: 2
    priority: 685
    when: risk_band == "C" and payment_to_income > 0.6
    then: {outcome: refer, reason: "Tight budget at band C", code: AF-09}
"""

LTP = """  - id: CALC-LOAN-TO-PRICE
    priority: 400
    when: price > 0
    then: {compute: {loan_to_price: amount / price}}
"""


def _untested(text: str) -> str:
    """Without the file's own tests (they name every rule, a dropped or renamed one too)."""
    return text.split("\ntests:")[0] + "\n"


def _swap(text: str) -> str:
    """CALC-LOAN-TO-PRICE moved before CALC-AFFORDABILITY (same priority: file order decides)."""
    assert LTP in text
    return text.replace(LTP, "").replace(
        "  - id: CALC-AFFORDABILITY", LTP + "  - id: CALC-AFFORDABILITY"
    )


# name -> (what the challenger changes, whether it can be evaluated by difference)
VARIANTS = {
    "tighter knock-out and referral": (
        lambda t: t.replace(KO, KO.replace("0.30", "0.25")).replace(
            REF, REF.replace("0.30", "0.25")
        ),
        True,
    ),
    "a stage-2 rule added, reading derived fields": (
        lambda t: t.replace("\n# Decision tables", EXTRA_RULE + "\n# Decision tables"),
        True,
    ),
    "a referral dropped": (
        lambda t: _untested(t).replace(
            "  - id: REF-JOB-MISSING\n    description: Employment type not declared\n"
            '    priority: 260\n    when: job is missing or job == "others"\n'
            '    then: {outcome: refer, reason: "Employment type not declared or unclassified", '
            "code: RF-05}\n",
            "",
        ),
        True,
    ),
    "a referral moved ahead of the knock-outs": (
        lambda t: t.replace(
            "    priority: 280\n    when: records and not",
            "    priority: 995\n    when: records and not",
        ),
        True,
    ),
    "another default outcome": (
        lambda t: t.replace("default: {outcome: approve}", "default: {outcome: refer}"),
        True,
    ),
    "the same rules": (lambda t: t, True),
    "a changed compute": (
        lambda t: t.replace("loan_to_price: amount / price", "loan_to_price: amount / price * 1.1"),
        False,
    ),
    "a changed risk band": (
        lambda t: t.replace('"< 0.08",', '"< 0.07",').replace("[0.08..", "[0.07.."),
        False,
    ),
    "a compute rule renamed": (
        lambda t: _untested(t).replace(
            "  - id: CALC-DEBT-TO-INCOME", "  - id: CALC-DEBT-TO-INCOME-2"
        ),
        False,
    ),
    "two equal-priority rules in another order": (_swap, False),
}


def _ruleset(text: str, name: str = "policy.yaml"):
    return load_ruleset_from_text(text, name, SCHEMA)


@pytest.fixture(scope="module")
def cases() -> list[dict]:
    real = [{**app, "pd": score(app)} for app in real_applications()]
    real = [{k: v for k, v in a.items() if v is not None} for a in real]
    return [SCHEMA.normaliser(f) for f in real + generated_applications(3_000)]


@pytest.fixture(scope="module")
def champion() -> CompiledEngine:
    return CompiledEngine(_ruleset(TEXT))


@pytest.mark.parametrize("name", list(VARIANTS))
def test_a_difference_is_exact_or_declined(name, cases, champion):
    change, exact = VARIANTS[name]
    text = change(TEXT)
    assert (text != TEXT) == (name != "the same rules")  # the change really applies
    engine = CompiledEngine(_ruleset(text, "challenger.yaml"))
    assert (plan(champion.ruleset, engine.ruleset, compile_matcher) is not None) == exact
    outcomes = set()
    for facts in cases:
        kept = Kept()
        champion.evaluate(facts, normalised=True, keep=kept)
        full = engine.evaluate(facts, trace=False, normalised=True)
        got = engine.evaluate_after(kept)
        if not exact:
            assert got is None
            continue
        assert got == full, facts  # every field: outcome, cap, derived, ids, reasons, capped_by
        outcomes.add(got.outcome)
    assert not exact or outcomes >= {"refer", "decline"}  # approvals too, but for one


def test_the_facts_each_stage_saw_are_kept(cases, champion):
    """The challenger's own rules are matched on the facts of their stage: stage 2 sees the
    fields stage 1 derived (an added rule there fires on them)."""
    engine = CompiledEngine(
        _ruleset(VARIANTS["a stage-2 rule added, reading derived fields"][0](TEXT))
    )
    fired = 0
    for facts in cases:
        kept = Kept()
        champion.evaluate(facts, normalised=True, keep=kept)
        assert kept.envs[0] is facts and "risk_band" in kept.envs[1]
        fired += "REF-TIGHT-BAND-C" in engine.evaluate_after(kept).ids()
    assert fired > 0


COLLECT = """
ruleset: collect
version: "1"
default: {outcome: approve}
rules:
  - id: OLD
    when: age > 60
    then: {outcome: refer, reason: old, code: R1}
tables:
  - id: T
    hit: collect
    inputs: [age]
    outputs: [outcome, reason]
    rows:
      - {id: A, cells: ["> 20", refer, "over 20"]}
      - {id: B, cells: ["> 30", decline, "over 30"]}
"""


def test_a_hit_policy_step_in_the_champion_means_a_full_evaluation():
    champion = CompiledEngine(_ruleset(COLLECT))
    engine = CompiledEngine(_ruleset(COLLECT.replace("age > 60", "age > 50"), "challenger.yaml"))
    facts = SCHEMA.normaliser({"age": 40, "pd": 0.1})
    kept = Kept()
    champion.evaluate(facts, normalised=True, keep=kept)
    assert not kept.plain  # the collect table matched two rows: a Selection was made
    assert engine.evaluate_after(kept) is None
    one = SCHEMA.normaliser({"age": 25, "pd": 0.1})  # one row: nothing to select
    kept = Kept()
    champion.evaluate(one, normalised=True, keep=kept)
    assert kept.plain and engine.evaluate_after(kept) == engine.evaluate(
        one, trace=False, normalised=True
    )


def test_durable_rules_challengers_are_evaluated_in_full(champion):
    engine = DurableEngine(_ruleset(VARIANTS["tighter knock-out and referral"][0](TEXT)))
    try:
        kept = Kept()
        champion.evaluate(SCHEMA.normaliser({"age": 40, "pd": 0.1}), normalised=True, keep=kept)
        assert engine.evaluate_after(kept) is None
    finally:
        engine.close()
