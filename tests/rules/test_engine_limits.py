"""durable_rules never receives a construct that can hang or crash it.

A `$or` of >= 512 alternatives hangs `assert_fact` holding the GIL (1,000 hang
`create_ruleset`), and `$and`/`$or` nested 15 deep is error 113: such conditions are
materialised (computed by our code before the assert). Every run that could hang the engine
runs in a subprocess with a timeout, never in this process.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

from decision_service.rules import expressions as ex
from decision_service.rules.durable_translation import (
    MAX_ALTERNATIVES,
    MAX_NESTING,
    needs_materialising,
)
from decision_service.rules.language import load_ruleset_from_text

from ._data import ROOT, SCHEMA


def _run(code: str, timeout: float) -> subprocess.CompletedProcess[str]:
    """Run `code` in a fresh interpreter (killed with SIGKILL at the timeout)."""
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_the_hazard_is_real_a_raw_or_of_600_hangs_the_engine():
    """Why the guard exists: durable_rules itself, given a 600-way `$or`, never returns."""
    code = """
        import json, durable_rules_engine as dre
        disc = {"k": "app"}
        d = {"r0": {"all": [{"m": {"$and": [disc, {"$or": [{"a": i} for i in range(600)]}]}}],
                    "pri": 1},
             "zz": {"all": [{"m": disc}], "pri": 65535}}
        h = dre.create_ruleset("t", json.dumps(d))
        dre.assert_fact(h, json.dumps({"sid": "1", "id": 1, "k": "app", "a": 599}))
        print("returned")
    """
    with pytest.raises(subprocess.TimeoutExpired):
        _run(code, timeout=5)


_AGREE = """
    import json, sys, time
    sys.path.insert(0, ".")
    from tests.rules._data import SCHEMA, generated_applications
    from decision_service.rules.snapshot import build_snapshot

    text = open(sys.argv[1]).read()
    start = time.perf_counter()
    snap = build_snapshot(text, "big.yaml", SCHEMA)  # both engines built, file tests run
    loaded = time.perf_counter() - start
    compiled, durable = snap.engines["compiled"], snap.engines["durable_rules"]
    facts = generated_applications(300, seed=11) + json.loads(open(sys.argv[2]).read())
    fired = 0
    for f in facts:
        a, b = compiled.evaluate(f), durable.evaluate(f)
        assert [x.id for x in a.fired] == [x.id for x in b.fired], f
        assert a.outcome == b.outcome and a.derived == b.derived, f
        fired += len(a.fired)
    print(json.dumps({"loaded_s": loaded, "facts": len(facts), "fired": fired}))
