"""Load a window of stored decisions from the audit store and compute its drift report."""

from __future__ import annotations

from collections import Counter
from datetime import datetime
from pathlib import Path

import msgspec
import sqlalchemy as sa

from decision_service.audit import Filters, iter_records
from decision_service.monitoring.drift import DriftReport, drift_report
from decision_service.scoring.card import load_card


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def window_report(
    engine: sa.Engine,
    models_dir: Path,
    model_name: str,
    *,
    from_: datetime | None = None,
    to: datetime | None = None,
    model_version: str | None = None,
    baseline_from: datetime | None = None,
    baseline_to: datetime | None = None,
    default_version: str | None = None,
) -> DriftReport:
    """Drift of the decisions in [from_, to) made by `model_version` (default: the version that
    made most of them). The outcome mix is compared with [baseline_from, baseline_to) when
    given, else with the model card's held-out decisions."""
    records = list(iter_records(engine, Filters(from_=from_, to=to, model_version=model_version)))
    window = {"from": _iso(from_), "to": _iso(to)}
    if model_version is None and records:
        model_version = Counter(r.model_version for r in records).most_common(1)[0][0]
        records = [r for r in records if r.model_version == model_version]
    if model_version is None:  # an empty window: report against the default version's card
        if default_version is None:
            raise ValueError("no decisions in the window and no default model version")
        model_version = default_version
    card = load_card(models_dir / model_name / model_version)
    decode = msgspec.json.Decoder().decode
    requests = [decode(r.request_json) for r in records]
    baseline = name = None
    if baseline_from is not None or baseline_to is not None:
        earlier = iter_records(engine, Filters(from_=baseline_from, to=baseline_to))
        baseline = dict(Counter(r.outcome for r in earlier))
        name = f"decisions from {_iso(baseline_from)} to {_iso(baseline_to)}"
    return drift_report(
        card,
        requests,
        [r.pd for r in records],
        [r.outcome for r in records],
        window=window,
        baseline_outcomes=baseline,
        baseline_name=name,
    )
