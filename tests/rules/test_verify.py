"""Static verification finds every planted problem, with a witness the real engines reproduce;
the shipped policy is clean; errors fail `rules check` and refuse a reload."""

from __future__ import annotations

import itertools
import shutil
from pathlib import Path

import pytest

from decision_service.cli import main
from decision_service.rules.compiled import CompiledEngine
from decision_service.rules.durable import DurableEngine
from decision_service.rules.language import load_ruleset
from decision_service.rules.registry import RuleRegistry
from decision_service.rules.ruleset import Ruleset
from decision_service.rules.snapshot import RulesetInvalid
from decision_service.rules.verify import MISSING, Finding, Space, terms_of, verify

from ._data import POLICY, SCHEMA

PLANTED = Path(__file__).parent / "planted"
FIXTURE_OLD = Path(__file__).parent / "fixtures" / "risk_appetite_2026.11.0_rules.yaml"

EXPECTED = {
    "overlap.yaml": {
        ("error", "overlap", "BANDS/C", "{pd: 0.15}"),
        ("error", "overlap", "HOUSING/row-2", '{home: "rent", records: false}'),
    },
    "gap.yaml": {
        ("error", "gap", "BANDS", "{pd: 0.08}"),
        ("error", "gap", "INCOME", "{income: missing}"),
        ("error", "gap", "LIMIT", '{band: "C"}'),
    },
    "dead.yaml": {
        ("error", "never", "NEVER", "none"),
        ("error", "never", "NEVER-CATEGORY", "none"),
        ("error", "preempted", "YOUTH/SHADOWED", None),
        ("error", "preempted", "RISK/OUTRANKED", None),
        ("warning", "always", "ALWAYS", None),
        ("warning", "undecided", "UNDECIDED", "none"),
        ("warning", "never", "REQUIRED-MISSING", "{amount: missing}"),
    },
}


def _load(name: str) -> Ruleset:
    return load_ruleset(PLANTED / name, SCHEMA)


@pytest.fixture(scope="module")
def engines():
    built: dict[str, tuple[Ruleset, list]] = {}
    for name in EXPECTED:
        rs = _load(name)
        built[name] = (rs, [CompiledEngine(rs), DurableEngine(rs)])
    yield built
    for _rs, engs in built.values():
        for e in engs:
            e.close()


def _matched(engine, rs: Ruleset, stage: int, facts: dict) -> set[str]:
    """What an engine's matcher fires for the stage, on facts as that stage sees them."""
    env = {**rs.schema.normalise(facts), **{k: v for k, v in facts.items() if k in rs.derived}}
    return {r.id for r in engine._matchers[rs.stages.index(stage)](env)}


