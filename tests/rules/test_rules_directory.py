"""The rules directory: one champion decides; other files are scheduled versions of it; a file
of another ruleset is refused while the old snapshots keep serving (a `role: challenger` file
sits beside the champion); the version in force changes at its effective_from without a reload."""

from __future__ import annotations

import datetime as dt
import shutil
import threading
import time

import pytest

from decision_service.rules.registry import RuleRegistry
from decision_service.rules.snapshot import RulesetInvalid

from ._data import POLICY, SCHEMA


def ts(text: str) -> float:
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def version(text: str, v: str, effective: str | None, to: str | None = None) -> str:
    out = text.replace("version: 2026.11.1", f"version: {v}")
    eff = f"effective_from: {effective}" if effective else ""
    if to:
        eff += f"\neffective_to: {to}"
    return out.replace("effective_from: 2026-11-01", eff)


class Clock:
    def __init__(self, at: str) -> None:
        self.now = ts(at)

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def rules_dir(tmp_path):
    shutil.copy(POLICY, tmp_path / "risk_appetite.yaml")
    return tmp_path


BASE = POLICY.read_text()


def test_a_second_unrelated_ruleset_is_refused_and_the_champion_keeps_serving(rules_dir):
    reg = RuleRegistry(rules_dir, SCHEMA)
    before = reg.active()
    (rules_dir / "other.yaml").write_text(BASE.replace("ruleset: risk-appetite", "ruleset: other"))
    result = reg.reload()
    assert not result.ok
    text = "\n".join(result.errors)
    assert "one champion ruleset decides, found 2" in text
    assert f"{rules_dir / 'other.yaml'}:4:10: ruleset 'other' is not the champion" in text
    assert "'other'" in text and "'risk-appetite'" in text and "role: challenger" in text
    assert reg.active() is before
    assert reg.active().evaluate({"age": 40, "pd": 0.05}).outcome in {"approve", "refer"}
    # and at start-up it is a clear refusal, not a server that answers 500
    with pytest.raises(RulesetInvalid, match="one champion ruleset decides"):
        RuleRegistry(rules_dir, SCHEMA)
    (rules_dir / "other.yaml").unlink()
    assert reg.reload().ok and reg.active() is before


def test_a_challenger_sits_beside_the_champion_and_never_serves(rules_dir):
    reg = RuleRegistry(rules_dir, SCHEMA)
    before = reg.active()
    (rules_dir / "challenger.yaml").write_text(
        BASE.replace("ruleset: risk-appetite", "ruleset: risk-appetite-c\nrole: challenger")
    )
    result = reg.reload()
    assert result.ok, result.errors
    assert reg.active() is before
    assert [c.name for c in reg.challengers()] == ["risk-appetite-c"]


def test_a_bad_challenger_is_refused_without_touching_the_champion(rules_dir):
    reg = RuleRegistry(rules_dir, SCHEMA)
    before = reg.active()
    # its own file test fails: refused like any ruleset
    (rules_dir / "challenger.yaml").write_text(
        BASE.replace("ruleset: risk-appetite", "ruleset: c\nrole: challenger").replace(
            "when: age < 18", "when: age < 16"
        )
    )
    result = reg.reload()
    assert not result.ok and any("minors are declined" in e for e in result.errors), result.errors
    assert reg.active() is before and reg.challengers() == ()
    # the champion's name is taken; two files may not share a challenger name
    (rules_dir / "challenger.yaml").write_text(
        BASE.replace("ruleset: risk-appetite", "ruleset: risk-appetite\nrole: challenger")
    )
    result = reg.reload()
    assert not result.ok and any("has the champion's name" in e for e in result.errors)
    for f in ("c1", "c2"):
        (rules_dir / f"{f}.yaml").write_text(
            BASE.replace("ruleset: risk-appetite", "ruleset: same\nrole: challenger")
        )
    (rules_dir / "challenger.yaml").unlink()
    result = reg.reload()
    assert not result.ok and any("two challengers named 'same'" in e for e in result.errors)
    (rules_dir / "c2.yaml").unlink()  # too long for its record: refused at load, never at commit
    (rules_dir / "c1.yaml").write_text(
        BASE.replace("ruleset: risk-appetite", "ruleset: same\nrole: challenger").replace(
            "version: 2026.11.1", "version: " + "v" * 65
        )
    )
    result = reg.reload()
    assert not result.ok and any("at most 64" in e for e in result.errors), result.errors
    assert reg.active() is before and reg.challengers() == ()


