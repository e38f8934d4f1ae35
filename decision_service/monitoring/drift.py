"""Population stability (PSI) of every model feature, of pd and of the outcome mix.

Pure functions over already-loaded values. The expected distribution is the model card's
reference (training split): decile bins for numbers, shares per category for categorical and
boolean features, plus a missing-value bucket. PSI = Σ (actual − expected) · ln(actual /
expected), shares floored at FLOOR so an empty bin counts as rare, not infinite.
Conventional reading: < 0.1 stable, 0.1–0.25 moderate shift (warn), ≥ 0.25 major shift (alert).
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import msgspec

from decision_service.decision import OUTCOMES
from decision_service.scoring.card import ModelCard

WARN = 0.1
ALERT = 0.25
FLOOR = 1e-4
MIN_DECISIONS = 100  # below this a window's PSI is mostly sampling noise

Status = Literal["ok", "warn", "alert"]


class BinShare(msgspec.Struct, frozen=True):
    bin: str
    expected: float
    actual: float


class Drift(msgspec.Struct, frozen=True):
    name: str
    psi: float
    status: Status
    bins: list[BinShare]


class DriftReport(msgspec.Struct, frozen=True):
    model_version: str | None
    window: dict[str, str | None]
    decisions: int
    small_window: bool
    status: Status
    alerts: list[str]  # names at or above ALERT
    warnings: list[str]  # names at or above WARN
    features: list[Drift]
    score: Drift | None
    outcomes: Drift | None
    outcome_baseline: str


def status_of(value: float) -> Status:
    return "alert" if value >= ALERT else "warn" if value >= WARN else "ok"


def psi(expected: Sequence[float], actual: Sequence[float]) -> float:
    total = 0.0
    for e, a in zip(expected, actual, strict=True):
        e, a = max(e, FLOOR), max(a, FLOOR)
        total += (a - e) * math.log(a / e)
    return total


def _drift(name: str, labels: list[str], expected: list[float], counts: list[int]) -> Drift:
    n = sum(counts)
    actual = [c / n for c in counts] if n else [0.0] * len(counts)
    # Buckets empty on both sides (e.g. no missing values anywhere) carry no information.
    keep = [i for i in range(len(labels)) if expected[i] > 0 or counts[i] > 0]
    value = psi([expected[i] for i in keep], [actual[i] for i in keep]) if n else 0.0
    bins = [BinShare(labels[i], round(expected[i], 6), round(actual[i], 6)) for i in keep]
    return Drift(name, round(value, 6), status_of(value), bins)


def _is_missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def distribution_drift(name: str, reference: Mapping[str, Any], values: Sequence[Any]) -> Drift:
    """PSI of `values` (raw: numbers, category strings, booleans, None) against one card
    reference distribution."""
    shares = reference["shares"]
    missing_share = float(reference.get("missing_share", 0.0))
    if isinstance(shares, Mapping):  # categories (booleans as "false"/"true")
        labels = list(shares)
        index = {label: i for i, label in enumerate(labels)}
        counts = [0] * (len(labels) + 1)
        for v in values:
            if _is_missing(v):
                counts[-1] += 1
                continue
            key = ("true" if v else "false") if isinstance(v, bool) else str(v)
            if key not in index:  # a category the model never saw: its own bucket
                index[key] = len(labels)
                labels.append(key)
                counts.insert(-1, 0)
            counts[index[key]] += 1
        expected = [float(shares.get(label, 0.0)) for label in labels] + [missing_share]
        return _drift(name, [*labels, "missing"], expected, counts)
    edges = [float(e) for e in reference["bin_edges"]]
    inner = edges[1:-1]  # outer bins are open: values beyond the training range fall in them
    labels = [f"[{edges[i]:g}, {edges[i + 1]:g})" for i in range(len(edges) - 1)]
    counts = [0] * (len(labels) + 1)
    for v in values:
        if _is_missing(v):
            counts[-1] += 1
        else:
            counts[bisect_right(inner, float(v))] += 1
    expected = [float(s) for s in shares] + [missing_share]
    return _drift(name, [*labels, "missing"], expected, counts)


def outcome_drift(outcomes: Sequence[str], baseline: Mapping[str, int]) -> Drift:
    total = sum(baseline.values())
    expected = [baseline.get(o, 0) / total if total else 0.0 for o in OUTCOMES]
    counts = Counter(outcomes)
    return _drift("outcome", list(OUTCOMES), expected, [counts.get(o, 0) for o in OUTCOMES])


def drift_report(
    card: ModelCard,
    requests: Sequence[Mapping[str, Any]],
    pds: Sequence[float],
    outcomes: Sequence[str],
    *,
    window: dict[str, str | None],
    baseline_outcomes: Mapping[str, int] | None = None,
    baseline_name: str | None = None,
) -> DriftReport:
    """Drift of one window of decisions made with `card`'s model.

    The outcome mix is compared with `baseline_outcomes` (e.g. an earlier window), or by
    default with the card's own held-out decisions under the shipped policy."""
    refs = card.reference_distributions
    features = [
        distribution_drift(name, refs[name], [r.get(name) for r in requests])
        for name in card.feature_names
        if name in refs
    ]
    score = distribution_drift("pd", refs["pd"], list(pds)) if "pd" in refs else None
    if baseline_outcomes is None:
        baseline_outcomes = card.fair_lending.get("overall", {}).get("outcomes", {})
        baseline_name = "the model card's held-out decisions under the shipped policy"
    outcome = outcome_drift(outcomes, baseline_outcomes) if baseline_outcomes else None
    judged = [*features, *(d for d in (score, outcome) if d is not None)]
    alerts = [d.name for d in judged if d.status == "alert"]
    warnings = [d.name for d in judged if d.status == "warn"]
    status: Status = "alert" if alerts else "warn" if warnings else "ok"
    return DriftReport(
        model_version=card.version,
        window=window,
        decisions=len(requests),
        small_window=len(requests) < MIN_DECISIONS,
        status=status,
        alerts=alerts,
        warnings=warnings,
        features=features,
        score=score,
        outcomes=outcome,
        outcome_baseline=baseline_name or "baseline window",
    )
