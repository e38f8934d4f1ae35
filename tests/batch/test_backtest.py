"""`decision-service backtest` on a real audit store made by `batch --audit` under two ruleset
versions: its flips are checked against the row pipeline re-deciding every stored request."""

from __future__ import annotations

import json
from pathlib import Path

import msgspec
import pytest

from decision_service.audit import AuditStore, iter_records
from decision_service.cli import main
from decision_service.pipeline import decide, versions
from decision_service.rules.compiled import CompiledEngine
from decision_service.rules.language import load_ruleset_from_text
from decision_service.scoring import application_type
from tests.conftest import APPLICATIONS, ROOT

POLICY = (ROOT / "rules" / "risk_appetite.yaml").read_text()
OLD = POLICY.replace("version: 2026.11.1", "version: 2026.10.0").replace(
    'job == "freelance" and seniority < 2', 'job == "freelance" and seniority < 3'
)
CANDIDATE = (
    POLICY.replace("version: 2026.11.1", "version: 2026.12.0")
    .replace("payment_to_income > 0.8 and", "payment_to_income > 0.79 and")
    .replace(
        "  # ---- Stage 2: appetite by band",
        """  - id: REF-NEW-JOB
    priority: 250
    when: job == "fixed" and seniority < 1
    then: {outcome: refer, reason: "Less than a year with the current employer", code: RF-06}

  # ---- Stage 2: appetite by band""",
    )
)


