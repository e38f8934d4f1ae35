"""Every durable_rules hazard of RULES-ENGINE.md: the raw hazard is shown on the bare C module,
then the same scenario passes through our adapter."""

from __future__ import annotations

import json
import subprocess
import sys
import threading

import durable_rules_engine as dre
import pytest

from decision_service.rules import durable as durable_mod
from decision_service.rules.compiled import CompiledEngine
from decision_service.rules.durable import CATCH_ALL, CHUNK_SIZE, DurableEngine
from decision_service.rules.durable_translation import format_float
from decision_service.rules.language import load_ruleset, load_ruleset_from_text
from decision_service.rules.schema import FactError

from ._data import POLICY, SCHEMA, generated_applications

BASE = {"age": 40, "term": 24, "amount": 900, "price": 1000, "expenses": 50, "pd": 0.1}


def ruleset(rules_yaml: str, name: str = "hazard"):
    text = f"ruleset: {name}\nversion: '1'\nrules:\n{rules_yaml}"
    return load_ruleset_from_text(text, "hazard.yaml", SCHEMA)


def _rss_kb() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4


_raw_names = iter(range(1, 10**9))


def _raw(definition: dict) -> int:
    return dre.create_ruleset(f"raw-{next(_raw_names)}", json.dumps(definition))


# -- sessions ---------------------------------------------------------------------------------
def test_raw_sessions_not_deleted_hit_memory_error_at_1024():
    h = _raw({"r": {"all": [{"m": {"k": "a"}}]}})
    with pytest.raises(MemoryError):
        for i in range(1100):
            dre.assert_fact(h, json.dumps({"sid": str(i), "id": 1, "k": "a"}))
    dre.delete_ruleset(h)


def test_5000_evaluations_in_a_row_delete_every_session():
    eng = DurableEngine(load_ruleset(POLICY, SCHEMA))
    for i in range(5000):
        eng.evaluate({**BASE, "amount": 100 + i % 900})
    eng.close()


# -- an action always runs ---------------------------------------------------------------------
def test_a_fact_that_matches_nothing_still_runs_the_catch_all():
    rs = ruleset("  - {id: MINOR, when: age < 18, then: {outcome: decline, reason: minor}}\n")
    eng = DurableEngine(rs)
    for definition in eng.definitions.values():
        assert definition[CATCH_ALL]["pri"] == 65535
        assert definition[CATCH_ALL]["all"] == [{"m": {"k": "app"}}]
    for _ in range(1000):  # would crash or leak if delete_state ran on an action-less session
        ev = eng.evaluate({"age": 40})
        assert ev.fired == [] and ev.outcome == "refer"  # no default given: refer
    assert eng.evaluate({}).fired == []
    eng.close()


def test_raw_a_fact_that_matches_nothing_queues_no_action():
    h = _raw({"r": {"all": [{"m": {"$and": [{"k": "a"}, {"$lt": {"age": 18}}]}}]}})
    code, state = dre.assert_fact(h, json.dumps({"sid": "1", "id": 1, "k": "a", "age": 40}))
    assert code == 1  # not handled: no action would run before delete_state
    assert dre.start_action_for_state(h, state) is None
    dre.delete_ruleset(h)


# -- discriminator -------------------------------------------------------------------------------
def test_every_pattern_requires_the_discriminator():
    eng = DurableEngine(load_ruleset(POLICY, SCHEMA))
    for definition in eng.definitions.values():
        for name, rule in definition.items():
            (pattern,) = rule["all"]
            m = pattern["m"]
            assert m == {"k": "app"} or m["$and"][0] == {"k": "app"}, name
    eng.close()


def test_state_object_does_not_refire_rules_testing_missing_fields():
    # Host re-asserts the session state as a fact after each action: a `$nex` rule without a
    # discriminator matches it. Ours never matches anything but an application.
    rs = ruleset(
        "  - {id: NO-INCOME, when: income is missing, then: {outcome: refer, reason: r}}\n"
    )
    eng = DurableEngine(rs)
    (chunk,) = eng._stages[0]
    dre.update_state(chunk.handle, json.dumps({"sid": "state-1", "$s": 1}))
    assert dre.start_action(chunk.handle) is None  # the state object fired nothing
    raw = _raw({"r": {"all": [{"m": {"$nex": {"income": 1}}}]}})
    dre.update_state(raw, json.dumps({"sid": "state-1", "$s": 1}))
    assert dre.start_action(raw) is not None  # the raw pattern matches the state object
    assert [f.id for f in eng.evaluate({"age": 30}).fired] == ["NO-INCOME"]
    eng.close()


