"""The decision pipeline: a pure function of (application, model, ruleset).

features → score → facts → rules → resolve → explain (when adverse or asked) → Decision.
No I/O: the caller supplies the id, the clock and the trace id, so a stored decision can be
re-decided and compared field by field (replay).
"""

from __future__ import annotations

from time import perf_counter_ns
from typing import Any

import msgspec

from decision_service.decision import Decision, ModelRef, Reason, RulesetRef, Trace
from decision_service.rules.evaluation import Engine
from decision_service.scoring import Scorer


class Versions(msgspec.Struct, frozen=True):
    model: ModelRef
    ruleset: RulesetRef


def versions(scorer: Scorer, engine: Engine, sha256: str) -> Versions:
    card, ruleset = scorer.card, engine.ruleset
    return Versions(
        ModelRef(card.name, card.version, card.model_sha256),
        RulesetRef(ruleset.name, ruleset.version, sha256, engine.name),
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
) -> Decision:
    """Decide one validated application. `explain`: compute model reasons even on approval."""
    timings = {} if timings_us is None else timings_us
    t0 = perf_counter_ns()
    row = scorer.features(app)
    pd = scorer.predict(row)
    t1 = perf_counter_ns()
    facts = msgspec.structs.asdict(app)
    facts["pd"] = pd
    result = engine.evaluate(facts)
    t2 = perf_counter_ns()
    reasons: list[Reason] = list(result.reasons)
    if explain or result.outcome != "approve":
        reasons += [Reason(e.code, "model", e.text, e.contribution) for e in scorer.explain(row)]
    t3 = perf_counter_ns()
    approved = None
    if result.outcome == "approve":
        cap = result.max_amount
        approved = float(app.amount if cap is None else min(app.amount, cap))
    timings["score"] = (t1 - t0) // 1000
    timings["rules"] = (t2 - t1) // 1000
    timings["explain"] = (t3 - t2) // 1000
    return Decision(
        decision_id=decision_id,
        application_id=app.application_id,
        outcome=result.outcome,
        approved_amount=approved,
        pd=pd,
        risk_band=result.derived.get("risk_band"),
        reasons=reasons,
        trace=Trace(refs.model, refs.ruleset, result.fired, timings),
        decided_at=decided_at,
        trace_id=trace_id,
    )