def test_a_scheduled_version_takes_over_at_its_instant_without_a_reload(rules_dir):
    clock = Clock("2026-11-30T23:59:59Z")
    (rules_dir / "risk_appetite_2026_12.yaml").write_text(
        version(BASE, "2026.12.0", "2026-12-01T00:00:00Z").replace(
            "debt_to_income > 0.5", "debt_to_income > 0.4"
        )
    )
    reg = RuleRegistry(rules_dir, SCHEMA, clock=clock)
    assert reg.active().version == "2026.11.1"
    states = {v["version"]: v["status"] for v in reg.versions_status()}
    assert states == {"2026.11.1": "active", "2026.12.0": "scheduled"}
    clock.now = ts("2026-12-01T00:00:00Z") - 0.001
    assert reg.active().version == "2026.11.1"
    clock.now = ts("2026-12-01T00:00:00Z")
    new = reg.active()
    assert new.version == "2026.12.0"
    assert reg.active() is new  # the same snapshot, no rebuild
    states = {v["version"]: v["status"] for v in reg.versions_status()}
    assert states == {"2026.11.1": "past", "2026.12.0": "active"}
    # both versions' texts are kept for replay from the moment they were loaded
    assert all(reg.text_for(v["sha256"]) for v in reg.versions_status())
    # a clock that steps back (NTP) finds the earlier version again
    clock.now = ts("2026-11-15T00:00:00Z")
    assert reg.active().version == "2026.11.1"


def test_two_versions_with_the_same_effective_from_are_refused(rules_dir):
    reg = RuleRegistry(rules_dir, SCHEMA, clock=Clock("2026-11-20T00:00:00Z"))
    before = reg.active()
    (rules_dir / "copy.yaml").write_text(version(BASE, "2026.11.5", "2026-11-01"))
    result = reg.reload()
    assert not result.ok and reg.active() is before
    text = "\n".join(result.errors)
    assert "have the same effective_from (2026-11-01)" in text
    assert "copy.yaml:8:17:" in text or "risk_appetite.yaml:8:17:" in text, text


@pytest.mark.parametrize(
    ("files", "message"),
    [
        # every version starts in the future
        ({"risk_appetite.yaml": ("2027.1.0", "2027-01-01", None)}, "is in force now"),
        # the only version ended yesterday
        (
            {"risk_appetite.yaml": ("2026.11.1", "2026-11-01", "2026-11-19")},
            "is in force now",
        ),
        # a gap ahead: the current version ends before its successor starts
        (
            {
                "risk_appetite.yaml": ("2026.11.1", "2026-11-01", "2026-12-01"),
                "next.yaml": ("2027.1.0", "2027-01-01", None),
            },
            "would be in force from 2026-12-01T00:00:00Z to 2027-01-01T00:00:00Z",
        ),
        # a version expiring with no successor
        (
            {"risk_appetite.yaml": ("2026.11.1", "2026-11-01", "2026-12-31")},
            "would be in force from 2026-12-31T00:00:00Z",
        ),
    ],
)
def test_no_version_in_force_now_or_ahead_is_refused(rules_dir, files, message):
    clock = Clock("2026-11-20T00:00:00Z")
    reg = RuleRegistry(rules_dir, SCHEMA, clock=clock)
    before = reg.active()
    for name, (v, frm, to) in files.items():
        (rules_dir / name).write_text(version(BASE, v, frm, to))
    result = reg.reload()
    assert not result.ok, result
    assert message in "\n".join(result.errors), result.errors
    assert reg.active() is before


