"""The decision pipeline: a pure function of (application, model, ruleset).

features → score → facts → rules → resolve → explain (when adverse or asked) → the principal
reasons → Decision.
No I/O: the caller supplies the id, the clock and the trace id, so a stored decision can be
re-decided and compared field by field (replay).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from time import perf_counter_ns
from typing import Any, TypeVar

import msgspec

from decision_service.decision import Decision, ModelRef, Reason, RulesetRef, Trace
from decision_service.rules.delta import Kept
from decision_service.rules.evaluation import Engine, Evaluation
from decision_service.scoring import Explanation, Scorer


class Versions(msgspec.Struct, frozen=True):
    model: ModelRef
    ruleset: RulesetRef


def versions(scorer: Scorer, engine: Engine, sha256: str) -> Versions:
    card, ruleset = scorer.card, engine.ruleset
    return Versions(
        ModelRef(card.name, card.version, card.model_sha256),
        RulesetRef(ruleset.name, ruleset.version, sha256, engine.name),
    )


def needs_model_reasons(outcome: str, explain: bool) -> bool:
    """Model reason codes are computed for adverse outcomes, and on approvals when asked."""
    return explain or outcome != "approve"


def model_reasons(explanations: Iterable[Explanation]) -> list[Reason]:
    return [Reason(e.code, "model", e.text, e.contribution) for e in explanations]


# Regulation B (12 CFR 1002.9) asks for the specific principal reasons; more than four are
# not meaningful to an applicant. The trace keeps every fired rule.
MAX_REASONS = 4
T = TypeVar("T")


def principal_reasons(rules: Sequence[T], cap: T | None, model: Sequence[T]) -> list[T]:
    """The at most MAX_REASONS reasons of a decision, most important first:

    1. `cap`: the rule whose cap made an approval smaller than requested (an approval has no
       adverse rule, so this is the one thing it must explain);
    2. `rules`: the fired rules that decided the outcome, in firing order (stage, then priority:
       a knock-out before a later stage's appetite rule);
    3. `model`: the model's reasons, largest SHAP contribution to the PD first.

    Generic in the reason: the batch path runs it on column positions, so both paths share the
    one order."""
    head = [] if cap is None else [cap]
    return [*head, *rules, *model][:MAX_REASONS]


def decision_reasons(result: Evaluation, amount: float, model: Sequence[Reason]) -> list[Reason]:
    """A Decision's reasons: its rule reasons, the cap it cites (an approval below the amount
    requested) and its model reasons, merged by `principal_reasons`."""
    granted = approved_amount(result.outcome, amount, result.max_amount)
    cap = result.capped_by if granted is not None and granted < amount else None
    return principal_reasons(result.reasons, cap, model)


def approved_amount(outcome: str, amount: float, cap: Any) -> float | None:
    """The amount granted: the request, capped by the tightest rule cap; None unless approved."""
    if outcome != "approve":
        return None
    return float(amount if cap is None else min(amount, cap))


class RuleFacts(msgspec.Struct):
    """The facts one decision's rules saw: its application's fields and its pd, normalised by
    the ruleset's schema (before any derived field). `decide` fills it when asked; a challenger
    with the same schema and the same pd reuses it instead of normalising the same facts again
    (engines never write to it: run_stages). A Struct: made on every decision."""

    facts: dict[str, Any] | None = None
    pd: float | None = None
    schema: Any = None  # the FactSchema that normalised `facts`
    kept: Kept | None = None  # what the champion's evaluation left for them (rules/delta.py)


def evaluate_rules(
    app: Any, pd: float, engine: Engine, *, trace: bool = True, seen: RuleFacts | None = None
) -> Evaluation:
    """The rules on an application's facts (its fields and its pd): the champion's evaluation,
    and each challenger's on the same facts (without the trace: its row keeps rule ids).
    `seen`: the facts are kept there, or taken from there when they were kept for this pd and
    this engine's schema (a challenger after the champion: without a trace, derived from the
    champion's evaluation where that is exact, `Engine.evaluate_after`)."""
    schema = engine.ruleset.schema
    if seen is not None and seen.facts is not None and seen.schema is schema and seen.pd == pd:
        if not trace and seen.kept is not None:
            got = engine.evaluate_after(seen.kept)
            if got is not None:
                return got
        return engine.evaluate(seen.facts, trace=trace, normalised=True)
    facts = msgspec.structs.asdict(app)
    facts["pd"] = pd
    if seen is None:
        return engine.evaluate(facts, trace=trace)
    seen.facts, seen.pd, seen.schema = schema.normaliser(facts), pd, schema
    seen.kept = Kept()
    return engine.evaluate(seen.facts, trace=trace, normalised=True, keep=seen.kept)


def assemble(
    application_id: str,
    amount: float,
    pd: float,
    result: Evaluation,
    reasons: list[Reason],
    refs: Versions,
    timings_us: dict[str, int],
    *,
    decision_id: str,
    decided_at: str,
    trace_id: str | None,
) -> Decision:
    """The Decision of one application from its score, its rule evaluation and its reasons.

    The one place a Decision is built: `decide` below and the batch path both call it."""
    return Decision(
        decision_id=decision_id,
        application_id=application_id,
        outcome=result.outcome,
        approved_amount=approved_amount(result.outcome, amount, result.max_amount),
        pd=pd,
        risk_band=result.derived.get("risk_band"),
        reasons=reasons,
        trace=Trace(refs.model, refs.ruleset, result.fired, timings_us),
        decided_at=decided_at,
        trace_id=trace_id,
    )


def decide(
    app: Any,
    scorer: Scorer,
    engine: Engine,
    refs: Versions,
    *,
    explain: bool,
    decision_id: str,
    decided_at: str,
    trace_id: str | None = None,
    timings_us: dict[str, int] | None = None,
    seen: RuleFacts | None = None,
) -> Decision:
    """Decide one validated application. `explain`: compute model reasons even on approval.
    `seen`: filled with the facts the rules saw (for the challengers: `evaluate_rules`)."""
    timings = {} if timings_us is None else timings_us
    t0 = perf_counter_ns()
    row = scorer.features(app)
    pd = scorer.predict(row)
    t1 = perf_counter_ns()
    result = evaluate_rules(app, pd, engine, seen=seen)
    t2 = perf_counter_ns()
    model: list[Reason] = []
    if needs_model_reasons(result.outcome, explain):
        model = model_reasons(scorer.explain(row))
    reasons = decision_reasons(result, app.amount, model)
    t3 = perf_counter_ns()
    timings["score"] = (t1 - t0) // 1000
    timings["rules"] = (t2 - t1) // 1000
    timings["explain"] = (t3 - t2) // 1000
    return assemble(
        app.application_id,
        app.amount,
        pd,
        result,
        reasons,
        refs,
        timings,
        decision_id=decision_id,
        decided_at=decided_at,
        trace_id=trace_id,
    )
