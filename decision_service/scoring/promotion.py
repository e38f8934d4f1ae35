"""The promotion gate: may this model version serve live traffic? (models/promotion.yaml)

Every check reads the version's files and card only (no database): the model file must match
the card's sha256, the card must be complete, held-out AUC and calibration must meet the
policy, the model must not use a prohibited basis, and no enforced group may show adverse
impact (four-fifths rule, practically and statistically significant).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgspec
import yaml

from decision_service.scoring.card import ModelCard, ModelCardError, load_card


class FairLendingPolicy(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    min_adverse_impact_ratio: float = 0.8
    max_p_value: float = 0.05
    min_group_size: int = 30
    enforced: dict[str, list[str] | str] = msgspec.field(default_factory=dict)


class PromotionPolicy(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    min_test_auc: float
    max_calibration_error: float
    prohibited_features: list[str] = msgspec.field(default_factory=list)
    fair_lending: FairLendingPolicy = msgspec.field(default_factory=FairLendingPolicy)
    required_card_fields: list[str] = msgspec.field(default_factory=list)


class Check(msgspec.Struct, frozen=True):
    name: str
    ok: bool
    detail: str


class GateResult(msgspec.Struct, frozen=True):
    version: str
    passed: bool
    checks: list[Check]
    warnings: list[str]

    @property
    def failed(self) -> list[Check]:
        return [c for c in self.checks if not c.ok]


def load_policy(path: Path) -> PromotionPolicy:
    try:
        return msgspec.convert(yaml.safe_load(path.read_text()), PromotionPolicy)
    except (OSError, yaml.YAMLError, msgspec.ValidationError) as exc:
        raise ValueError(f"{path}: invalid promotion policy: {exc}") from exc


def calibration_error(calibration: list[dict[str, Any]]) -> float:
    """Expected calibration error over deciles: count-weighted mean |predicted - observed|."""
    n = sum(r["count"] for r in calibration)
    return sum(r["count"] * abs(r["mean_pd"] - r["observed_default_rate"]) for r in calibration) / n


def _complete(card: ModelCard, policy: PromotionPolicy) -> Check:
    missing = [f for f in policy.required_card_fields if not getattr(card, f, None)]
    metrics = card.metrics.get("test", {})
    if not {"auc", "calibration"} <= set(metrics):
        missing.append("metrics.test")
    unreferenced = sorted({*card.feature_names, "pd"} - set(card.reference_distributions))
    missing += [f"reference_distributions.{f}" for f in unreferenced]
    if card.training_data.split_seed is None:
        missing.append("training_data.split_seed")
    if card.fair_lending and not card.fair_lending.get("groups"):
        missing.append("fair_lending.groups")
    if missing:
        return Check("card_complete", False, "card lacks " + ", ".join(missing))
    return Check("card_complete", True, "every required section present")


def _fair_lending(card: ModelCard, policy: FairLendingPolicy) -> tuple[Check, list[str]]:
    failures, warnings = [], []
    groups = card.fair_lending.get("groups", {})
    for grouping, rows in groups.items():
        enforced = policy.enforced.get(grouping, [])
        for r in rows:
            below = r["adverse_impact_ratio"] < policy.min_adverse_impact_ratio
            judged = r["applications"] >= policy.min_group_size
            significant = r.get("p_value", 0.0) < policy.max_p_value
            if not below:
                continue
            text = (
                f"{grouping}={r['group']}: ratio {r['adverse_impact_ratio']:.3f} "
                f"(n={r['applications']}, p={r.get('p_value', float('nan')):.3f})"
            )
            if not (enforced == "all" or r["group"] in enforced):
                warnings.append(f"{text}: group not enforced by the policy")
            elif not judged:
                warnings.append(f"{text}: fewer than {policy.min_group_size} applications")
            elif not significant:
                warnings.append(f"{text}: not statistically significant")
            else:
                failures.append(text)
    for grouping in policy.enforced:
        if grouping not in groups:
            failures.append(f"no {grouping} groups in the card's fair_lending section")
    if failures:
        return Check("fair_lending", False, "; ".join(failures)), warnings
    return Check("fair_lending", True, "no enforced group below the four-fifths rule"), warnings


def evaluate_gate(model_dir: Path, policy: PromotionPolicy) -> GateResult:
    """Run every check on `model_dir`; never raises for a bad model (the result says why)."""
    version = model_dir.name
    try:
        card = load_card(model_dir)
    except ModelCardError as exc:
        return GateResult(version, False, [Check("sha256", False, str(exc))], [])
    checks = [Check("sha256", True, f"model file matches {card.model_sha256[:12]}…")]
    checks.append(_complete(card, policy))
    test = card.metrics.get("test", {})
    auc = test.get("auc", 0.0)
    checks.append(
        Check("auc", auc >= policy.min_test_auc, f"test AUC {auc:.4f} (min {policy.min_test_auc})")
    )
    ece = calibration_error(test["calibration"]) if test.get("calibration") else 1.0
    checks.append(
        Check(
            "calibration",
            ece <= policy.max_calibration_error,
            f"test calibration error {ece:.4f} (max {policy.max_calibration_error})",
        )
    )
    used = sorted(set(policy.prohibited_features) & set(card.feature_names))
    checks.append(
        Check(
            "prohibited_features",
            not used,
            f"model uses {', '.join(used)}" if used else "no prohibited basis among features",
        )
    )
    fair, warnings = _fair_lending(card, policy.fair_lending)
    checks.append(fair)
    return GateResult(version, all(c.ok for c in checks), checks, warnings)
