"""`rules check --as-of TIME`: which version of the champion would be in force then; the
directory's rules (one champion, distinct effective_from) apply to the files checked together."""

from __future__ import annotations

import shutil

from decision_service.cli import main

from ._data import POLICY


def _versions(tmp_path):
    shutil.copy(POLICY, tmp_path / "risk_appetite.yaml")
    (tmp_path / "risk_appetite_2027.yaml").write_text(
        POLICY.read_text()
        .replace("version: 2026.11.1", "version: 2027.1.0")
        .replace("effective_from: 2026-11-01", "effective_from: 2027-01-01T00:00Z")
    )
    return tmp_path


def test_as_of_names_the_version_in_force(tmp_path, capsys):
    d = _versions(tmp_path)
    assert main(["rules", "check", str(d), "--as-of", "2026-12-01T00:00Z"]) == 0
    out = capsys.readouterr().out
    assert "as of 2026-12-01T00:00:00Z: risk-appetite 2026.11.1" in out
    assert "until 2027-01-01T00:00:00Z" in out and out.rstrip().endswith("OK")
    assert main(["rules", "check", str(d), "--as-of", "2027-01-01"]) == 0
    out = capsys.readouterr().out
    assert "as of 2027-01-01T00:00:00Z: risk-appetite 2027.1.0" in out
    assert "until further notice" in out


def test_as_of_before_any_version_fails(tmp_path, capsys):
    d = _versions(tmp_path)
    assert main(["rules", "check", str(d), "--as-of", "2020-01-01"]) == 1
    assert "no version of 'risk-appetite' is in force" in capsys.readouterr().out


def test_a_directory_with_two_rulesets_fails_the_check(tmp_path, capsys):
    d = _versions(tmp_path)
    (d / "other.yaml").write_text(POLICY.read_text().replace("risk-appetite", "other"))
    assert main(["rules", "check", str(d)]) == 1
    out = capsys.readouterr().out
    assert "one champion ruleset decides, found 2" in out and out.rstrip().endswith("FAILED")


def test_a_bad_as_of_is_a_usage_error(tmp_path, capsys):
    import pytest

    with pytest.raises(SystemExit) as info:
        main(["rules", "check", str(tmp_path), "--as-of", "next tuesday"])
    assert info.value.code == 2
    assert "expected a date (2026-11-24) or an RFC 3339 date-time" in capsys.readouterr().err
