"""Adverse-action notices from real stored decisions (the shipped model and policy, decided
through the pipeline and committed to a real audit store), served by the notice handler."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import msgspec
import pytest
import sqlalchemy as sa
from litestar import Litestar
from litestar.testing import AsyncTestClient

from decision_service.adverse_action import MAX_REASONS, PLAIN, SCORE_RULES, load_lenders
from decision_service.api.notice import ROUTE, notice_handlers
from decision_service.audit import AuditStore
from decision_service.audit.tables import access_log_table
from decision_service.pipeline import decide, versions
from decision_service.rules.snapshot import build_snapshot
from decision_service.scoring import Scorer, application_type
from decision_service.service import card_schema
from tests.conftest import APPLICATIONS, MODEL_DIR, ROOT

LENDERS = ROOT / "notices" / "lenders.yaml"


@pytest.fixture
async def stored(tmp_path: Path) -> AsyncIterator[tuple[AuditStore, dict[str, list[dict]]]]:
    """The first 300 held-out applications decided and recorded; decisions by kind."""
    scorer = Scorer.load(MODEL_DIR)
    policy = ROOT / "rules" / "risk_appetite.yaml"
    snap = build_snapshot(policy.read_text(), policy.name, card_schema(scorer.card))
    refs = versions(scorer, snap.engine, snap.sha256)
    store = AuditStore.open(f"sqlite:///{tmp_path / 'decisions.db'}")
    await store.start()
    store.remember_ruleset(snap.sha256, snap.name, snap.version, snap.text)
    kinds: dict[str, list[dict]] = {}
    decoder = msgspec.json.Decoder(application_type(scorer.card))
    for i, line in enumerate(APPLICATIONS.read_bytes().splitlines()[:300]):
        app = decoder.decode(line)
        decision = decide(
            app, scorer, snap.engine, refs, explain=False,
            decision_id=f"0193a000-0000-7000-8000-{i:012d}", decided_at="2026-11-25T10:00:00Z",
        )  # fmt: skip
        await store.append(line, decision)
        d = msgspec.to_builtins(decision)
        kind = d["outcome"]
        if kind == "approve" and d["approved_amount"] < app.amount:
            kind = "reduced"
        rule_codes = [r["code"] for r in d["reasons"] if r["source"] == "rule"]
        if kind == "decline" and rule_codes == ["PD-01"]:  # the score cut-off alone
            kind = "decline-score"
        kinds.setdefault(kind, []).append(d)
    try:
        yield store, kinds
    finally:
        for eng in snap.engines.values():
            eng.close()
        await store.close()


async def test_notices_cite_at_most_four_plain_reasons_by_importance(stored) -> None:
    store, kinds = stored
    assert {"approve", "reduced", "refer", "decline", "decline-score"} <= set(kinds)
    handlers = notice_handlers(store, load_lenders(LENDERS))
    assert handlers[0].opt["roles"] == ["auditor"]  # and admin, who may call every route
    plain = set(PLAIN.values())
    async with AsyncTestClient(Litestar(route_handlers=handlers)) as client:
        for kind in ("decline", "decline-score", "refer", "reduced"):
            for d in kinds[kind][:5]:
                got = await client.get(f"/decisions/{d['decision_id']}/notice")
                assert got.status_code == 200, got.text
                notice = got.json()
                reasons = notice["reasons"]
                assert 1 <= len(reasons) <= MAX_REASONS
                texts = [r["text"] for r in reasons]
                assert len(set(texts)) == len(texts) and set(texts) <= plain
                assert notice["action"] == kind.split("-")[0]
                # the decision's own principal reasons, in its order (none added)
                cited = [r["code"] for r in reasons]
                own = [r["code"] for r in d["reasons"]]
                assert len(own) <= MAX_REASONS
                assert cited == [c for c in own if c in cited]
                assert "Equal Credit Opportunity Act" in notice["lender"]["rights"]
                if kind == "decline-score":  # the cut-off is replaced by the model's reasons
                    model = [r for r in d["reasons"] if r["source"] == "model"]
                    assert reasons[0]["code"] == model[0]["code"]
                    assert "PD-01" not in {r["code"] for r in reasons}
                if kind == "decline" and d["reasons"][0]["code"] not in SCORE_RULES:
                    assert reasons[0]["code"] == d["reasons"][0]["code"]
                if kind == "reduced":
                    assert notice["offered_amount"] < notice["requested_amount"]
                    assert reasons[0]["code"] == d["reasons"][0]["code"]  # the capping rule
                    assert reasons[0]["code"].startswith("TBL-BAND-LIMIT-")
                    capped = [f for f in d["trace"]["rules_fired"] if "cap" in f["then"]]
                    assert notice["offered_amount"] == min(f["then"]["cap"] for f in capped)
        d = kinds["decline"][0]
        page = await client.get(
            f"/decisions/{d['decision_id']}/notice", headers={"accept": "text/html"}
        )
        assert page.headers["content-type"].startswith("text/html")
        assert "Principal reasons" in page.text and "Example Consumer Finance" in page.text
        assert "<script" not in page.text
        full = kinds["approve"][0]
        refused = await client.get(f"/decisions/{full['decision_id']}/notice")
        assert refused.status_code == 409
        assert (await client.get("/decisions/nope/notice")).status_code == 404
        unknown = await client.get(f"/decisions/{d['decision_id']}/notice?lender=acme")
        assert unknown.status_code == 400 and "unknown lender" in unknown.json()["detail"]
        as_json = await client.get(f"/decisions/{d['decision_id']}/notice?format=json")
        assert json.loads(as_json.text)["decision_id"] == d["decision_id"]
    # every read (found or not) is in access_log, committed before the answer
    with store.engine.connect() as conn:
        t = access_log_table
        reads = conn.execute(sa.select(t.c.route, t.c.filters, t.c.returned)).all()
    assert {r.route for r in reads} == {ROUTE}
    read = {json.loads(r.filters)["decision_id"]: r.returned for r in reads}
    assert read["nope"] == 0 and read[d["decision_id"]] == 1
