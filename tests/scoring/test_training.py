"""`decision-service train` reproduces the committed model, card metrics and examples."""

from __future__ import annotations

from pathlib import Path

import lightgbm as lgb
import numpy as np
import yaml

from decision_service.cli import main
from decision_service.training.dataset import encode, load_credit_data
from decision_service.training.metrics import auc, evaluate
from decision_service.training.train import split_indices
from tests.conftest import APPLICATIONS, MODEL_DIR

# Decided after the credit decision, or outcome proxies: must never be model inputs.
LEAKY = {"interest", "int_rate", "rate", "grade", "sub_grade", "status", "term_paid"}


def test_training_twice_reproduces_the_committed_model_bit_for_bit(tmp_path: Path) -> None:
    examples = tmp_path / "applications.jsonl"
    assert main(["train", "--models", str(tmp_path), "--examples", str(examples)]) == 0
    out = tmp_path / "underwriting" / "1.0.0"
    assert (out / "model.txt").read_bytes() == (MODEL_DIR / "model.txt").read_bytes()
    assert examples.read_bytes() == APPLICATIONS.read_bytes()
    new_card = yaml.safe_load((out / "model_card.yaml").read_text())
    committed = yaml.safe_load((MODEL_DIR / "model_card.yaml").read_text())
    for key in (
        "model_sha256",
        "metrics",
        "selection",
        "parameters",
        "features",
        "reference_distributions",
        "training_data",
    ):
        assert new_card[key] == committed[key], key


def test_card_metrics_are_recomputed_not_typed() -> None:
    card = yaml.safe_load((MODEL_DIR / "model_card.yaml").read_text())
    data = load_credit_data()
    parts = split_indices(data.default)
    booster = lgb.Booster(model_file=str(MODEL_DIR / "model.txt"))
    test = parts["test"]
    pd_test = booster.predict(encode(data.applications)[test], num_threads=1)
    assert evaluate(data.default[test], pd_test) == card["metrics"]["test"]
    assert card["metrics"]["test"]["auc"] > 0.8  # a real model, not noise


def test_examples_are_held_out_from_training() -> None:
    data = load_credit_data()
    parts = split_indices(data.default)
    trained_ids = {f"APP-CD-{data.row_ids[i]:05d}" for i in parts["train"]}
    lines = APPLICATIONS.read_text().splitlines()
    assert len(lines) == len(parts["validation"]) + len(parts["test"])
    assert not any(line.split('"')[3] in trained_ids for line in lines)


def test_features_are_application_time_only_with_stated_constraints() -> None:
    card = yaml.safe_load((MODEL_DIR / "model_card.yaml").read_text())
    names = [f["name"] for f in card["features"]]
    assert not LEAKY & set(names)
    booster = lgb.Booster(model_file=str(MODEL_DIR / "model.txt"))
    assert booster.feature_name() == names
    stated = [f.get("monotone", 0) for f in card["features"]]
    assert card["parameters"]["monotone_constraints"] == stated
    assert {f["name"]: f.get("monotone", 0) for f in card["features"]}["records"] == 1


def test_split_is_stratified() -> None:
    y = load_credit_data().default
    parts = split_indices(y)
    rates = [y[idx].mean() for idx in parts.values()]
    assert max(rates) - min(rates) < 0.01


def test_auc_matches_the_pairwise_definition() -> None:
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 200).astype(float)
    p = np.round(rng.random(200), 1)  # many ties
    pos, neg = p[y == 1], p[y == 0]
    pairwise = ((pos[:, None] > neg[None, :]) + 0.5 * (pos[:, None] == neg[None, :])).mean()
    assert abs(auc(y, p) - pairwise) < 1e-12
