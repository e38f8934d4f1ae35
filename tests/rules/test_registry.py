"""Hot reload: tested first, swapped atomically, bad files never replace good ones."""

from __future__ import annotations

import gc
import shutil
import threading
import time

import pytest

from decision_service.rules import durable as durable_mod
from decision_service.rules.language import load_ruleset_from_text
from decision_service.rules.registry import RuleRegistry
from decision_service.rules.snapshot import RulesetInvalid

from ._data import POLICY, SCHEMA

APP = {
    "age": 40,
    "term": 24,
    "amount": 900,
    "price": 1000,
    "expenses": 30,
    "income": 100,
    "debt": 650,
    "assets": 0,
    "home": "owner",
    "job": "fixed",
    "records": False,
    "seniority": 5,
    "pd": 0.2,
}


@pytest.fixture
def rules_dir(tmp_path):
    shutil.copy(POLICY, tmp_path / "risk_appetite.yaml")
    return tmp_path


def _with_dti(text: str, threshold: str, version: str) -> str:
    return text.replace("debt_to_income > 0.5", f"debt_to_income > {threshold}").replace(
        "version: 2026.11.1", f"version: {version}"
    )


def test_an_analyst_adds_a_rule_and_after_reload_it_decides(rules_dir):
    reg = RuleRegistry(rules_dir, SCHEMA)
    old = reg.active()
    assert (old.name, old.version, old.engine_name) == (
        "risk-appetite",
        "2026.11.1",
        "durable_rules",
    )
    assert reg.active().evaluate({**APP, "debt": 0}).outcome == "approve"
    path = rules_dir / "risk_appetite.yaml"
    text = (
        path.read_text()
        .replace(
            "  # ---- Stage 2:",
            '  - id: REF-YOUNG-RENTER\n    priority: 250\n    when: age < 21 and home == "rent"\n'
            '    then: {outcome: refer, reason: "Young renter"}\n  # ---- Stage 2:',
            1,
        )
        .replace("version: 2026.11.1", "version: 2026.11.2")
    )
    text += (
        "  - name: young renters are referred\n"
        "    given: {age: 19, home: rent, pd: 0.05}\n"
        "    expect: {outcome: refer, not_fired: [KO-AGE-MIN],"
        " fired: [RISK-BAND/A, REF-INCOME-MISSING, REF-JOB-MISSING, REF-YOUNG-RENTER]}\n"
    )
    path.write_text(text)
    result = reg.reload()
    assert result.ok, result.errors
    snap = reg.active()
    assert snap.version == "2026.11.2" and snap.sha256 != old.sha256
    ev = snap.evaluate({**APP, "debt": 0, "age": 20, "home": "rent"})
    assert ev.outcome == "refer"
    assert "REF-YOUNG-RENTER" in [f.id for f in ev.fired]
    # the request that started on the old version finishes on it
    assert old.evaluate({**APP, "debt": 0, "age": 20, "home": "rent"}).outcome == "approve"
    assert reg.text_for(old.sha256) == old.source and reg.text_for(snap.sha256) == text


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (("when: age < 18", "when: agee < 18"), "unknown field 'agee'"),
        (("priority: 1000", "priority: 70000"), "priority must be between 0 and 65534"),
        (
            ("expect: {outcome: decline, not_fired", "expect: {outcome: approve, not_fired"),
            "outcome 'decline', expected 'approve'",
        ),
    ],
)
def test_a_bad_file_is_reported_and_the_old_rules_keep_serving(rules_dir, edit, message):
    reg = RuleRegistry(rules_dir, SCHEMA)
    before = reg.active()
    path = rules_dir / "risk_appetite.yaml"
    path.write_text(path.read_text().replace(*edit, 1))
    result = reg.reload()
    assert not result.ok
    assert any(message in e for e in result.errors), result.errors
    assert reg.active() is before
    assert reg.active().evaluate(APP).outcome == "refer"


def test_startup_with_a_bad_file_raises(rules_dir):
    (rules_dir / "risk_appetite.yaml").write_text("ruleset: x\nversion: 1\nrules: []\n")
    with pytest.raises(RulesetInvalid):
        RuleRegistry(rules_dir, SCHEMA)


def test_unchanged_files_are_not_rebuilt(rules_dir):
    reg = RuleRegistry(rules_dir, SCHEMA, engine="compiled")
    snap = reg.active()
    assert reg.reload().changed == []
    assert reg.active() is snap and snap.engine.name == "compiled"


def test_replay_rebuilds_an_old_version_from_its_text(rules_dir):
    reg = RuleRegistry(rules_dir, SCHEMA)
    snap = reg.active()
    rebuilt = load_ruleset_from_text(reg.text_for(snap.sha256), "stored", SCHEMA)
    assert rebuilt.sha256 == snap.sha256 and len(rebuilt.rules) == len(snap.ruleset.rules)


def _rss_kb() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4


def test_1000_reloads_under_concurrent_evaluation(rules_dir):
    path = rules_dir / "risk_appetite.yaml"
    base = path.read_text()
    versions = {  # DTI threshold per version: 0.5 refers APP (DTI 0.54), 0.55 does not
        "v-refer": _with_dti(base, "0.5", "v-refer"),
        "v-approve": _with_dti(base, "0.55", "v-approve"),
    }
    reg = RuleRegistry(rules_dir, SCHEMA)
    stop = threading.Event()
    errors: list[str] = []
    counts = [0]

    def evaluate() -> None:
        while not stop.is_set():
            snap = reg.active()  # held for the whole "request"
            ev = snap.evaluate(APP)
            want = "approve" if snap.version == "v-approve" else "refer"
            if ev.outcome != want:
                errors.append(f"{snap.version}: {ev.outcome}")
            ref = snap.engines["compiled"].evaluate(APP)
            if [f.id for f in ref.fired] != [f.id for f in ev.fired]:
                errors.append("engines disagree")
            counts[0] += 1
            time.sleep(0.002)  # leave the GIL to the reloader now and then

    threads = [threading.Thread(target=evaluate) for _ in range(3)]
    for t in threads:
        t.start()
    rss = []
    try:
        for i in range(1000):
            name = "v-refer" if i % 2 else "v-approve"
            path.write_text(versions[name])
            result = reg.reload()
            assert result.ok, result.errors
            if i == 100:
                gc.collect()
                rss.append(_rss_kb())
            time.sleep(0)
    finally:
        stop.set()
        for t in threads:
            t.join()
    gc.collect()
    rss.append(_rss_kb())
    assert errors == []
    assert counts[0] > 100
    assert (rss[1] - rss[0]) / 1024 < 40, rss
    # only the current version's durable rulesets are alive
    live = durable_mod.live_ruleset_count()
    assert live <= 10, live


def test_the_watcher_reloads_on_change(rules_dir):
    reg = RuleRegistry(rules_dir, SCHEMA)
    seen = threading.Event()
    reg.start_watching(on_result=lambda r: seen.set())
    try:
        time.sleep(0.3)
        path = rules_dir / "risk_appetite.yaml"
        path.write_text(path.read_text().replace("version: 2026.11.1", "version: 2026.11.9"))
        assert seen.wait(10)
        assert reg.active().version == "2026.11.9"
    finally:
        reg.close()