# -- floats --------------------------------------------------------------------------------------
def test_raw_exponent_without_dot_is_rejected():
    with pytest.raises(dre.error):
        _raw({"r": {"all": [{"m": {"$lt": {"pd": 1e-05}}}]}})


@pytest.mark.parametrize(
    ("x", "text"),
    [(1e-05, "1.0e-05"), (1.5e20, "1.5e+20"), (0.1, "0.1"), (5e-324, "5.0e-324"), (3.0, "3.0")],
)
def test_float_formatting(x, text):
    assert format_float(x) == text
    assert float(text) == x


def test_float_formatting_refuses_non_finite():
    with pytest.raises(ValueError):
        format_float(float("inf"))


def test_a_pd_of_1e_05_works():
    rs = ruleset(
        "  - {id: TINY, when: pd <= 0.00001, then: {outcome: approve, reason: tiny}}\n"
        "  - {id: LIT, when: pd > 1e-06 and pd < 1.0e-04, then: {outcome: approve, reason: l}}\n"
        "  - {id: HUGE, when: amount * 1e300 * 1e300 > 1, then: {outcome: refer, reason: inf}}\n"
    )
    eng, comp = DurableEngine(rs), CompiledEngine(rs)
    for pd in (1e-05, 1.1e-05, 5e-324, 0.0):
        facts = {"pd": pd, "amount": 1000}
        assert [f.id for f in eng.evaluate(facts).fired] == [
            f.id for f in comp.evaluate(facts).fired
        ]
    assert [f.id for f in eng.evaluate({"pd": 1e-05, "amount": 1}).fired] == ["TINY", "LIT"]
    eng.close()


# -- chunks --------------------------------------------------------------------------------------
def _big_policy(n: int) -> str:
    lines = []
    for i in range(n):
        lines.append(
            f"  - {{id: R{i}, priority: {i % 500}, when: amount > {i * 10} and pd < 0.{i % 9 + 1},"
            f" then: {{outcome: {['approve', 'refer', 'decline'][i % 3]}, reason: r{i}}}}}\n"
        )
    return "".join(lines)


RAW_303 = """
import durable_rules_engine as dre, json
defn = {f"r{i}": {"all": [{"m": {"$and": [{"k": "a"}, {"$gt": {"amount": i}}]}}]}
        for i in range(100)}
h = dre.create_ruleset("raw-303", json.dumps(defn))
for j in range(200):
    try:
        _c, st = dre.assert_fact(h, json.dumps({"sid": str(j), "id": 1, "k": "a", "amount": j}))
    except dre.error as e:
        print(e)
        break
    r = dre.start_action_for_state(h, st)
    while r:
        r = dre.complete_and_start_action(h, st)
    dre.delete_state(h, str(j))
"""


def test_raw_100_rule_ruleset_fails_with_error_303():
    # in a subprocess: the engine can abort the process after the error
    run = subprocess.run([sys.executable, "-c", RAW_303], capture_output=True, text=True)
    assert "error code: 303" in run.stdout


def test_a_300_rule_ruleset_runs_in_chunks_of_at_most_25():
    rs = ruleset(_big_policy(300), "big")
    eng, comp = DurableEngine(rs), CompiledEngine(rs)
    assert len(eng.definitions) == 12
    assert all(len(d) - 1 <= CHUNK_SIZE for d in eng.definitions.values())
    for amount in range(0, 3100, 7):
        facts = {"amount": amount, "pd": (amount % 97) / 100}
        a, b = eng.evaluate(facts), comp.evaluate(facts)
        assert [f.id for f in a.fired] == [f.id for f in b.fired]
        assert a.outcome == b.outcome
    eng.close()


# -- strict types, only used fields ---------------------------------------------------------
def test_raw_durable_compares_strings_with_numbers():
    h = _raw({"r": {"all": [{"m": {"$and": [{"k": "a"}, {"$lt": {"age": 3}}]}}]}})
    code, _st = dre.assert_fact(h, json.dumps({"sid": "1", "id": 1, "k": "a", "age": "10"}))
    assert code == 0  # "10" < 3 matched
    dre.delete_ruleset(h)


