"""The vectorized pipeline gives the row pipeline's Decision, field for field, trace included,
on all 4,454 real credit_data applications and on the generated boundary cases of the rules'
differential test, against both rule engines."""

from __future__ import annotations

import msgspec
import numpy as np
import pytest

from decision_service.batch.columns import ApplicationColumns, facts_columns
from decision_service.batch.pipeline import BatchPipeline
from decision_service.batch.rules import ColumnRules
from decision_service.pipeline import decide, versions
from decision_service.rules.compiled import CompiledEngine
from decision_service.rules.durable import DurableEngine
from tests.rules._data import SCHEMA, generated_applications

from .conftest import credit_applications

ENGINES = {"compiled": CompiledEngine, "durable_rules": DurableEngine}


def _comparable(decision) -> bytes:
    decision.trace.timings_us = {}  # measured, not decided
    return msgspec.json.encode(decision)


@pytest.mark.parametrize("engine_name", list(ENGINES))
@pytest.mark.parametrize("explain", [False, True])
def test_same_decisions_on_every_real_application(ruleset, pipeline, engine_name, explain):
    scorer = pipeline.scorer
    engine = ENGINES[engine_name](ruleset)
    refs = versions(scorer, engine, ruleset.sha256)
    batch = BatchPipeline(scorer, ruleset, refs, explain=explain)
    apps = credit_applications()
    assert len(apps) == 4454
    result = batch.decide(ApplicationColumns.from_structs(apps, scorer.card.features))
    outcomes = set()
    for i, app in enumerate(apps):
        ids = {"decision_id": f"d{i}", "decided_at": "2026-11-26T00:00:00.000000Z"}
        row = decide(app, scorer, engine, refs, explain=explain, trace_id="t", **ids)
        vec = result.decision(i, trace_id="t", **ids)
        assert _comparable(vec) == _comparable(row), app
        outcomes.add(row.outcome)
    assert outcomes == {"approve", "refer", "decline"}
    assert result.explained.all() if explain else not result.explained.all()
    engine.close()


def test_arrow_columns_are_the_decisions(pipeline):
    apps = credit_applications()[:1500]
    result = pipeline.decide(ApplicationColumns.from_structs(apps, pipeline.scorer.card.features))
    table = result.to_arrow([f"d{i}" for i in range(len(apps))], "2026-11-26T00:00:00Z")
    for i, row in enumerate(table.to_pylist()):
        d = result.decision(i, decision_id=f"d{i}", decided_at="2026-11-26T00:00:00Z")
        assert row["outcome"] == d.outcome and row["pd"] == d.pd
        assert row["approved_amount"] == d.approved_amount and row["risk_band"] == d.risk_band
        assert row["rules_fired"] == [f.id for f in d.trace.rules_fired]
        reasons = [(r["code"], r["source"], r["text"], r["contribution"]) for r in row["reasons"]]
        assert reasons == [(r.code, r.source, r.text, r.contribution) for r in d.reasons]


@pytest.mark.parametrize("engine_name", list(ENGINES))
def test_same_evaluation_on_generated_boundary_cases(ruleset, engine_name):
    cases = generated_applications(11_000)
    engine = ENGINES[engine_name](ruleset)
    evaluation = ColumnRules(ruleset).evaluate(facts_columns(cases, SCHEMA), len(cases))
    fired: set[str] = set()
    for i, facts in enumerate(cases):
        row, vec = engine.evaluate(facts), evaluation.evaluation(i)
        assert msgspec.json.encode(vec) == msgspec.json.encode(row), facts
        assert vec.derived == row.derived
        fired.update(f.id for f in row.fired)
    assert fired == {r.id for r in ruleset.rules}
    engine.close()


def test_scores_and_shap_are_bitwise_the_row_paths(pipeline):
    scorer = pipeline.scorer
    apps = credit_applications()
    matrix = ApplicationColumns.from_structs(apps, scorer.card.features).matrix(
        scorer.card.features
    )
    pd = scorer.predict_many(matrix)
    contrib = scorer.contributions_many(matrix)
    for i, app in enumerate(apps):
        row = scorer.features(app)
        assert pd[i] == scorer.predict(row)
        assert np.array_equal(contrib[i], scorer.contributions(row)[:-1])


def test_tabulated_scores_are_lightgbms_with_missing_values_anywhere(pipeline):
    """The tables' PD is `Booster.predict`'s, bit for bit, also where values are missing, and
    the cells it hands on give the same SHAP values as computing them afresh."""
    scorer = pipeline.scorer
    apps = credit_applications()
    matrix = ApplicationColumns.from_structs(apps, scorer.card.features).matrix(
        scorer.card.features
    )
    holes = matrix.copy()
    holes[np.random.default_rng(11).random(matrix.shape) < 0.25] = np.nan
    for x in (matrix, holes):
        pd, cells = scorer.score_many(x)
        assert cells is not None and scorer._table._leaves(scorer.booster) is not None
        assert np.array_equal(pd, scorer.booster.predict(x, num_threads=1))
        some = np.flatnonzero(pd > np.median(pd))
        assert np.array_equal(
            scorer.contributions_many(x[some], cells[:, some]), scorer.contributions_many(x[some])
        )