def _grid_points(rs: Ruleset, rule) -> list[dict]:
    """Every point of the exact grid the checker reasons over, for one rule's fields."""
    space = Space(rs, rule.stage)
    atoms: dict = {}
    terms_of(rule.when.node, atoms)
    fields = sorted({f for a in atoms.values() for f in a.fields})
    grids = [space.grid(f, [a for a in atoms.values() if f in a.fields]) for f in fields]
    return [
        {f: v for f, v in zip(fields, combo, strict=True) if v is not MISSING}
        for combo in itertools.product(*grids)
    ]


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_every_planted_problem_is_found_with_position_and_witness(name) -> None:
    findings = verify(_load(name))
    got = {(f.severity, f.kind, f.id) for f in findings}
    assert got == {e[:3] for e in EXPECTED[name]}
    for f in findings:
        want = next(e[3] for e in EXPECTED[name] if e[:3] == (f.severity, f.kind, f.id))
        text = str(f)
        assert text.startswith(f"{PLANTED / name}:{f.line}:{f.column}: {f.id}: {f.severity}: ")
        assert "; witness: " in text
        if want is not None:
            assert text.endswith(f"; witness: {want}"), text
    # the file positions are those of the rule or row
    src = (PLANTED / name).read_text().splitlines()
    for f in findings:
        assert f.id.split("/")[-1] in src[f.line - 1] or f.kind == "gap" or "/row-" in f.id


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_every_witness_reproduces_on_both_engines(name, engines) -> None:
    rs, engs = engines[name]
    by_id = {r.id: r for r in rs.rules}
    tables = {t.id: t for t in rs.tables}
    for f in verify(rs):
        facts = f.facts()
        for eng in engs:
            if f.kind == "overlap":
                assert set(f.rows) <= _matched(eng, rs, f.stage, facts), (eng.name, f)
                # the whole evaluation refers it with the dedicated code, never picking a row
                if all(k in rs.schema.fields for k in facts):
                    ev = eng.evaluate(facts)
                    assert ev.outcome in {"refer", "decline"}
                    assert "TBL-CONFLICT" in [r.code for r in ev.reasons] or ev.outcome == "decline"
                    table = f.rows[0].split("/")[0]
                    assert table in [x.id for x in ev.fired]
            elif f.kind == "gap":
                rows = {r.id for r in tables[f.id].rows}
                assert not rows & _matched(eng, rs, f.stage, facts), (eng.name, f)
            elif f.kind == "preempted":
                row, winner = f.rows
                hit = _matched(eng, rs, f.stage, facts)
                assert {row, winner} <= hit, (eng.name, f)
                fired = [x.id for x in eng.evaluate(facts).fired]
                assert winner in fired and row not in fired
                # and on every grid point where the row matches, it never fires
                for p in _grid_points(rs, by_id[row]):
                    assert row not in [x.id for x in eng.evaluate(p).fired]
            elif f.kind == "always":
                assert f.id in _matched(eng, rs, f.stage, facts)
                for p in _grid_points(rs, by_id[f.id]):
                    assert f.id in _matched(eng, rs, f.stage, p), (eng.name, p)
            elif f.kind == "never" and f.severity == "warning":
                # fires only on facts production never sends (a required field missing)
                assert f.id in _matched(eng, rs, f.stage, facts)
                assert rs.schema.optional.isdisjoint(k for k, v in f.witness.items())
            elif f.kind == "never":
                assert f.witness is None
                points = _grid_points(rs, by_id[f.id])
                assert len(points) > 3
                for p in points:
                    assert f.id not in _matched(eng, rs, f.stage, p), (eng.name, p)


def test_cannot_decide_is_a_warning_not_a_guess() -> None:
    findings = {f.id: f for f in verify(_load("dead.yaml"))}
    assert findings["UNDECIDED"].severity == "warning"
    assert "cannot decide" in findings["UNDECIDED"].message
    assert "FINE" not in findings  # `age + term / 12 > 75`: both ways shown by real points


@pytest.mark.parametrize("path", [POLICY, FIXTURE_OLD])
def test_the_shipped_policy_is_clean(path) -> None:
    assert verify(load_ruleset(path, SCHEMA)) == []


def test_integers_have_no_gap_between_adjacent_bounds() -> None:
    # AGE: `< 18`, `[18..30)`, `> 29.5` covers every integer age; a float field would not be
    assert not [f for f in verify(_load("gap.yaml")) if f.id == "AGE"]


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_rules_check_fails_and_prints_witnesses(name, capsys) -> None:
    assert main(["rules", "check", str(PLANTED / name)]) == 1
    out = capsys.readouterr().out
    for f in verify(_load(name)):
        assert str(f) in out
    assert out.rstrip().endswith("FAILED")


def test_a_reload_with_a_static_error_is_refused_and_the_old_version_serves(tmp_path) -> None:
    shutil.copy(POLICY, tmp_path / "risk_appetite.yaml")
    reg = RuleRegistry(tmp_path, SCHEMA)
    old = reg.active()
    path = tmp_path / "risk_appetite.yaml"
    path.write_text(
        path.read_text()
        .replace('"[0.08..0.15)"', '"[0.08..0.15]"')
        .replace("version: 2026.11.1", "version: 2026.11.2")
    )
    result = reg.reload()
    assert not result.ok
    assert any(
        "RISK-BAND/C: error: overlaps RISK-BAND/B" in e and "witness: {pd: 0.15}" in e
        for e in result.errors
    ), result.errors
    assert reg.active() is old
    with pytest.raises(RulesetInvalid):
        RuleRegistry(tmp_path, SCHEMA)
    reg.close()


def test_findings_are_plain_values() -> None:
    f = Finding("error", "gap", "f.yaml", 3, 5, "T", "no row", 1, {"pd": 0.5, "income": MISSING})
    assert str(f) == "f.yaml:3:5: T: error: no row; witness: {pd: 0.5, income: missing}"
    assert f.facts() == {"pd": 0.5}