@pytest.fixture(scope="module")
def store_dir(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("backtest")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DECISION_MODELS_DIR", str(ROOT / "models"))
        mp.setenv("DECISION_RULES_DIR", str(ROOT / "rules"))
        mp.setenv("DATABASE_URL", f"sqlite:///{tmp}/audit.db")
        mp.delenv("DECISION_CONFIG", raising=False)
        lines = APPLICATIONS.read_bytes().splitlines()
        (tmp / "old.jsonl").write_bytes(b"\n".join(lines[:400]) + b"\n")
        (tmp / "new.jsonl").write_bytes(b"\n".join(lines[400:700]) + b"\n")
        (tmp / "apps.jsonl").write_bytes(b"\n".join(lines[700:900]) + b"\n")
        (tmp / "old.yaml").write_text(OLD)
        (tmp / "candidate.yaml").write_text(CANDIDATE)
        old = ["batch", str(tmp / "old.jsonl"), "-o", str(tmp / "o1.parquet"), "--audit"]
        assert main([*old, "--rules", str(tmp / "old.yaml")]) == 0
        assert (
            main(["batch", str(tmp / "new.jsonl"), "-o", str(tmp / "o2.parquet"), "--audit"]) == 0
        )
        yield tmp


def _backtest(store_dir: Path, *args: str, capsys) -> dict:
    capsys.readouterr()
    rc = main(["backtest", "--rules", str(store_dir / "candidate.yaml"), "--format", "json", *args])
    assert rc == 0
    return json.loads(capsys.readouterr().out)


def _truth(scorer, ruleset_text: str, requests: list[str]) -> list[str]:
    """The row pipeline's outcomes with the candidate, one request at a time."""
    from decision_service.service import card_schema

    ruleset = load_ruleset_text(ruleset_text, card_schema(scorer.card))
    engine = CompiledEngine(ruleset)
    refs = versions(scorer, engine, ruleset.sha256)
    decoder = msgspec.json.Decoder(application_type(scorer.card))
    return [
        decide(
            decoder.decode(r), scorer, engine, refs, explain=False, decision_id="x", decided_at="t"
        ).outcome
        for r in requests
    ]


def load_ruleset_text(text: str, schema):
    return load_ruleset_from_text(text, "candidate.yaml", schema)


def test_flips_are_what_the_row_pipeline_says(store_dir, pipeline, capsys, monkeypatch):
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{store_dir}/audit.db")
    monkeypatch.setenv("DECISION_MODELS_DIR", str(ROOT / "models"))
    report = _backtest(store_dir, "--by", "job", capsys=capsys)
    records = list(iter_records(AuditStore.open(f"sqlite:///{store_dir}/audit.db").reader))
    assert report["decisions"] == len(records) == 700
    truth = _truth(pipeline.scorer, CANDIDATE, [r.request_json for r in records])
    expected: dict[str, dict[str, int]] = {}
    for r, after in zip(records, truth, strict=True):
        cell = expected.setdefault(r.outcome, {})
        cell[after] = cell.get(after, 0) + 1
    for before, row in report["flip_matrix"].items():
        assert {k: v for k, v in row.items() if v} == expected.get(before, {})
    flipped = {r.decision_id for r, after in zip(records, truth, strict=True) if r.outcome != after}
    assert {f["decision_id"] for f in report["flips"]} == flipped and flipped
    assert {(v["ruleset_version"], v["decisions"]) for v in report["versions"]} == {
        ("2026.10.0", 400),
        ("2026.11.1", 300),
    }
    assert sum(s["before"]["decisions"] for s in report["segments"]) == 700
    assert sum(s["flips"] for s in report["segments"]) == len(flipped)
    rules = {r["rule"]: r for r in report["rules"]}
    assert rules["REF-NEW-JOB"]["before"] == 0 and rules["REF-NEW-JOB"]["after"] > 0
    approved = [r for r in records if r.outcome == "approve"]
    assert report["before"]["approved_volume"] == pytest.approx(
        sum(r.approved_amount for r in approved)
    )
    assert report["before"]["expected_loss"] == pytest.approx(
        sum(r.approved_amount * r.pd for r in approved)
    )


def test_same_policy_flips_nothing_and_filters_apply(store_dir, capsys, monkeypatch):
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{store_dir}/audit.db")
    monkeypatch.setenv("DECISION_MODELS_DIR", str(ROOT / "models"))
    capsys.readouterr()
    rc = main(
        [
            "backtest",
            "--rules",
            str(ROOT / "rules" / "risk_appetite.yaml"),
            "--format",
            "json",
            "--ruleset-version",
            "2026.11.1",
        ]
    )
    assert rc == 0
    report = json.loads(capsys.readouterr().out)
    assert report["decisions"] == 300 and report["flipped"] == 0
    assert report["before"] == report["after"]


def test_html_report_is_one_self_contained_file(store_dir, capsys, monkeypatch):
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{store_dir}/audit.db")
    monkeypatch.setenv("DECISION_MODELS_DIR", str(ROOT / "models"))
    out = store_dir / "report.html"
    rc = main(
        [
            "backtest",
            "--rules",
            str(store_dir / "candidate.yaml"),
            "--by",
            "risk_band",
            "--format",
            "html",
            "-o",
            str(out),
        ]
    )
    assert rc == 0
    html = out.read_text()
    assert html.count("<svg") >= 3 and "What flips" in html and "REF-NEW-JOB" in html
    assert "<script" not in html and "http://" not in html and "https://" not in html
    assert "<img" not in html and "<link" not in html
    assert _unbalanced(html) == []


def _unbalanced(html: str) -> list[str]:
    """Tags closed out of order or left open (a browser would guess; a committee should not)."""
    from html.parser import HTMLParser

    void = {"meta", "br", "line", "rect"}
    stack: list[str] = []
    bad: list[str] = []

    class Parser(HTMLParser):
        def handle_starttag(self, tag, attrs):
            if tag not in void:
                stack.append(tag)

        def handle_endtag(self, tag):
            if tag in void:
                return
            if stack and stack[-1] == tag:
                stack.pop()
            else:
                bad.append(tag)

    Parser().feed(html)
    return bad + stack


def test_applications_file_against_the_live_champion(store_dir, pipeline, capsys, monkeypatch):
    monkeypatch.setenv("DECISION_MODELS_DIR", str(ROOT / "models"))
    monkeypatch.setenv("DECISION_RULES_DIR", str(ROOT / "rules"))
    path = store_dir / "apps.jsonl"
    report = _backtest(store_dir, "--applications", str(path), capsys=capsys)
    requests = path.read_text().splitlines()
    before = _truth(pipeline.scorer, POLICY, requests)
    after = _truth(pipeline.scorer, CANDIDATE, requests)
    assert report["decisions"] == 200
    assert report["flipped"] == sum(a != b for a, b in zip(before, after, strict=True))
    assert report["before"]["approve"] == before.count("approve")
    assert report["after"]["refer"] == after.count("refer")
