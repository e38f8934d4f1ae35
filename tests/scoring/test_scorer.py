"""The scorer: verified loading, exact fast-path scores, SHAP reason codes, monotonicity."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from decision_service.scoring import ModelCardError, Scorer


def test_fast_path_equals_lightgbm_predict_on_1000_held_out_rows(scorer, applications) -> None:
    rows = [scorer.features(a) for a in applications[:1000]]
    x = np.asarray(rows)
    expected = scorer.booster.predict(x, num_threads=1)
    got = np.asarray([scorer.predict(r) for r in rows])
    assert np.max(np.abs(expected - got)) <= 1e-12
    expected_contrib = scorer.booster.predict(x, num_threads=1, pred_contrib=True)
    got_contrib = np.asarray([scorer.contributions(r) for r in rows])
    assert np.max(np.abs(expected_contrib - got_contrib)) <= 1e-12


def test_missing_values_are_scored_as_missing(scorer, applications) -> None:
    with_income = next(a for a in applications if a.income is not None)
    row = scorer.features(with_income)
    row[scorer.card.feature_names.index("income")] = math.nan
    expected = scorer.booster.predict(np.asarray([row]), num_threads=1)[0]
    assert scorer.predict(row) == expected


def test_reasons_are_the_top_four_features_that_raised_the_pd(scorer, applications) -> None:
    for app in applications[:300]:
        row = scorer.features(app)
        contrib = scorer.contributions(row)
        # SHAP is exact: contributions + expected value = the raw score (log-odds).
        pd = scorer.predict(row)
        assert abs(sum(contrib) - math.log(pd / (1 - pd))) < 1e-9
        reasons = scorer.explain(row)
        positive = sorted((c for c in contrib[:-1] if c > 0), reverse=True)[:4]
        assert [r.contribution for r in reasons] == positive
        for r in reasons:
            spec = next(f for f in scorer.card.features if f.name == r.feature)
            assert (r.code, r.text) == (spec.reason_code, spec.reason)


def test_refuses_a_model_file_that_does_not_match_its_card(tmp_path: Path) -> None:
    from tests.conftest import MODEL_DIR

    copy = tmp_path / "1.0.0"
    shutil.copytree(MODEL_DIR, copy)
    with (copy / "model.txt").open("a") as f:
        f.write("\n")
    with pytest.raises(ModelCardError, match="does not match the card"):
        Scorer.load(copy)
    (copy / "model.txt").unlink()
    with pytest.raises(ModelCardError, match="missing"):
        Scorer.load(copy)
    with pytest.raises(ModelCardError, match="model card not found"):
        Scorer.load(tmp_path / "nowhere")


def test_each_thread_gets_its_own_fast_config(scorer, applications) -> None:
    from concurrent.futures import ThreadPoolExecutor

    rows = [scorer.features(a) for a in applications[:400]]
    expected = [scorer.predict(r) for r in rows]
    with ThreadPoolExecutor(4) as pool:
        got = list(pool.map(scorer.predict, rows))
    assert got == expected


MONOTONE = st.sampled_from(
    ["seniority", "records", "expenses", "income", "assets", "debt", "amount"]
)


@settings(max_examples=300, deadline=None)
@given(i=st.integers(0, 1700), name=MONOTONE, bump=st.floats(0.01, 5000))
def test_monotone_constraints_hold(scorer, applications, i, name, bump) -> None:
    """More adverse records, debt, expenses or amount never lower the PD; more income, assets
    or seniority never raise it."""
    spec = next(f for f in scorer.card.features if f.name == name)
    j = scorer.card.feature_names.index(name)
    row = scorer.features(applications[i])
    if math.isnan(row[j]):
        return
    higher = list(row)
    higher[j] = 1.0 if spec.type == "boolean" else row[j] + (round(bump) or 1)
    if spec.type == "boolean" and row[j] == 1.0:
        return
    delta = scorer.predict(higher) - scorer.predict(row)
    assert delta * spec.monotone >= 0


def test_tabulated_shap_equals_lightgbm_contrib_on_every_real_application(scorer) -> None:
    """The per-tree tables give LightGBM's own TreeSHAP values (sum order aside), including
    with missing values anywhere, and so the same reason codes."""
    from decision_service.training.dataset import encode, load_credit_data

    assert scorer._table is not None
    x = encode(load_credit_data().applications)
    holes = x.copy()
    holes[np.random.default_rng(7).random(x.shape) < 0.25] = np.nan
    reference = Scorer(scorer.card, scorer.booster, tabulate_shap=False)
    for matrix in (x, holes):
        expected = scorer.booster.predict(matrix, num_threads=1, pred_contrib=True)
        rows = [list(r) for r in matrix]
        got = np.asarray([scorer.contributions(r) for r in rows])
        assert np.max(np.abs(expected - got)) <= 1e-12
        for r in rows[:1500]:
            assert [e.code for e in scorer.explain(r)] == [e.code for e in reference.explain(r)]


def test_large_trees_fall_back_to_lightgbm_contrib(scorer, tmp_path) -> None:
    """A model whose trees have too many cells is not tabulated; reasons still come."""
    from decision_service.scoring import shap_table

    limit = shap_table.MAX_CELLS_PER_TREE
    shap_table.MAX_CELLS_PER_TREE = 10
    try:
        small = Scorer(scorer.card, scorer.booster)
    finally:
        shap_table.MAX_CELLS_PER_TREE = limit
    assert small._table is None
    row = [46.0, 10, 0, 0, 1, 1, 36, 90, 200, 3000, 0, 2000, 2985]
    assert [e.code for e in small.explain(row)] == [e.code for e in scorer.explain(row)]
