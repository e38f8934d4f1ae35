"""The analysts' language: errors name file, line, column and rule; semantics are 3-valued."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from decision_service.rules import expressions as ex
from decision_service.rules.check import run_check
from decision_service.rules.compiled import CompiledEngine
from decision_service.rules.durable import DurableEngine
from decision_service.rules.language import RuleFileError, load_ruleset_from_text

from ._data import POLICY, SCHEMA

HEAD = "ruleset: t\nversion: '1'\nrules:\n"


def err(rules: str) -> RuleFileError:
    with pytest.raises(RuleFileError) as info:
        load_ruleset_from_text(HEAD + rules, "t.yaml", SCHEMA)
    return info.value


@pytest.mark.parametrize(
    ("rules", "line", "token", "rule_id", "message"),
    [
        (
            "  - {id: A, when: agee < 18, then: {outcome: decline, reason: x}}\n",
            4,
            "agee",
            "A",
            "unknown field 'agee'",
        ),
        (
            "  - {id: A, when: 'home == 3', then: {outcome: refer, reason: x}}\n",
            4,
            "== 3",
            "A",
            "cannot compare category",
        ),
        (
            "  - {id: A, when: 'home == \"castle\"', then: {outcome: refer, reason: x}}\n",
            4,
            '"castle"',
            "A",
            "'castle' is not a valid value",
        ),
        (
            "  - {id: A, priority: 65535, when: age < 18, then: {outcome: refer, reason: x}}\n",
            4,
            "65535",
            "A",
            "priority must be between 0 and 65534",
        ),
        (
            "  - {id: A, when: age < 18, then: {outcome: refer, reason: x}}\n"
            "  - {id: A, when: age < 19, then: {outcome: refer, reason: x}}\n",
            5,
            "A, when: age < 19",
            "A",
            "duplicate rule id 'A'",
        ),
        (
            "  - {id: A, when: age < 18, then: {outcome: refer, reason: x}, colour: red}\n",
            4,
            "colour",
            "A",
            "unknown key 'colour'",
        ),
        (
            "  - {id: A, when: pd < 0.1, then: {set: {band: A}}}\n"
            "  - {id: B, when: 'band == \"A\"', then: {outcome: refer, reason: x}}\n",
            5,
            "band ==",
            "B",
            "'band' is derived in the same stage",
        ),
        (
            "  - {id: A, when: pd < 0.1, then: {set: {income: 3}}}\n",
            4,
            "income",
            "A",
            "would shadow an input field",
        ),
        (
            "  - {id: A, when: age < , then: {outcome: refer, reason: x}}\n",
            4,
            " , then",
            "A",
            "unexpected",
        ),
        (
            "  - {id: A, when: 'age < 18 and amount', then: {outcome: refer, reason: x}}\n",
            4,
            "amount'",
            "A",
            "expected a condition",
        ),
        (
            "  - {id: A, when: age < 18, then: {outcome: maybe, reason: x}}\n",
            4,
            "maybe",
            "A",
            "outcome must be one of",
        ),
    ],
)
def test_errors_point_at_the_problem(rules, line, token, rule_id, message):
    e = err(rules)
    assert message in e.message, str(e)
    assert (e.line, e.rule_id) == (line, rule_id), str(e)
    text = (HEAD + rules).splitlines()[e.line - 1]
    assert text[e.column - 1 :].startswith(token), (str(e), text)
    assert str(e).startswith(f"t.yaml:{line}:{e.column}: {rule_id}:")


def test_all_errors_are_reported():
    e = err(
        "  - {id: A, when: agee < 18, then: {outcome: decline, reason: x}}\n"
        "  - {id: B, when: agei < 18, then: {outcome: decline, reason: x}}\n"
    )
    assert [x.rule_id for x in e.errors] == ["A", "B"]


def test_later_stages_see_derived_fields():
    rs = load_ruleset_from_text(
        HEAD + "  - {id: A, when: pd < 0.1, then: {set: {band: A}, compute: {r: amount / term}}}\n"
        "  - {id: B, stage: 2, when: 'band == \"A\" and r > 10', "
        "then: {outcome: refer, reason: x, max_amount: 'min(amount, r * 3)'}}\n",
        "t.yaml",
        SCHEMA,
    )
    for eng in (CompiledEngine(rs), DurableEngine(rs)):
        ev = eng.evaluate({"pd": 0.05, "amount": 1200, "term": 12})
        assert [f.id for f in ev.fired] == ["A", "B"]
        assert ev.derived == {"band": "A", "r": 100.0} and ev.max_amount == 300.0
        assert ev.fired[1].values == {"band": "A", "r": 100.0}
        assert ev.fired[1].then["cap"] == 300.0
        # term 0: division by zero is unknown, r is missing, B does not fire
        assert [f.id for f in eng.evaluate({"pd": 0.05, "amount": 1, "term": 0}).fired] == ["A"]


def test_the_shipped_policy_passes_check(capsys):
    assert run_check([POLICY], SCHEMA) == 0
    assert "28/28 rules fired by a test" in capsys.readouterr().out


def test_check_reports_uncovered_rules_and_errors(tmp_path: Path, capsys):
    f = tmp_path / "r.yaml"
    f.write_text(HEAD + "  - {id: A, when: age < 18, then: {outcome: refer, reason: x}}\n")
    assert run_check([f], SCHEMA) == 1
    assert "A: never fired by any test" in capsys.readouterr().out
    f.write_text(HEAD + "  - {id: A, when: agee < 18, then: {outcome: refer, reason: x}}\n")
    assert run_check([tmp_path], SCHEMA) == 1
    assert f"{f}:4:19: A: unknown field 'agee'" in capsys.readouterr().out


# -- three-valued semantics: compiled, durable (NNF) and the reference interpreter agree --------
ATOMS = [
    "income > 100",
    "income <= 100",
    "income is missing",
    "income is not missing",
    'home in ["rent", "owner"]',
    'home not in ["rent"]',
    'home == "rent"',
    "home != job_home",
    "records",
    "debt / income > 0.5",
    "min(income, debt) >= 50",
    "income == debt",
    "amount - debt < 0",
    "age != 30",
]
ATOMS[7] = 'marital != "single"'


def conditions():
    atom = st.sampled_from(ATOMS)
    return st.recursive(
        atom,
        lambda c: st.one_of(
            st.tuples(c, c).map(lambda t: f"({t[0]}) and ({t[1]})"),
            st.tuples(c, c).map(lambda t: f"({t[0]}) or ({t[1]})"),
            c.map(lambda x: f"not ({x})"),
        ),
        max_leaves=6,
    )


FACTS = st.fixed_dictionaries(
    {},
    optional={
        "income": st.sampled_from([0, 50, 100, 100.5, 200]),
        "debt": st.sampled_from([0, 50, 100, 60.0]),
        "home": st.sampled_from(["rent", "owner", "parents"]),
        "marital": st.sampled_from(["single", "married"]),
        "records": st.booleans(),
        "amount": st.sampled_from([0, 50, 100]),
        "age": st.sampled_from([30, 31]),
    },
)


@settings(max_examples=150, deadline=None)
@given(conds=st.lists(conditions(), min_size=1, max_size=4), facts=st.lists(FACTS, max_size=8))
def test_engines_match_three_valued_reference(conds, facts):
    rules = "".join(
        f"  - {{id: R{i}, priority: {i}, when: '{c}', then: {{outcome: refer, reason: r}}}}\n"
        for i, c in enumerate(conds)
    )
    rs = load_ruleset_from_text(HEAD + rules, "t.yaml", SCHEMA)
    comp, dur = CompiledEngine(rs), DurableEngine(rs)
    for f in facts:
        want = [r.id for r in rs.rules if ex.truth(r.when.node, f) is True]
        assert [x.id for x in comp.evaluate(f).fired] == want
        assert [x.id for x in dur.evaluate(f).fired] == want
    dur.close()
