# ruff: noqa: F811  (the audit fixtures are imported, then named as test arguments)
"""Challengers on the real deciding path, real store (SQLite and PostgreSQL), shipped model and
policy: recorded with every sampled decision in its commit, never changing one; a challenger
that raises changes nothing; replay re-checks; the report matches a direct computation."""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import msgspec
import pytest
import sqlalchemy as sa

from decision_service.audit import create_tables, make_engine
from decision_service.audit.tables import challenger_result_table, decision_table
from decision_service.challengers import report as challenger_report
from decision_service.challengers import sampled
from decision_service.deciding import Ask
from decision_service.replay import Replayer
from decision_service.scoring import application_type
from decision_service.service import Service, bootstrap
from decision_service.settings import load_settings
from tests.audit.conftest import (  # noqa: F401
    Database,
    database,
    postgres_available,
)

from ._files import challenger, models_dir, rules_dir

N = 120  # real applications decided per test


@asynccontextmanager
async def running(url: str, rules: Path, models: Path, tmp: Path) -> AsyncIterator[Service]:
    service = bootstrap(
        load_settings(
            environ={},
            models_dir=models,
            rules_dir=rules,
            database_url=url,
            rules_watch=False,
            log_decisions=False,
            rules_engine="compiled",
            audit_key_file=tmp / "audit.key",
        )
    )
    await service.start()
    try:
        yield service
    finally:
        await service.stop()


async def decide_all(service: Service, lines: list[bytes]) -> list:
    decode = msgspec.json.Decoder(application_type(service.scorer.card)).decode
    out = []
    for line in lines:
        out.append((await service.deciding.decide_and_record(Ask(decode(line), line))).decision)
    return out


def rows(url: str) -> list[dict]:
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            return [dict(r) for r in conn.execute(sa.select(challenger_result_table)).mappings()]
    finally:
        engine.dispose()


def without_ids(decision) -> dict:
    d = msgspec.to_builtins(decision)
    for key in ("decision_id", "decided_at", "trace_id"):
        d.pop(key)
    d["trace"].pop("timings_us")
    return d


async def test_every_decision_gets_its_challenger_row_in_its_commit(
    database: Database, tmp_path, application_lines
):
    rules = rules_dir(tmp_path, challenger=challenger())
    lines = application_lines[:N]
    async with running(database.url, rules, models_dir(tmp_path), tmp_path) as service:
        assert [c.name for c in service.rules.challengers()] == ["tighter-pd"]
        decisions = await decide_all(service, lines)
        # batch: one commit for the request, challengers included
        many = await service.deciding.decide_many_and_record(
            [
                Ask(msgspec.json.decode(x, type=application_type(service.scorer.card)), x)
                for x in lines[:5]
            ]
        )
    stored = {r["decision_id"]: r for r in rows(database.url)}
    assert set(stored) == {d.decision_id for d in [*decisions, *many.decisions]}
    for d in decisions:
        r = stored[d.decision_id]
        assert r["error"] is None and r["pd"] == d.pd  # the champion's facts: the same pd
        assert r["model_version"] == "1.0.0" and r["version"] == "2026.11.1"
    # a real difference: adverse records at pd in [0.25, 0.30) decline instead of refer
    flips = [d for d in decisions if stored[d.decision_id]["outcome"] != d.outcome]
    for d in flips:
        assert (d.outcome, stored[d.decision_id]["outcome"]) == ("refer", "decline")
        assert 0.25 < d.pd <= 0.30
        assert "KO-RECORDS-PD" in msgspec.json.decode(stored[d.decision_id]["fired_json"])


async def test_sample_share_is_respected_and_deterministic(
    database: Database, tmp_path, application_lines
):
    rules = rules_dir(tmp_path, quarter=challenger("quarter", sample=0.25))
    async with running(database.url, rules, models_dir(tmp_path), tmp_path) as service:
        decisions = await decide_all(service, application_lines[:N])
    recorded = {r["decision_id"] for r in rows(database.url)}
    expected = {d.decision_id for d in decisions if sampled(d.decision_id, "quarter", 0.25)}
    assert recorded == expected
    assert 0 < len(recorded) < N  # P(0 or all of 120 at 25%) < 1e-14


async def test_a_challenger_that_raises_changes_no_decision(
    database: Database, tmp_path, application_lines
):
    """Its model version's file is corrupt: loading it raises, every time, for real. The
    decisions are the same as with no challenger at all, byte for byte but ids and timings."""
    lines = application_lines[:N]
    plain = tmp_path / "plain"
    plain.mkdir()
    async with running(database.url, rules_dir(plain), models_dir(plain), plain) as service:
        alone = await decide_all(service, lines)
    broken = tmp_path / "broken"
    broken.mkdir()
    rules = rules_dir(broken, bad=challenger("bad-model", model="9.9.9"))
    async with running(database.url, rules, models_dir(broken, corrupt="9.9.9"), broken) as svc:
        shadowed = await decide_all(svc, lines)
        assert svc.deciding.shadow.errors == N
    assert [without_ids(d) for d in shadowed] == [without_ids(d) for d in alone]
    bad = [r for r in rows(database.url) if r["challenger"] == "bad-model"]
    assert len(bad) == N
    assert all(r["outcome"] is None and "9.9.9 cannot be loaded" in r["error"] for r in bad)


