"""A challenger runs only inside its own [effective_from, effective_to): before or after it,
no row is recorded for a decision (and the champion decides as ever)."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest

from decision_service.deciding import Ask
from decision_service.scoring import application_type
from decision_service.service import bootstrap
from decision_service.settings import load_settings
from tests.conftest import ROOT

from ._files import challenger, models_dir, rules_dir


def _rows(tmp: Path, text: str) -> list:
    svc = bootstrap(
        load_settings(
            environ={},
            models_dir=models_dir(tmp),
            rules_dir=rules_dir(tmp, challenger=text),
            database_url=f"sqlite:///{tmp / 'audit.db'}",
            rules_watch=False,
            log_decisions=False,
            rules_engine="compiled",
            audit_key_file=tmp / "audit.key",
        )
    )
    try:
        assert len(svc.rules.challengers()) == 1
        decode = msgspec.json.Decoder(application_type(svc.scorer.card)).decode
        line = (ROOT / "benchmarks/data/applications.jsonl").read_bytes().splitlines()[0]
        one = Ask(decode(line), line)
        return svc.deciding._challenge(one, svc.deciding._decide(one))
    finally:
        svc.rules.close()


@pytest.mark.parametrize(
    ("window", "runs"),
    [
        ("", True),
        ("effective_to: 2026-11-02", False),  # over
        ("effective_to: 2999-01-01", True),
    ],
)
def test_a_challenger_runs_inside_its_window_only(tmp_path, window, runs):
    text = challenger()
    if window:
        text = text.replace("effective_from: 2026-11-01", f"effective_from: 2026-11-01\n{window}")
    assert len(_rows(tmp_path, text)) == (1 if runs else 0)


def test_a_challenger_not_yet_in_force_does_not_run(tmp_path):
    text = challenger().replace("effective_from: 2026-11-01", "effective_from: 2999-01-01")
    assert _rows(tmp_path, text) == []
