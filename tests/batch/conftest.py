"""Batch fixtures: the real model, the shipped policy, and the real credit_data applications."""

from __future__ import annotations

from functools import cache

import msgspec
import pytest

from decision_service.batch.pipeline import BatchPipeline
from decision_service.pipeline import versions
from decision_service.rules.compiled import CompiledEngine
from decision_service.rules.language import load_ruleset
from decision_service.rules.ruleset import Ruleset
from decision_service.scoring import Scorer, application_type
from decision_service.service import card_schema
from tests.conftest import MODEL_DIR, ROOT

POLICY = ROOT / "rules" / "risk_appetite.yaml"


@cache
def _scorer() -> Scorer:
    return Scorer.load(MODEL_DIR)


@pytest.fixture(scope="session")
def ruleset() -> Ruleset:
    return load_ruleset(POLICY, card_schema(_scorer().card))


@pytest.fixture(scope="session")
def pipeline(ruleset: Ruleset) -> BatchPipeline:
    scorer = _scorer()
    return BatchPipeline(scorer, ruleset, versions(scorer, CompiledEngine(ruleset), ruleset.sha256))


@cache
def credit_applications() -> tuple[msgspec.Struct, ...]:
    """All 4,454 credit_data rows as validated Application structs (the request type)."""
    from decision_service.training.dataset import load_credit_data

    data = load_credit_data()
    app_type = application_type(_scorer().card)
    return tuple(
        msgspec.convert({"application_id": f"CD-{rid}", **app}, app_type)
        for rid, app in zip(data.row_ids, data.applications, strict=True)
    )