"""


def _agree(tmp_path, text: str, extra_facts: list[dict], timeout: float) -> dict:
    (tmp_path / "big.yaml").write_text(text)
    (tmp_path / "facts.json").write_text(json.dumps(extra_facts))
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            textwrap.dedent(_AGREE),
            str(tmp_path / "big.yaml"),
            str(tmp_path / "facts.json"),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


HEAD = "ruleset: big\nversion: '1'\nrules:\n"


def test_10000_alternatives_in_a_list_and_in_a_chained_or(tmp_path):
    n = 10_000
    in_list = ", ".join(str(i * 3) for i in range(n))  # amounts 0, 3, 6, …
    chained = " or ".join(f"income == {i * 7}" for i in range(n))
    not_in = ", ".join(str(i) for i in range(20, 20 + n))
    text = (
        HEAD
        + f"  - id: AMOUNT-LISTED\n    when: amount in [{in_list}]\n"
        + "    then: {outcome: refer, reason: listed}\n"
        + f"  - id: INCOME-LISTED\n    when: {chained}\n"
        + "    then: {outcome: decline, reason: listed income}\n"
        + f"  - id: AGE-UNLISTED\n    when: age not in [{not_in}]\n"
        + "    then: {set: {young: true}}\n"
        + "tests:\n"
        + "  - {name: listed, given: {amount: 2997, income: 69993, age: 19},"
        + " expect: {fired: [AMOUNT-LISTED, INCOME-LISTED, AGE-UNLISTED]}}\n"
        + "  - {name: unlisted, given: {amount: 2998, income: 69994, age: 30},"
        + " expect: {fired: []}}\n"
    )
    rs = load_ruleset_from_text(text, "big.yaml", SCHEMA)
    for rule in rs.rules:  # what durable_rules would have received as is
        assert needs_materialising(ex.to_nnf(rule.when.node))
    edges = [
        {"amount": a, "income": i, "age": g, "pd": 0.1}
        for a, i, g in [(0, 0, 19), (29997, 69993, 10019), (29998, 69994, 10020), (1.5, 7.0, 25)]
    ]
    result = _agree(tmp_path, text, edges, timeout=300)
    assert result["facts"] == 304 and result["fired"] > 0


def test_10000_rules_load_in_bounded_time_and_both_engines_agree(tmp_path):
    rules = "".join(
        f"  - id: R{i}\n    priority: {i % 500}\n    stage: {1 + i % 2}\n"
        f"    when: age > {i % 90} and pd < {(i % 97) / 100 + 0.01:.2f}\n"
        f"    then: {{outcome: {['approve', 'refer', 'decline'][i % 3]}, reason: r{i}}}\n"
        for i in range(10_000)
    )
    text = (
        HEAD + rules + "tests:\n  - {name: none, given: {age: 0, pd: 0.5}, expect: {fired: []}}\n"
    )
    # the 300 s timeout is the bound: before the compiled engine's O(n²) fix it took minutes
    result = _agree(tmp_path, text, [{"age": 50, "pd": 0.2}], timeout=300)
    assert result["fired"] > 1000


def test_deep_nesting_is_materialised_and_evaluates(tmp_path):
    # and/or alternating 20 levels deep (durable_rules: error 113 from 15)
    cond = "age > 0"
    for i in range(20):
        op = "and" if i % 2 else "or"
        cond = f"({cond} {op} income > {i})"
    node = ex.to_nnf(
        load_ruleset_from_text(
            HEAD + f"  - id: DEEP\n    when: '{cond}'\n    then: {{outcome: refer, reason: r}}\n",
            "d.yaml",
            SCHEMA,
        )
        .rules[0]
        .when.node
    )
    assert needs_materialising(node)
    text = (
        HEAD
        + f"  - id: DEEP\n    when: '{cond}'\n    then: {{outcome: refer, reason: r}}\n"
        + "  - id: SMALL\n    when: age in [18, 19, 20]\n    then: {set: {young: true}}\n"
    )
    result = _agree(tmp_path, text, [{"age": 1, "income": 30, "pd": 0.1}], timeout=120)
    assert result["fired"] > 0


def test_no_definition_sent_to_durable_exceeds_its_limits():
    """Walk every durable definition built for a mix of big and small conditions."""
    from decision_service.rules.durable import DurableEngine

    big = ", ".join(str(i) for i in range(1000))
    text = (
        HEAD
        + f"  - {{id: BIG, when: 'age in [{big}]', then: {{outcome: refer, reason: r}}}}\n"
        + "  - {id: SMALL, when: 'age in [18, 19] or income < 5', then: {set: {y: true}}}\n"
    )
    eng = DurableEngine(load_ruleset_from_text(text, "t.yaml", SCHEMA))
    try:

        def walk(n, depth=0) -> int:
            if isinstance(n, dict):
                for k, v in n.items():
                    if k in ("$or", "$and"):
                        assert len(v) <= MAX_ALTERNATIVES + 1
                    walk(v, depth + 1)
            elif isinstance(n, list):
                for v in n:
                    walk(v, depth + 1)
            assert depth <= 2 * (MAX_NESTING + 4)
            return 0

        for definition in eng.definitions.values():
            walk(definition)
        assert eng.evaluate({"age": 999, "pd": 0.1}).outcome == "refer"
        assert eng.evaluate({"age": 1000, "pd": 0.1}).fired == []
        assert [f.id for f in eng.evaluate({"age": 18, "pd": 0.1}).fired] == ["BIG", "SMALL"]
    finally:
        eng.close()


def test_rules_reading_many_fields_never_send_a_fact_of_over_252_properties():
    """durable_rules fails an assert (error 302) when a fact carries more than ~252 properties:
    rules are grouped so that each durable ruleset's fact stays within MAX_PROPERTIES."""
    from decision_service.rules.compiled import CompiledEngine
    from decision_service.rules.durable import DurableEngine
    from decision_service.rules.durable_translation import MAX_PROPERTIES

    derived = ", ".join(f"d{i}: {i}" for i in range(400))
    readers = "".join(
        f"  - id: READ-{r}\n    stage: 2\n    when: '"
        + " and ".join(f"d{r * 16 + j} >= 0" for j in range(16))
        + "'\n    then: {outcome: refer, reason: r}\n"
        for r in range(25)
    )
    text = HEAD + f"  - {{id: SET, when: age > 0, then: {{set: {{{derived}}}}}}}\n" + readers
    rs = load_ruleset_from_text(text, "wide.yaml", SCHEMA)
    durable, compiled = DurableEngine(rs), CompiledEngine(rs)
    try:
        for chunks in durable._stages:
            for chunk in chunks:
                assert len(chunk.fields) + len(chunk.synthetics) <= MAX_PROPERTIES
        a, b = durable.evaluate({"age": 30, "pd": 0.1}), compiled.evaluate({"age": 30, "pd": 0.1})
        assert [f.id for f in a.fired] == [f.id for f in b.fired]
        assert len(a.fired) == 26
    finally:
        durable.close()
