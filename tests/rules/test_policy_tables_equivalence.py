"""The shipped policy rewritten with decision tables decides exactly as the rule version it
replaced (kept as a fixture) on all 1,782 example applications, with the real model, on both
engines, through the one decision pipeline. Only trace ids change, by a fixed mapping (and so
the code a reduced approval cites for its limit: the rule's default code, the row's)."""

from __future__ import annotations

import re
from pathlib import Path

import msgspec
import pytest

from decision_service.pipeline import decide, versions
from decision_service.rules.compiled import CompiledEngine
from decision_service.rules.durable import DurableEngine
from decision_service.rules.language import load_ruleset
from decision_service.scoring import Scorer
from decision_service.scoring.application import application_type

from ._data import MODEL_DIR, POLICY, ROOT, SCHEMA

OLD = Path(__file__).parent / "fixtures" / "risk_appetite_2026.11.0_rules.yaml"
APPLICATIONS = ROOT / "benchmarks" / "data" / "applications.jsonl"


def new_id(old_id: str) -> str:
    """Rule ids of 2026.11.0 → table rows of 2026.11.1 (other rules keep their ids)."""
    if m := re.fullmatch(r"BAND-([A-E])", old_id):
        return f"RISK-BAND/{m[1]}"
    if m := re.fullmatch(r"LIMIT-BAND-([A-D])", old_id):
        return f"BAND-LIMIT/{m[1]}"
    return old_id


def new_code(old_code: str) -> str:
    """A limit rule's default code → its table row's (the code a reduced approval cites)."""
    if m := re.fullmatch(r"RUL-LIMIT-BAND-([A-D])", old_code):
        return f"TBL-BAND-LIMIT-{m[1]}"
    return old_code


def view(d, rename=lambda i: i, recode=lambda c: c) -> tuple:
    trace = [(rename(f.id), f.priority, f.values, f.then) for f in d.trace.rules_fired]
    reasons = [(recode(r.code), r.source, r.text, r.contribution) for r in d.reasons]
    return (d.outcome, d.approved_amount, d.pd, d.risk_band, reasons, trace)


def _then_without_text(view_: tuple) -> tuple:
    # `when` differs by construction (a cell vs a condition); `then` differs only in layout
    *head, trace = view_
    return (*head, [(i, p, v) for i, p, v, _t in trace])


@pytest.fixture(scope="module")
def scorer() -> Scorer:
    return Scorer.load(MODEL_DIR)


@pytest.mark.parametrize("engine_cls", [CompiledEngine, DurableEngine])
def test_tables_decide_exactly_like_the_rules_they_replaced(scorer, engine_cls) -> None:
    old_rs, new_rs = load_ruleset(OLD, SCHEMA), load_ruleset(POLICY, SCHEMA)
    assert (old_rs.version, new_rs.version) == ("2026.11.0", "2026.11.1")
    assert [t.id for t in new_rs.tables] == ["RISK-BAND", "BAND-LIMIT"]
    assert not any(r.id.startswith(("BAND-A", "LIMIT-")) for r in new_rs.rules)
    old, new = engine_cls(old_rs), engine_cls(new_rs)
    app_type = application_type(scorer.card)
    lines = APPLICATIONS.read_text().splitlines()
    assert len(lines) == 1782
    bands: dict[str, int] = {}
    outcomes: dict[str, int] = {}
    fired_rows: set[str] = set()
    for line in lines:
        app = msgspec.json.decode(line, type=app_type)
        kw = {"explain": True, "decision_id": "d", "decided_at": "t"}
        a = decide(app, scorer, old, versions(scorer, old, old_rs.sha256), **kw)
        b = decide(app, scorer, new, versions(scorer, new, new_rs.sha256), **kw)
        va, vb = view(a, new_id, new_code), view(b)
        assert _then_without_text(va) == _then_without_text(vb), app.application_id
        # the outputs each replaced rule produced are the row's outputs
        for (_i, _p, _v, ta), (_j, _q, _w, tb) in zip(va[-1], vb[-1], strict=True):
            assert ta.get("cap") == tb.get("cap") and ta.get("set") == tb.get("set")
        bands[b.risk_band] = bands.get(b.risk_band, 0) + 1
        outcomes[b.outcome] = outcomes.get(b.outcome, 0) + 1
        fired_rows.update(f.id for f in b.trace.rules_fired if "/" in f.id)
    # the data exercise every band, every limit row and every outcome
    assert set(bands) == set("ABCDE")
    assert fired_rows == {r.id for r in new_rs.rules if "/" in r.id}
    assert set(outcomes) == {"approve", "refer", "decline"}
    for eng in (old, new):
        eng.close()
