"""`decision-service rules check`: what an analyst runs before shipping a rule change."""

from __future__ import annotations

from pathlib import Path

import pytest

from decision_service.cli import main
from tests.conftest import ROOT

POLICY = ROOT / "rules" / "risk_appetite.yaml"


def test_the_shipped_policy_passes_with_full_coverage(capsys) -> None:
    assert main(["rules", "check", str(POLICY)]) == 0
    out = capsys.readouterr().out
    assert "coverage: 28/28 rules fired by a test" in out
    assert "36 of 36 test runs passed" in out and out.rstrip().endswith("OK")


def test_the_default_path_is_the_rules_directory(capsys, monkeypatch) -> None:
    monkeypatch.chdir(ROOT)
    assert main(["rules", "check"]) == 0


@pytest.mark.parametrize(
    ("old", "new", "expect"),
    [
        ("when: amount > price", "when: amount > prize", ":28:20: KO-AMOUNT-PRICE: unknown field"),
        ("when: age < 18", 'when: age < "18"', "KO-AGE-MIN"),
        ("priority: 1000", "priority: 70000", "KO-AGE-MIN"),
    ],
)
def test_a_broken_file_names_file_line_column_and_rule(
    tmp_path: Path, capsys, old, new, expect
) -> None:
    bad = tmp_path / "risk_appetite.yaml"
    bad.write_text(POLICY.read_text().replace(old, new, 1))
    assert main(["rules", "check", str(bad)]) == 1
    out = capsys.readouterr().out
    assert str(bad) in out and expect in out and out.rstrip().endswith("FAILED")


def test_a_failing_file_test_and_an_untested_rule_fail_the_check(tmp_path: Path, capsys):
    text = POLICY.read_text().replace(
        "    expect: {outcome: decline, not_fired: [KO-AGE-MATURITY], derived: {risk_band: C}}",
        "    expect: {outcome: approve, not_fired: [KO-AGE-MATURITY], derived: {risk_band: C}}",
    ) + ("\n  - name: placeholder\n    given: {age: 40, pd: 0.01}\n    expect: {outcome: refer}\n")
    text = text.replace(
        "rules:\n",
        "rules:\n  - id: NEVER-FIRES\n    priority: 10\n    when: age > 99 and age < 20\n"
        "    then: {outcome: refer, reason: impossible}\n",
        1,
    )
    bad = tmp_path / "p.yaml"
    bad.write_text(text)
    assert main(["rules", "check", str(bad)]) == 1
    out = capsys.readouterr().out
    assert "minors are declined" in out
    assert "NEVER-FIRES: never fired by any test" in out