async def test_replay_rechecks_the_challenger_and_sees_tampering(
    database: Database, tmp_path, application_lines
):
    rules = rules_dir(tmp_path, challenger=challenger("with-model", model="1.1.0"))
    async with running(database.url, rules, models_dir(tmp_path), tmp_path) as service:
        decisions = await decide_all(service, application_lines[:20])
        replayer = Replayer(tmp_path / "models", service.store)
        try:
            v110 = service.deciding.shadow.models.get("1.1.0")
            decode = msgspec.json.Decoder(application_type(service.scorer.card)).decode
            by_id = {r["decision_id"]: r for r in rows(database.url)}
            for d, line in zip(decisions, application_lines[:20], strict=True):
                result = replayer.replay(await service.store.get(d.decision_id))
                assert result.identical and result.challengers == 1, result.differences
                # its own model's pd, not the champion's
                assert by_id[d.decision_id]["pd"] == v110.predict(v110.features(decode(line)))
                assert by_id[d.decision_id]["model_version"] == "1.1.0"
            target = decisions[0].decision_id
            engine = make_engine(database.url)
            with engine.begin() as conn:
                conn.execute(
                    sa.update(challenger_result_table)
                    .where(challenger_result_table.c.decision_id == target)
                    .values(outcome="approve" if decisions[0].outcome != "approve" else "decline")
                )
            engine.dispose()
            result = replayer.replay(await service.store.get(target))
        finally:
            replayer.close()
    fields = {d.field for d in result.differences}
    assert not result.identical
    assert {"$challengers.with-model.mac", "$challengers.with-model.outcome"} <= fields


async def test_report_matches_a_direct_computation(database: Database, tmp_path, application_lines):
    rules = rules_dir(tmp_path, challenger=challenger())
    async with running(database.url, rules, models_dir(tmp_path), tmp_path) as service:
        decisions = await decide_all(service, application_lines[:N])
    engine = make_engine(database.url)
    try:
        rep = challenger_report.report(engine, "tighter-pd")
        with engine.connect() as conn:
            fired = Counter(
                r.rule_id
                for r in conn.execute(
                    sa.text(
                        "SELECT r.rule_id FROM decision d "
                        "JOIN fired_set_rule r ON r.set_id = d.fired_set"
                    )
                )
            )
            assert (
                conn.execute(sa.select(sa.func.count()).select_from(decision_table)).scalar() == N
            )
    finally:
        engine.dispose()
    by_id = {r["decision_id"]: r for r in rows(database.url)}
    pairs = Counter((d.outcome, by_id[d.decision_id]["outcome"]) for d in decisions)
    assert rep.decisions == N and rep.errors == 0
    for (a, b), n in pairs.items():
        assert rep.flip_matrix[a][b] == n
    assert rep.agreement == pytest.approx(sum(n for (a, b), n in pairs.items() if a == b) / N)
    approved = [d for d in decisions if d.outcome == "approve"]
    ch_approved = [
        by_id[d.decision_id] for d in decisions if by_id[d.decision_id]["outcome"] == "approve"
    ]
    assert rep.champion.approval_rate == pytest.approx(len(approved) / N)
    assert rep.challenger_side.approval_rate == pytest.approx(len(ch_approved) / N)
    assert rep.champion.mean_pd_approved == pytest.approx(
        sum(d.pd for d in approved) / len(approved)
    )
    assert rep.challenger_side.mean_pd_approved == pytest.approx(
        sum(r["pd"] for r in ch_approved) / len(ch_approved)
    )
    assert rep.champion.approved_volume == pytest.approx(sum(d.approved_amount for d in approved))
    assert rep.challenger_side.approved_volume == pytest.approx(
        sum(r["approved_amount"] for r in ch_approved)
    )
    ch_fired = Counter(
        rid for r in by_id.values() for rid in set(msgspec.json.decode(r["fired_json"]))
    )
    for rule in rep.rules:
        assert rule.before == pytest.approx(fired[rule.rule] / N)
        assert rule.after == pytest.approx(ch_fired[rule.rule] / N)
    html = challenger_report.render_html(rep)
    assert html.count("<svg") >= 2 and "tighter-pd" in html


async def test_challenger_rows_the_database_refuses_cost_no_decision(
    database: Database, tmp_path, application_lines
):
    """The database refuses every challenger row that says decline (a real constraint): those
    decisions are committed all the same, without their challenger row."""
    engine = make_engine(database.url)
    try:
        create_tables(engine)
        with engine.begin() as conn:
            if engine.dialect.name == "sqlite":
                conn.exec_driver_sql(
                    "CREATE TRIGGER no_decline BEFORE INSERT ON challenger_result "
                    "WHEN NEW.outcome = 'decline' BEGIN SELECT RAISE(ABORT, 'refused'); END"
                )
            else:
                conn.exec_driver_sql(
                    "ALTER TABLE challenger_result ADD CONSTRAINT no_decline "
                    "CHECK (outcome IS DISTINCT FROM 'decline')"
                )
    finally:
        engine.dispose()
    rules = rules_dir(tmp_path, challenger=challenger())
    async with running(database.url, rules, models_dir(tmp_path), tmp_path) as service:
        decisions = await decide_all(service, application_lines[:40])
        refused = service.store.stats.challenger_rows_refused
    engine = make_engine(database.url)
    try:
        with engine.connect() as conn:
            stored = {r[0] for r in conn.execute(sa.select(decision_table.c.decision_id))}
    finally:
        engine.dispose()
    assert stored == {d.decision_id for d in decisions}  # every decision committed
    kept = rows(database.url)
    assert all(r["outcome"] != "decline" for r in kept)
    assert refused > 0 and refused + len(kept) == len(decisions)
