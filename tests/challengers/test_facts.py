"""A challenger that sees the champion's facts (same schema, same pd) evaluates the facts the
champion's rules saw, not a second normalisation of them, and records the same row it would
have computed from scratch (as replay does); any other challenger normalises its own."""

from __future__ import annotations

from pathlib import Path

import msgspec

from decision_service.challengers.shadow import challenge
from decision_service.deciding import Ask
from decision_service.pipeline import RuleFacts, evaluate_rules
from decision_service.scoring import application_type
from decision_service.service import bootstrap
from decision_service.settings import load_settings
from tests.conftest import ROOT

from ._files import challenger, models_dir, rules_dir


def _service(tmp: Path):
    return bootstrap(
        load_settings(
            environ={},
            models_dir=models_dir(tmp),
            rules_dir=rules_dir(tmp, challenger=challenger()),
            database_url=f"sqlite:///{tmp / 'audit.db'}",
            rules_watch=False,
            log_decisions=False,
            rules_engine="compiled",
            audit_key_file=tmp / "audit.key",
        )
    )


def test_the_champions_facts_are_reused_and_never_written(tmp_path):
    svc = _service(tmp_path)
    try:
        snap = svc.rules.challengers()[0]
        decode = msgspec.json.Decoder(application_type(svc.scorer.card)).decode
        lines = (ROOT / "benchmarks/data/applications.jsonl").read_bytes().splitlines()[:60]
        for line in lines:
            one = Ask(decode(line), line)
            decision = svc.deciding._decide(one)
            seen = one.facts
            assert seen is not None and seen.facts is not None
            assert seen.pd == decision.pd and seen.schema is snap.engine.ruleset.schema
            kept = dict(seen.facts)
            rows = svc.deciding._challenge(one, decision)
            assert seen.facts == kept  # never written to (run_stages)
            assert rows == [challenge(snap, one.app, decision, None)]  # = from scratch
            assert one.facts is None  # released once the challengers ran
            # this challenger differs only in outcome rules: it was evaluated from the
            # champion's evaluation (rules/delta.py), exactly as in full
            assert seen.kept is not None and seen.kept.envs[0] is seen.facts
            after = snap.engine.evaluate_after(seen.kept)
            assert after == snap.engine.evaluate(seen.facts, trace=False, normalised=True)
            # without it, what the challenger evaluates are the kept facts themselves: change
            # them, and the row changes (a decline for adverse records at a high pd)
            seen.facts, seen.kept = {**kept, "records": True, "pd": 0.9}, None
            one.facts = seen
            again = svc.deciding._challenge(one, decision)
            assert again[0]["outcome"] == "decline" and "KO-RECORDS-PD" in again[0]["fired_json"]
    finally:
        svc.rules.close()


def test_facts_kept_for_another_pd_or_schema_are_not_used(tmp_path):
    svc = _service(tmp_path)
    try:
        engine = svc.rules.challengers()[0].engine
        decode = msgspec.json.Decoder(application_type(svc.scorer.card)).decode
        line = (ROOT / "benchmarks/data/applications.jsonl").read_bytes().splitlines()[0]
        app = decode(line)
        fresh = evaluate_rules(app, 0.5, engine, trace=False)
        bogus = {"records": True, "pd": 0.9}  # what reuse would wrongly evaluate
        for pd, schema in ((0.4, engine.ruleset.schema), (0.5, object())):
            seen = RuleFacts()
            seen.facts, seen.pd, seen.schema = bogus, pd, schema
            got = evaluate_rules(app, 0.5, engine, trace=False, seen=seen)
            assert (got.outcome, got.fired_ids, got.derived) == (
                fresh.outcome,
                fresh.fired_ids,
                fresh.derived,
            )
            assert seen.pd == 0.5 and seen.schema is engine.ruleset.schema  # kept anew
    finally:
        svc.rules.close()
