"""Reasons through the real app (the shipped model and rules, a real audit store): a decline
cites at most four principal reasons while its trace keeps every fired rule, an approval below
the amount requested cites the rule that capped it, and the notice cites the same reasons."""

from __future__ import annotations

from pathlib import Path

import msgspec
from litestar.testing import TestClient

from decision_service.api.app import create_app
from tests.api.routes import make_settings

# From the held-out applications: declined by a knock-out and the band-E cut-off (two rule
# reasons, four model reasons: six before the cap); approved for less than requested.
DECLINED = {
    "application_id": "APP-CD-00003", "age": 46, "seniority": 10, "home": "owner",
    "marital": "married", "records": True, "job": "freelance", "term": 36, "expenses": 90.0,
    "income": 200.0, "assets": 3000.0, "debt": 0.0, "amount": 2000.0, "price": 2985.0,
}  # fmt: skip
REDUCED = {
    "application_id": "APP-CD-00020", "age": 31, "seniority": 1, "home": "parents",
    "marital": "single", "records": False, "job": "fixed", "term": 60, "expenses": 35.0,
    "income": 137.0, "assets": 0.0, "debt": 0.0, "amount": 1250.0, "price": 1253.0,
}  # fmt: skip


def test_principal_reasons_through_the_app(tmp_path: Path) -> None:
    app = create_app(make_settings(tmp_path))
    key = (tmp_path / "admin.key").read_text().strip()
    with TestClient(app) as client:
        client.headers.update(
            {"authorization": f"Bearer {key}", "content-type": "application/json"}
        )

        def decide(body: dict, query: str = "") -> dict:
            r = client.post(f"/decide{query}", content=msgspec.json.encode(body))
            assert r.status_code == 200, r.text
            return r.json()

        declined = decide(DECLINED)
        assert declined["outcome"] == "decline"
        reasons, fired = declined["reasons"], declined["trace"]["rules_fired"]
        assert len(reasons) == 4
        assert [r["code"] for r in reasons[:2]] == ["KO-05", "PD-01"]  # rules, firing order
        contributions = [r["contribution"] for r in reasons[2:]]
        assert [r["source"] for r in reasons[2:]] == ["model", "model"]
        assert contributions == sorted(contributions, reverse=True)
        assert {"KO-RECORDS-PD", "BAND-E-DECLINE"} <= {f["id"] for f in fired}  # all kept
        assert len(fired) > len([r for r in reasons if r["source"] == "rule"])

        reduced = decide(REDUCED)
        assert reduced["outcome"] == "approve"
        assert reduced["approved_amount"] < REDUCED["amount"]
        cap = reduced["reasons"][0]
        capping = [f for f in reduced["trace"]["rules_fired"] if "cap" in f["then"]]
        tightest = min(capping, key=lambda f: f["then"]["cap"])
        assert tightest["then"]["cap"] == reduced["approved_amount"]
        assert cap["source"] == "rule"
        assert cap["code"] == "TBL-" + tightest["id"].replace("/", "-")  # a table row's code
        explained = decide(REDUCED | {"application_id": "APP-CD-00020-X"}, "?explain=1")
        assert explained["reasons"][0] == cap and len(explained["reasons"]) <= 4

        # the notice states the decision's own reasons, in its order
        for decision in (declined, reduced):
            notice = client.get(f"/decisions/{decision['decision_id']}/notice").json()
            cited = [r["code"] for r in notice["reasons"]]
            assert cited == [r["code"] for r in decision["reasons"] if r["code"] in cited]
        notice = client.get(f"/decisions/{reduced['decision_id']}/notice").json()
        assert notice["reasons"][0]["code"] == cap["code"]

        # an integral float is the integer; a fraction and a newline after the id are refused
        same = decide(REDUCED | {"application_id": "APP-CD-00020-F", "age": 31.0, "term": 60.0})
        assert same["reasons"] == reduced["reasons"]
        assert same["approved_amount"] == reduced["approved_amount"]
        stored = client.get(f"/decisions/{same['decision_id']}").json()
        assert stored["request"]["age"] == 31.0  # recorded as received
        # replay re-decides each (the stored 31.0 included) and finds it identical
        for decision in (declined, reduced, explained, same):
            again = client.post(f"/decisions/{decision['decision_id']}/replay")
            assert again.status_code == 200 and again.json()["identical"] is True, again.text
        for bad, field in (
            ({"age": 31.5}, "$.age"),
            ({"application_id": "A-1\n"}, "$.application_id"),
        ):
            r = client.post("/decide", content=msgspec.json.encode(REDUCED | bad))
            assert r.status_code == 422, r.text
            assert field in {e["field"] for e in r.json()["errors"]}
