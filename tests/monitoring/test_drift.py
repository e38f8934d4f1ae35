"""PSI against the model card's reference, on the real held-out applications and real shifts."""

from __future__ import annotations

import json
from pathlib import Path

import msgspec
import pytest

from decision_service.monitoring.drift import distribution_drift, drift_report, psi, status_of
from decision_service.scoring import Scorer, application_type
from tests.conftest import APPLICATIONS, ROOT

MODELS = ROOT / "models" / "underwriting"


@pytest.fixture(scope="module", params=["1.0.0", "1.1.0"])
def scorer(request: pytest.FixtureRequest) -> Scorer:
    return Scorer.load(MODELS / request.param)


def _held_out() -> list[dict]:
    return [json.loads(line) for line in APPLICATIONS.read_text().splitlines()]


def _report(scorer: Scorer, apps: list[dict], outcomes: list[str] | None = None):
    decode = application_type(scorer.card)
    pds = [scorer.predict(scorer.features(msgspec.convert(a, decode))) for a in apps]
    baseline = scorer.card.fair_lending["overall"]["outcomes"]
    if outcomes is None:  # the held-out mix itself: no outcome drift by construction
        outcomes = [o for o, n in baseline.items() for _ in range(n)][: len(apps)]
    return drift_report(scorer.card, apps, pds, outcomes, window={"from": None, "to": None})


def test_the_held_out_applications_stay_quiet(scorer: Scorer) -> None:
    report = _report(scorer, _held_out())
    assert report.decisions == 1782 and not report.small_window
    assert report.status == "ok" and report.alerts == [] and report.warnings == []
    assert {d.name for d in report.features} == set(scorer.card.feature_names)
    assert report.score is not None and report.score.psi < 0.02
    assert max(d.psi for d in report.features) < 0.05


def test_a_population_of_only_freelancers_alerts(scorer: Scorer) -> None:
    apps = [a for a in _held_out() if a["job"] == "freelance"]
    report = _report(scorer, apps)
    assert report.status == "alert"
    assert {"job", "income"} <= set(report.alerts)
    job = next(d for d in report.features if d.name == "job")
    freelance = next(b for b in job.bins if b.bin == "freelance")
    assert freelance.actual == 1.0 and 0.2 < freelance.expected < 0.25


def test_incomes_scaled_alert_on_income_and_move_pd(scorer: Scorer) -> None:
    apps = [a | {"income": None if a["income"] is None else a["income"] * 1.5} for a in _held_out()]
    report = _report(scorer, apps)
    assert report.alerts == ["income"]
    assert report.score is not None and report.score.psi > 0.05  # richer applicants, lower pd


def test_outcome_mix_against_the_baseline(scorer: Scorer) -> None:
    apps = _held_out()
    report = _report(scorer, apps, outcomes=["decline"] * len(apps))
    assert report.outcomes is not None and report.outcomes.status == "alert"
    assert report.alerts == ["outcome"]


def test_booleans_drift_by_category_share_not_one_bin() -> None:
    card = Scorer.load(MODELS / "1.1.0").card
    ref = card.reference_distributions["records"]
    share_true = ref["shares"]["true"]
    steady = [True] * round(1000 * share_true) + [False] * round(1000 * (1 - share_true))
    assert distribution_drift("records", ref, steady).psi < 0.001
    shifted = distribution_drift("records", ref, [True] * 600 + [False] * 400)
    assert shifted.status == "alert"
    assert [b.bin for b in shifted.bins] == ["false", "true"]


def test_psi_basics() -> None:
    assert psi([0.5, 0.5], [0.5, 0.5]) == 0
    assert psi([0.5, 0.5], [0.9, 0.1]) > 0.25
    assert psi([0.5, 0.5, 0.0], [0.5, 0.4, 0.1]) > 0.25  # a new bucket counts, not infinite
    assert (status_of(0.05), status_of(0.1), status_of(0.25)) == ("ok", "warn", "alert")
    ref = {"missing_share": 0.0, "bin_edges": [0, 10, 20], "shares": [0.5, 0.5]}
    beyond = distribution_drift("x", ref, [-5, 5, 15, 25, None])  # open outer bins, missing
    assert [b.actual for b in beyond.bins] == [0.4, 0.4, 0.2]
    cats = {"missing_share": 0.0, "shares": {"a": 1.0}}
    unseen = distribution_drift("c", cats, ["a", "zz"])
    assert [b.bin for b in unseen.bins] == ["a", "zz"]


def test_reports_use_the_card_the_decisions_were_made_with(tmp_path: Path) -> None:
    card = Scorer.load(MODELS / "1.1.0").card
    report = drift_report(card, [], [], [], window={"from": None, "to": None})
    assert report.small_window and report.model_version == "1.1.0"
    assert "marital" not in {d.name for d in report.features}
