"""underwriting 1.1.0: reproducible, same request contract as 1.0.0, never uses marital or age;
every card's fair-lending section and reference distributions are recomputed, not typed."""

from __future__ import annotations

from pathlib import Path

import lightgbm as lgb
import msgspec
import numpy as np
import pytest
import yaml

from decision_service.cli import main
from decision_service.rules.ruleset import sha256_text
from decision_service.scoring import Scorer, application_type, load_card
from decision_service.training.dataset import encode, load_credit_data
from decision_service.training.fair_lending import fair_lending_report
from decision_service.training.features import FEATURE_SETS
from decision_service.training.train import SPLIT_SEED, held_out_applications, split_indices
from tests.conftest import ROOT

MODELS = ROOT / "models" / "underwriting"
POLICY = ROOT / "rules" / "risk_appetite.yaml"
VERSIONS = ("1.0.0", "1.1.0")


def _card(version: str) -> dict:
    return yaml.safe_load((MODELS / version / "model_card.yaml").read_text())


def test_training_1_1_0_twice_reproduces_the_committed_model_bit_for_bit(tmp_path: Path) -> None:
    examples = tmp_path / "applications.jsonl"
    args = ["train", "--version", "1.1.0", "--models", str(tmp_path), "--examples", str(examples)]
    assert main(args) == 0
    out = tmp_path / "underwriting" / "1.1.0"
    assert (out / "model.txt").read_bytes() == (MODELS / "1.1.0" / "model.txt").read_bytes()
    assert examples.read_bytes() == (ROOT / "benchmarks/data/applications.jsonl").read_bytes()
    new, committed = yaml.safe_load((out / "model_card.yaml").read_text()), _card("1.1.0")
    keys = ["model_sha256", "metrics", "selection", "parameters", "features", "training_data"]
    keys += ["reference_distributions", "application_fields"]
    if committed["fair_lending"]["policy"]["sha256"] == sha256_text(POLICY.read_text()):
        keys.append("fair_lending")  # the policy it was computed under is still the shipped one
    for key in keys:
        assert new[key] == committed[key], key


def test_train_refuses_to_overwrite_a_version_without_force(tmp_path: Path) -> None:
    out = tmp_path / "underwriting" / "1.1.0"
    out.mkdir(parents=True)
    (out / "model.txt").write_text("released model")
    args = ["train", "--version", "1.1.0", "--models", str(tmp_path), "--examples", ""]
    assert main(args) == 1
    assert (out / "model.txt").read_text() == "released model"
    assert main(["train", "--version", "9.9.9", "--models", str(tmp_path)]) == 2  # no feature set


def test_1_1_0_accepts_the_same_request_and_uses_neither_marital_nor_age() -> None:
    old, new = load_card(MODELS / "1.0.0"), load_card(MODELS / "1.1.0")
    assert msgspec.json.schema(application_type(new)) == msgspec.json.schema(application_type(old))
    assert "marital" not in new.feature_names and "age" not in new.feature_names
    assert new.unused_fields == ["age", "marital"]
    assert lgb.Booster(model_file=str(MODELS / "1.1.0/model.txt")).feature_name() == (
        new.feature_names
    )
    scorer = Scorer.load(MODELS / "1.1.0")
    decode = msgspec.json.Decoder(application_type(new)).decode
    lines = (ROOT / "benchmarks/data/applications.jsonl").read_bytes().splitlines()[:200]
    for line in lines:
        app = decode(line)
        base = scorer.predict(scorer.features(app))
        for change in ({"marital": "single"}, {"marital": None}, {"age": 19}, {"age": 80}):
            other = msgspec.structs.replace(app, **change)
            assert scorer.predict(scorer.features(other)) == base


def test_the_monotone_age_variant_never_raises_pd_with_age(tmp_path: Path) -> None:
    """The variant not chosen, held to its promise: older never means a higher pd."""
    args = ["train", "--version", "1.1.0", "--features", "fair-age-monotone"]
    assert main([*args, "--models", str(tmp_path), "--examples", str(tmp_path / "x.jsonl")]) == 0
    booster = lgb.Booster(model_file=str(tmp_path / "underwriting/1.1.0/model.txt"))
    features = FEATURE_SETS["fair-age-monotone"].features
    x = encode(load_credit_data().applications[:300], features)
    age = [f.name for f in features].index("age")
    pds = []
    for years in range(18, 90):
        x[:, age] = years
        pds.append(booster.predict(x, num_threads=1))
    assert np.all(np.diff(np.stack(pds), axis=0) <= 0)
    assert np.any(np.diff(np.stack(pds), axis=0) < 0)  # age is used, just never against age


@pytest.mark.parametrize("version", VERSIONS)
def test_fair_lending_section_is_recomputed_not_typed(version: str) -> None:
    card = load_card(MODELS / version)
    fair = card.fair_lending
    if fair["policy"]["sha256"] != sha256_text(POLICY.read_text()):
        pytest.skip("the shipped policy changed since the card was computed: retrain the card")
    data = load_credit_data()
    apps = held_out_applications(data, split_indices(data.default))
    again = fair_lending_report(
        Scorer.load(MODELS / version, tabulate_shap=False), apps, POLICY, data_note=fair["data"]
    )
    assert again == fair
    assert {r["group"] for r in fair["groups"]["age_band"]} == {"<25", "25-61", ">=62"}
    assert {r["group"] for r in fair["groups"]["marital"]} >= {"married", "single", "separated"}
    flagged = {p["feature"]: p["used_by_model"] for p in fair["protected_features"]}
    assert flagged == (
        {"age": True, "marital": True} if version == "1.0.0" else {"age": False, "marital": False}
    )


@pytest.mark.parametrize("version", VERSIONS)
def test_reference_distributions_show_every_category_and_the_split_seed(version: str) -> None:
    card = load_card(MODELS / version)
    assert card.training_data.split_seed == SPLIT_SEED
    ref = card.reference_distributions
    assert set(ref) == {*card.feature_names, "pd"}
    records = ref["records"]["shares"]
    assert set(records) == {"false", "true"} and 0.1 < records["true"] < 0.3
    for spec in card.features:
        shares = ref[spec.name]["shares"]
        if spec.type == "category":
            assert set(shares) == set(spec.categories or ())
        total = sum(shares.values() if isinstance(shares, dict) else shares)
        assert abs(total + ref[spec.name]["missing_share"] - 1) < 1e-4, spec.name
