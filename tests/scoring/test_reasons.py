"""A decision's reasons: at most four, the capping rule of a reduced approval first, then the
rules that decided the outcome (firing order), then the model's reasons (largest first); the
trace keeps every fired rule. Unit tests of the merge, then a property over the real model and
the shipped rules."""

from __future__ import annotations

from functools import cache
from typing import Any

import msgspec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from decision_service.decision import Reason
from decision_service.pipeline import (
    MAX_REASONS,
    decide,
    decision_reasons,
    principal_reasons,
    versions,
)
from decision_service.rules.compiled import CompiledEngine
from decision_service.rules.evaluation import CAP_TEXT, Evaluation, cap_reason, tightest_cap
from decision_service.rules.language import load_ruleset
from decision_service.scoring import Scorer, application_type
from decision_service.service import card_schema
from tests.conftest import MODEL_DIR, ROOT


def rule(code: str) -> Reason:
    return Reason(code, "rule", f"text of {code}")


def model(code: str, contribution: float) -> Reason:
    return Reason(code, "model", f"text of {code}", contribution)


KO, BAND = rule("KO-05"), rule("PD-01")
M = [model("MDL-A", 1.5), model("MDL-B", 0.9), model("MDL-C", 0.4), model("MDL-D", 0.1)]
CAP = rule("TBL-BAND-LIMIT-B")


def test_rules_that_decided_come_first_then_the_model_largest_first() -> None:
    assert principal_reasons([KO, BAND], None, M) == [KO, BAND, M[0], M[1]]
    assert principal_reasons([], None, M) == M
    assert principal_reasons([KO], None, []) == [KO]
    five = [rule(f"R-{i}") for i in range(5)]
    assert principal_reasons(five, None, M) == five[:MAX_REASONS]  # rules outrank the model


def test_a_cap_comes_before_everything_else() -> None:
    assert principal_reasons([KO], CAP, M) == [CAP, KO, M[0], M[1]]
    assert principal_reasons([], CAP, []) == [CAP]


def test_the_merge_is_generic_as_the_batch_path_uses_it() -> None:
    assert principal_reasons(range(1, 3), 0, range(5, 9)) == [0, 1, 2, 5]


def _evaluation(outcome: str, cap: float | None) -> Evaluation:
    capped_by = None if cap is None else CAP
    return Evaluation(outcome, cap, {}, [], [], capped_by)  # type: ignore[arg-type]


def test_only_an_approval_below_the_request_cites_its_cap() -> None:
    assert decision_reasons(_evaluation("approve", 900.0), 1000.0, []) == [CAP]
    assert decision_reasons(_evaluation("approve", 1000.0), 1000.0, []) == []  # not below
    assert decision_reasons(_evaluation("approve", 1200.0), 1000.0, []) == []
    assert decision_reasons(_evaluation("approve", None), 1000.0, []) == []
    refer = Evaluation("refer", 900.0, {}, [], [BAND], CAP)
    assert decision_reasons(refer, 1000.0, M) == [BAND, *M[:3]]  # nothing approved, no cap


@cache
def _ruleset():
    scorer = Scorer.load(MODEL_DIR)
    return load_ruleset(ROOT / "rules" / "risk_appetite.yaml", card_schema(scorer.card))


def test_the_tightest_cap_names_the_first_of_equals_and_its_reason() -> None:
    rules = {r.id: r for r in _ruleset().rules}
    income, band_b = rules["REF-INCOME-MISSING"], rules["BAND-LIMIT/B"]
    assert tightest_cap([]) == (None, None)
    assert tightest_cap([(1000, income), (900.0, band_b)]) == (900.0, cap_reason(band_b))
    cap, reason = tightest_cap([(900, income), (900.0, band_b)])
    assert type(cap) is int and reason == Reason("RF-01", "rule", income.reason)
    # a capping rule without a reason of its own gives the generic text, under its own code
    assert cap_reason(band_b) == Reason("TBL-BAND-LIMIT-B", "rule", CAP_TEXT)


# -- the property, on the real model and the shipped rules ------------------------------------


@cache
def _deciding() -> tuple[Scorer, CompiledEngine, Any, type]:
    scorer = Scorer.load(MODEL_DIR)
    rs = _ruleset()
    engine = CompiledEngine(rs)
    return scorer, engine, versions(scorer, engine, rs.sha256), application_type(scorer.card)


def _field(spec: Any) -> st.SearchStrategy[Any]:
    lo, hi = spec.range if spec.range is not None else (0, 10_000)
    if spec.type == "integer":
        s: st.SearchStrategy[Any] = st.integers(int(lo), int(hi))
    elif spec.type == "number":
        s = st.floats(lo, hi, allow_nan=False) | st.sampled_from([lo, hi, (lo + hi) / 2])
    elif spec.type == "boolean":
        s = st.booleans()
    else:
        s = st.sampled_from(spec.categories)
    return s | st.none() if spec.missing == "allow" else s


def _applications() -> st.SearchStrategy[dict[str, Any]]:
    """Any valid application, or (half the time) one the knock-outs let through, so that
    approvals (reduced ones too) and referrals are drawn as often as declines."""
    scorer, *_ = _deciding()
    fields = {f.name: _field(f) for f in scorer.card.request_fields}
    anything = st.fixed_dictionaries({"application_id": st.just("APP-PROP-1"), **fields})
    plausible = st.fixed_dictionaries(
        {
            "age": st.integers(25, 55),
            "term": st.sampled_from([12, 24, 36, 48, 60]),
            "records": st.just(False),
            "home": st.sampled_from(["owner", "rent"]),
            "job": st.just("fixed"),
            "seniority": st.integers(3, 20),
            "debt": st.just(0.0),
            "assets": st.floats(0, 8000),
            "income": st.floats(80, 400),
            "expenses": st.floats(30, 80),
            "amount": st.floats(300, 3000),
            "markup": st.floats(1.0, 1.5),
        }
    )

    def merge(pair: tuple[dict[str, Any], dict[str, Any] | None]) -> dict[str, Any]:
        body, sane = pair
        if sane is None:
            return body
        markup = sane.pop("markup")
        return body | sane | {"price": sane["amount"] * markup}

    return st.tuples(anything, st.none() | plausible).map(merge)


def _codes_of_fired(fired: list[Any]) -> set[str]:
    """The reason codes the fired rules (and aggregate tables) of a trace can give."""
    rules = {r.id: r for r in _ruleset().rules}
    return {rules[f.id].code if f.id in rules else f"TBL-{f.id}" for f in fired}


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(body=_applications(), explain=st.booleans())
def test_at_most_four_reasons_each_rule_reason_in_the_trace(body, explain) -> None:
    scorer, engine, refs, app_type = _deciding()
    app = msgspec.convert(body, app_type)
    d = decide(app, scorer, engine, refs, explain=explain, decision_id="d", decided_at="t")
    assert len(d.reasons) <= 4  # Regulation B's principal reasons
    fired = _codes_of_fired(d.trace.rules_fired)
    assert {r.code for r in d.reasons if r.source == "rule"} <= fired
    model = [r.contribution for r in d.reasons if r.source == "model"]
    assert model == sorted(model, reverse=True)  # largest first, after every rule reason
    sources = [r.source for r in d.reasons]
    assert sources == sorted(sources, key=lambda s: s == "model")  # rules before the model
    if d.approved_amount is not None and d.approved_amount < app.amount:
        caps = [f for f in d.trace.rules_fired if f.then.get("cap") is not None]
        first = next(f for f in caps if f.then["cap"] == d.approved_amount)
        assert d.reasons[0].code in _codes_of_fired([first])  # the rule that set the cap
