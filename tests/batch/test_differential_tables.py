"""The vectorized rules give the row engines' Evaluation, field for field, trace included, on
policies using every hit policy: tables_all_policies.yaml (unique, first, priority, collect,
collect sum/count/min/max) and tables_conflicts.yaml (unique tables that really conflict at run
time, aggregate tables whose trace order varies per application, ties), over all 4,454 real
credit_data applications scored by the real model and generated boundary cases; and the batch
pipeline's Decisions and Arrow columns on a conflicting policy."""

from __future__ import annotations

from collections import Counter
from functools import cache
from pathlib import Path

import msgspec
import numpy as np
import pytest

from decision_service.batch.columns import ApplicationColumns, facts_columns
from decision_service.batch.pipeline import BatchPipeline
from decision_service.batch.rules import ColumnRules
from decision_service.pipeline import MAX_REASONS, decide, versions
from decision_service.rules import tables as tb
from decision_service.rules.compiled import CompiledEngine
from decision_service.rules.durable import DurableEngine
from decision_service.rules.language import load_ruleset
from decision_service.rules.tables import CONFLICT_CODE
from decision_service.service import card_schema
from tests.rules._data import SCHEMA, generated_applications, real_applications, score

from .conftest import _scorer, credit_applications

ROOT = Path(__file__).resolve().parents[2]
POLICIES = {
    "all_policies": ROOT / "tests" / "rules" / "fixtures" / "tables_all_policies.yaml",
    "conflicts": Path(__file__).parent / "fixtures" / "tables_conflicts.yaml",
}
ENGINES = {"compiled": CompiledEngine, "durable_rules": DurableEngine}


@cache
def _cases() -> tuple[dict, ...]:
    real = [{**a, "pd": score(a)} for a in real_applications()]
    real = [{k: v for k, v in a.items() if v is not None} for a in real]
    assert len(real) == 4454
    return (*real, *generated_applications(4000, seed=11))


@pytest.mark.parametrize("engine_name", list(ENGINES))
@pytest.mark.parametrize("policy", list(POLICIES))
def test_same_evaluation_on_every_hit_policy(policy, engine_name):
    rs = load_ruleset(POLICIES[policy], SCHEMA)
    cases = _cases()
    engine = ENGINES[engine_name](rs)
    before = {t.id: tb.conflict_count(t.id) for t in rs.tables}
    evaluation = ColumnRules(rs).evaluate(facts_columns(cases, SCHEMA), len(cases))
    batch_conflicts = {t.id: tb.conflict_count(t.id) - before[t.id] for t in rs.tables}
    fired: set[str] = set()
    passive = conflicts = 0
    outcomes = set()
    conflict_entries = dict.fromkeys(before, 0)
    for i, facts in enumerate(cases):
        row, vec = engine.evaluate(facts), evaluation.evaluation(i)
        assert msgspec.json.encode(vec) == msgspec.json.encode(row), facts
        assert list(vec.derived) == list(row.derived)  # the row path's order
        fired.update(f.id for f in row.fired)
        passive += sum(f.then.get("applied") is False for f in row.fired)
        for f in row.fired:
            if f.then.get("code") == CONFLICT_CODE:
                conflicts += 1
                conflict_entries[f.id] += 1
        outcomes.add(row.outcome)
    engine.close()
    # the data exercise every row, every table entry and every outcome
    assert {r.id for r in rs.rules} <= fired
    assert {t.id for t in rs.tables if t.aggregate} <= fired
    assert outcomes == {"approve", "refer", "decline"}
    assert passive > 0
    # a conflict is counted once per application, by the batch path as row by row
    assert batch_conflicts == conflict_entries
    if policy == "conflicts":
        assert conflict_entries["OVERLAP"] > 0 and conflict_entries["HOME"] > 0


def test_aggregate_trace_order_varies_and_is_followed():
    """POINTS-HIGH fires before POINTS-LOW (priority) but follows it when it matched nothing:
    both orders occur in the data, and both derive `points` (the first known one wins)."""
    rs = load_ruleset(POLICIES["conflicts"], SCHEMA)
    cases = _cases()
    evaluation = ColumnRules(rs).evaluate(facts_columns(cases, SCHEMA), len(cases))
    orders = set()
    for i in range(len(cases)):
        ids = [f.id for f in evaluation.fired(i) if f.id.startswith("POINTS") and "/" not in f.id]
        orders.add(tuple(ids))
    assert orders == {("POINTS-HIGH", "POINTS-LOW"), ("POINTS-LOW", "POINTS-HIGH")}


def test_batch_decisions_and_columns_on_a_conflicting_policy():
    scorer = _scorer()
    rs = load_ruleset(POLICIES["conflicts"], card_schema(scorer.card))
    engine = CompiledEngine(rs)
    refs = versions(scorer, engine, rs.sha256)
    batch = BatchPipeline(scorer, rs, refs, explain=True)
    apps = credit_applications()
    result = batch.decide(ApplicationColumns.from_structs(apps, scorer.card.features))
    table = result.to_arrow([f"d{i}" for i in range(len(apps))], "2026-11-26T00:00:00Z")
    referred_by_conflict = 0
    cited: Counter[str] = Counter()
    for i, (app, arrow) in enumerate(zip(apps, table.to_pylist(), strict=True)):
        ids = {"decision_id": f"d{i}", "decided_at": "2026-11-26T00:00:00Z"}
        row = decide(app, scorer, engine, refs, explain=True, trace_id="t", **ids)
        vec = result.decision(i, trace_id="t", **ids)
        row.trace.timings_us, vec.trace.timings_us = {}, {}
        assert msgspec.json.encode(vec) == msgspec.json.encode(row), app
        assert arrow["rules_fired"] == [f.id for f in row.trace.rules_fired]
        assert arrow["outcome"] == row.outcome and arrow["approved_amount"] == row.approved_amount
        reasons = [(r["code"], r["source"], r["text"], r["contribution"]) for r in arrow["reasons"]]
        assert reasons == [(r.code, r.source, r.text, r.contribution) for r in row.reasons]
        referred_by_conflict += any(r.code == CONFLICT_CODE for r in row.reasons)
        assert len(row.reasons) <= MAX_REASONS
        if row.approved_amount is not None and row.approved_amount < app.amount:
            cited[row.reasons[0].code] += 1  # a reduced approval cites its cap first
    assert referred_by_conflict > 0
    assert "TBL-LIMIT" in cited, cited  # an aggregate table's cap (collect max)
    assert np.isnan(result.approved[result.outcome_codes != 0]).all()
