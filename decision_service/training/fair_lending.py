"""Fair-lending section of the model card: approval rates and adverse impact ratios.

Held-out applications are decided exactly as in production — the model under review through
the shipped risk-appetite policy on the real rules engine (`pipeline.decide`) — and approval
rates are compared by age band and by marital status. The adverse impact ratio of a group is
its approval rate over the most-approved group's (the "four-fifths rule": below 0.8 is
evidence of adverse impact and must be explained or fixed). Groups smaller than
MIN_GROUP_SIZE are reported but flagged: one applicant more or less moves their ratio a lot.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import msgspec

from decision_service.pipeline import decide, versions
from decision_service.rules.snapshot import DEFAULT_ENGINE, build_snapshot
from decision_service.scoring import Scorer, application_type
from decision_service.service import card_schema

FOUR_FIFTHS = 0.8
MIN_GROUP_SIZE = 30
AGE_BANDS: tuple[tuple[str, int, int], ...] = (
    ("<25", 0, 25),
    ("25-61", 25, 62),
    (">=62", 62, 1000),
)


def age_band(age: int | float | None) -> str:
    if age is None:
        return "missing"
    for name, low, high in AGE_BANDS:
        if low <= age < high:
            return name
    return "missing"


GROUPINGS: dict[str, Callable[[dict[str, Any]], str]] = {
    "age_band": lambda app: age_band(app.get("age")),
    "marital": lambda app: app.get("marital") or "missing",
}


def two_proportion_p_value(n1: int, a1: int, n2: int, a2: int) -> float:
    """Two-sided p-value of the z-test that two approval rates are equal (pooled)."""
    if not n1 or not n2:
        return 1.0
    pooled = (a1 + a2) / (n1 + n2)
    se = math.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
    if se == 0:
        return 1.0
    z = abs(a1 / n1 - a2 / n2) / se
    return math.erfc(z / math.sqrt(2))


def adverse_impact(groups: dict[str, tuple[int, int]]) -> list[dict[str, Any]]:
    """Per group (applications, approved) → rates and ratios to the most-approved group.

    The reference group is the most-approved one among groups of at least MIN_GROUP_SIZE (a
    tiny group with a lucky rate would otherwise make every other group look disfavoured).
    `p_value` says whether the gap to the reference could be chance (practical significance
    is the ratio, statistical significance the p-value: reviewers weigh both)."""
    rates = {g: (a / n if n else 0.0) for g, (n, a) in groups.items()}
    sized = [g for g, (n, _) in groups.items() if n >= MIN_GROUP_SIZE] or list(groups)
    reference = max(sized, key=lambda g: rates[g]) if sized else None
    best = rates[reference] if reference is not None else 0.0
    rows = []
    for g, (n, approved) in groups.items():
        ratio = rates[g] / best if best > 0 else 1.0
        ref_n, ref_a = groups[reference] if reference is not None else (0, 0)
        rows.append(
            {
                "group": g,
                "applications": n,
                "approved": approved,
                "approval_rate": round(rates[g], 6),
                "adverse_impact_ratio": round(ratio, 6),
                "below_four_fifths": ratio < FOUR_FIFTHS,
                "p_value": round(two_proportion_p_value(n, approved, ref_n, ref_a), 6),
                "small_sample": n < MIN_GROUP_SIZE,
            }
        )
    return rows


def _order(groups: Iterable[str], preferred: list[str]) -> list[str]:
    seen = set(groups)
    return [g for g in preferred if g in seen] + sorted(seen - set(preferred))


def fair_lending_report(
    scorer: Scorer,
    applications: list[dict[str, Any]],
    policy_file: Path,
    *,
    data_note: str,
    engine: str = DEFAULT_ENGINE,
) -> dict[str, Any]:
    """Decide `applications` (request dicts with application_id) with `scorer` and the policy
    in `policy_file`; approval rates and adverse impact ratios by protected group."""
    card = scorer.card
    snapshot = build_snapshot(
        policy_file.read_text(), policy_file.name, card_schema(card), engine=engine
    )
    try:
        refs = versions(scorer, snapshot.engine, snapshot.sha256)
        to_app = application_type(card)
        outcomes = []
        for raw in applications:
            app = msgspec.convert(raw, to_app)
            decision = decide(
                app,
                scorer,
                snapshot.engine,
                refs,
                explain=False,
                decision_id=raw["application_id"],
                decided_at="1970-01-01T00:00:00Z",
            )
            outcomes.append(decision.outcome)
    finally:
        for eng in snapshot.engines.values():
            eng.close()
    approved = [o == "approve" for o in outcomes]
    by: dict[str, list[dict[str, Any]]] = {}
    for grouping, key in GROUPINGS.items():
        counts: dict[str, tuple[int, int]] = {}
        for raw, ok in zip(applications, approved, strict=True):
            g = key(raw)
            n, a = counts.get(g, (0, 0))
            counts[g] = (n + 1, a + int(ok))
        preferred = [b[0] for b in AGE_BANDS] if grouping == "age_band" else []
        counts = {g: counts[g] for g in _order(counts, preferred)}
        by[grouping] = adverse_impact(counts)
    used = set(card.feature_names)
    protected = [
        {
            "feature": f.name,
            "basis": f.protected_basis,
            "used_by_model": f.name in used,
            "monotone": next((m.monotone for m in card.features if m.name == f.name), None),
        }
        for f in card.request_fields
        if f.protected_basis
    ]

    def worst(rows: list[dict[str, Any]]) -> float:
        sized = [r["adverse_impact_ratio"] for r in rows if not r["small_sample"]]
        return min(sized) if sized else 1.0

    return {
        "data": data_note,
        "policy": {
            "file": policy_file.name,
            "ruleset": snapshot.name,
            "version": snapshot.version,
            "sha256": snapshot.sha256,
            "engine": engine,
        },
        "approval": "outcome == approve (an approved amount below the requested one counts)",
        "four_fifths_threshold": FOUR_FIFTHS,
        "min_group_size": MIN_GROUP_SIZE,
        "protected_features": protected,
        "overall": {
            "applications": len(outcomes),
            "approved": sum(approved),
            "approval_rate": round(sum(approved) / len(outcomes), 6),
            "outcomes": {o: outcomes.count(o) for o in ("approve", "refer", "decline")},
        },
        "groups": by,
        "min_adverse_impact_ratio": {g: worst(rows) for g, rows in by.items()},
    }