@pytest.mark.parametrize(
    "facts", [{"age": "10"}, {"records": 1}, {"records": "true"}, {"age": True}, {"home": "castle"}]
)
def test_facts_are_typed_strictly(facts):
    eng = DurableEngine(load_ruleset(POLICY, SCHEMA))
    with pytest.raises(FactError):
        eng.evaluate({**BASE, **facts})
    eng.close()


def test_only_the_fields_a_chunk_uses_are_sent(monkeypatch):
    sent: list[dict] = []
    real = dre.assert_fact

    class Spy:
        def __getattr__(self, name):
            return getattr(dre, name)

        def assert_fact(self, handle, text):
            sent.append(json.loads(text))
            return real(handle, text)

    monkeypatch.setattr(durable_mod, "dre", Spy())
    rs = ruleset("  - {id: MINOR, when: age < 18, then: {outcome: decline, reason: minor}}\n")
    eng = DurableEngine(rs)
    eng.evaluate({**BASE, "age": 17, "marital": "single", "income": 12.5})
    assert sent == [{"sid": sent[0]["sid"], "id": 1, "k": "app", "age": 17}]
    eng.close()


# -- de-duplication ------------------------------------------------------------------------------
def test_or_and_in_fire_a_rule_once():
    cond = 'home in ["rent", "owner"] or home == "rent" or not home != "rent"'
    rs = ruleset(f"  - {{id: HOME, when: '{cond}', then: {{outcome: refer, reason: h}}}}\n")
    eng = DurableEngine(rs)
    assert [f.id for f in eng.evaluate({"home": "rent"}).fired] == ["HOME"]
    # raw: the same $or fires the rule more than once
    h = _raw({"r": {"all": [{"m": {"$and": [{"k": "a"}, {"$or": [{"home": "rent"}, {"x": 1}]}]}}]}})
    _c, st = dre.assert_fact(h, json.dumps({"sid": "1", "id": 1, "k": "a", "home": "rent", "x": 1}))
    n, r = 0, dre.start_action_for_state(h, st)
    while r:
        n += 1
        r = dre.complete_and_start_action(h, st)
    assert n >= 2
    dre.delete_ruleset(h)
    eng.close()


# -- versioned names, delete on unload --------------------------------------------------------
def test_two_engines_of_one_version_get_distinct_durable_names():
    rs = load_ruleset(POLICY, SCHEMA)
    a, b = DurableEngine(rs), DurableEngine(rs)
    assert not set(a.ruleset_names) & set(b.ruleset_names)
    a.close()
    with pytest.raises(durable_mod.DurableEngineError):
        a.evaluate(BASE)
    b.evaluate(BASE)
    b.close()


def test_memory_is_flat_over_1000_load_unload_cycles():
    rs = load_ruleset(POLICY, SCHEMA)
    for _ in range(50):
        DurableEngine(rs).close()
    before = _rss_kb()
    for i in range(1000):
        eng = DurableEngine(rs)
        eng.evaluate(BASE)
        if i % 2:
            eng.close()
        del eng  # the other half is deleted by the finalizer when dropped
    growth_mb = (_rss_kb() - before) / 1024
    assert growth_mb < 30, growth_mb  # ~336 KB per reload (336 MB) without delete_ruleset


# -- no Host, threads ------------------------------------------------------------------------------
def test_the_adapter_never_imports_host():
    code = (
        "import sys\n"
        "from pathlib import Path\n"
        "from decision_service.rules.registry import RuleRegistry\n"
        "from decision_service.rules.schema import FactSchema\n"
        "schema = FactSchema.from_card_file(Path('models/underwriting/1.0.0/model_card.yaml'))\n"
        "r = RuleRegistry('rules', schema)\n"
        "r.active().evaluate({'age': 30, 'pd': 0.1})\n"
        "assert 'durable.engine' not in sys.modules and 'durable.lang' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=POLICY.parent.parent)


def test_concurrent_evaluations_are_correct():
    rs = load_ruleset(POLICY, SCHEMA)
    eng, comp = DurableEngine(rs), CompiledEngine(rs)
    apps = generated_applications(2000, seed=7)
    expected = [[f.id for f in comp.evaluate(a).fired] for a in apps]
    errors: list[str] = []

    def work(offset: int) -> None:
        for i in range(offset, len(apps), 4):
            got = [f.id for f in eng.evaluate(apps[i]).fired]
            if got != expected[i]:
                errors.append(f"{i}: {got} != {expected[i]}")

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    eng.close()