def test_a_version_that_expires_into_its_successor_is_fine(rules_dir):
    clock = Clock("2026-11-20T00:00:00Z")
    (rules_dir / "risk_appetite.yaml").write_text(
        version(BASE, "2026.11.1", "2026-11-01", "2026-12-01T00:00Z")
    )
    (rules_dir / "next.yaml").write_text(version(BASE, "2026.12.0", "2026-12-01T00:00Z"))
    reg = RuleRegistry(rules_dir, SCHEMA, clock=clock)
    assert reg.active().version == "2026.11.1"
    clock.now = ts("2026-12-01T00:00:00Z")
    assert reg.active().version == "2026.12.0"


def test_the_watcher_survives_every_error_and_counts_it(rules_dir, monkeypatch):
    reg = RuleRegistry(rules_dir, SCHEMA)
    results = []
    done = threading.Event()

    def on_result(result):
        results.append(result)
        done.set()

    reg.start_watching(on_result=on_result)
    try:
        time.sleep(0.3)
        # 1. a second ruleset: refused, counted, the thread lives on
        (rules_dir / "other.yaml").write_text(BASE.replace("ruleset: risk-appetite", "ruleset: x"))
        assert done.wait(20)
        assert not results[-1].ok and reg.watch_errors >= 1
        assert reg._watch_thread.is_alive()
        # 2. a reload that raises (a bug of ours): logged, counted, the thread lives on
        done.clear()
        errors_before = reg.watch_errors
        real = reg.reload

        def boom():
            raise RuntimeError("bug")

        monkeypatch.setattr(reg, "reload", boom)
        (rules_dir / "other.yaml").write_text("junk: [")
        deadline = time.monotonic() + 20
        while reg.watch_errors == errors_before and time.monotonic() < deadline:
            time.sleep(0.05)
        assert reg.watch_errors > errors_before and reg._watch_thread.is_alive()
        monkeypatch.setattr(reg, "reload", real)
        # 3. the analyst fixes the directory: the next change reloads for real
        done.clear()
        (rules_dir / "other.yaml").unlink()
        path = rules_dir / "risk_appetite.yaml"
        path.write_text(path.read_text().replace("version: 2026.11.1", "version: 2026.11.7"))
        deadline = time.monotonic() + 20
        while reg.active().version != "2026.11.7" and time.monotonic() < deadline:
            time.sleep(0.05)
        assert reg.active().version == "2026.11.7"
    finally:
        reg.close()


def test_ready_means_a_version_is_in_force_and_can_decide(rules_dir):
    clock = Clock("2026-11-20T00:00:00Z")
    reg = RuleRegistry(rules_dir, SCHEMA, clock=clock)
    assert reg.ready()
    clock.now = ts("2026-10-01T00:00:00Z")  # the clock stepped back before every version
    assert not reg.ready()
    clock.now = ts("2026-11-20T00:00:00Z")
    assert reg.ready()
    reg.active().engine.close()  # an engine that can no longer decide
    assert not reg.ready()
    reg.close()
    assert not reg.ready()


def test_too_many_rule_files_are_refused_before_any_is_built(rules_dir):
    from decision_service.rules.registry import MAX_RULE_FILES

    reg = RuleRegistry(rules_dir, SCHEMA)
    before = reg.active()
    for i in range(MAX_RULE_FILES):
        (rules_dir / f"v{i:03}.yaml").write_text("not even a ruleset")
    result = reg.reload()
    assert not result.ok and reg.active() is before
    assert result.errors == [
        f"{rules_dir}: {MAX_RULE_FILES + 1} rule files; the limit is {MAX_RULE_FILES} "
        "(remove versions that are past)"
    ]
