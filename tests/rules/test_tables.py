"""Decision tables: syntax errors at file:line:col with the table/row id, and the semantics of
each hit policy, identical on both engines."""

from __future__ import annotations

import pytest
import structlog

from decision_service.rules import tables as tb
from decision_service.rules.compiled import CompiledEngine
from decision_service.rules.durable import DurableEngine
from decision_service.rules.file_test_runs import run_file_tests
from decision_service.rules.language import RuleFileError, load_ruleset_from_text

from ._data import SCHEMA

HEAD = "ruleset: t\nversion: '1'\ntables:\n"


def table(body: str, tid: str = "T", hit: str = "unique", extra: str = "") -> str:
    return f"  - id: {tid}\n    hit: {hit}\n{extra}{body}"


def both(text: str):
    rs = load_ruleset_from_text(text, "t.yaml", SCHEMA)
    return rs, CompiledEngine(rs), DurableEngine(rs)


def run(text: str, facts: dict):
    _rs, c, d = both(text)
    a, b = c.evaluate(facts), d.evaluate(facts)
    d.close()
    assert a == b  # the hit-policy step is shared: both engines agree exactly
    return a


# -- errors ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "line", "col", "where", "message"),
    [
        (
            "    inputs: [pd]\n    outputs: [set band]\n    rows:\n      - ['< 0.08x', A]\n",
            9,
            17,
            "T/row-1",
            "unexpected 'x'",
        ),
        (
            "    inputs: [pdd]\n    outputs: [set band]\n    rows:\n      - ['< 0.08', A]\n",
            6,
            14,
            "T",
            "unknown field 'pdd'",
        ),
        (
            "    inputs: [home]\n    outputs: [set band]\n    rows:\n"
            "      - {id: R1, cells: ['owner, castle', A]}\n",
            9,
            34,
            "T/R1",
            "'castle' is not a valid value",
        ),
        (
            "    inputs: [home]\n    outputs: [set band]\n    rows:\n"
            "      - {id: R1, cells: ['[1..2)', A]}\n",
            9,
            27,
            "T/R1",
            "an interval needs a number column",
        ),
        (
            "    inputs: [pd]\n    outputs: [set band]\n    rows:\n      - ['< 0.08']\n",
            9,
            9,
            "T/row-1",
            "row has 1 cells; the table has 1 input and 1 output columns",
        ),
        (
            "    inputs: [pd]\n    outputs: [outcome]\n    rows:\n      - ['< 0.08', refer]\n",
            7,
            14,
            "T",
            "needs a reason column",
        ),
        (
            "    inputs: [pd]\n    outputs: [colour]\n    rows:\n      - ['< 0.08', red]\n",
            7,
            15,
            "T",
            "an output column is outcome, reason, code, max_amount",
        ),
        (
            "    inputs: [income]\n    outputs: [outcome, reason]\n    rows:\n"
            "      - ['is missing', maybe, x]\n",
            9,
            24,
            "T/row-1",
            "outcome must be one of",
        ),
        (
            "    inputs: [age + term]\n    outputs: [set x]\n    rows:\n      - [is missing, 1]\n",
            9,
            10,
            "T/row-1",
            "`is missing` applies to a column that is a field",
        ),
        (
            "    inputs: [pd]\n    outputs: [max_amount]\n    rows:\n"
            "      - ['[0.5..0.1]', 'amount']\n",
            9,
            12,
            "T/row-1",
            "empty interval",
        ),
    ],
)
def test_errors_name_file_line_column_table_and_row(body, line, col, where, message):
    with pytest.raises(RuleFileError) as info:
        load_ruleset_from_text(HEAD + table(body), "t.yaml", SCHEMA)
    errors = [str(e) for e in info.value.errors]
    assert any(e.startswith(f"t.yaml:{line}:{col}: {where}: ") and message in e for e in errors), (
        errors
    )


def test_hit_policy_and_aggregate_are_validated():
    for hit, message in [
        ("sometimes", "hit must be one of unique, first, priority, collect"),
        ("first sum", "only `collect` takes an aggregate"),
        ("priority", "ranks rows by their outcome"),
    ]:
        body = "    inputs: [pd]\n    outputs: [set b]\n    rows:\n      - ['< 0.1', 1]\n"
        with pytest.raises(RuleFileError) as info:
            load_ruleset_from_text(HEAD + table(body, hit=hit), "t.yaml", SCHEMA)
        assert message in str(info.value), str(info.value)


def test_a_derived_field_from_a_table_is_used_by_a_later_stage_only():
    text = (
        HEAD
        + table(
            "    inputs: [pd]\n    outputs: [set band]\n    rows:\n      - ['< 0.5', A]\n"
            "      - ['>= 0.5', B]\n"
        )
        + table(
            "    inputs: [band]\n    outputs: [outcome, reason]\n    rows:\n"
            "      - [B, refer, r]\n",
            tid="U",
        )
    )
    with pytest.raises(RuleFileError) as info:
        load_ruleset_from_text(text, "t.yaml", SCHEMA)
    assert "'band' is derived in the same stage" in str(info.value)
    ok = text.replace("  - id: U\n    hit: unique\n", "  - id: U\n    hit: unique\n    stage: 2\n")
    ev = run(ok, {"pd": 0.7})
    assert ev.outcome == "refer" and [f.id for f in ev.fired] == ["T/row-2", "U/row-1"]


# -- semantics of each hit policy --------------------------------------------------------------

AGE_TABLE = (
    "    inputs: [age, home]\n    outputs: [outcome, reason, max_amount]\n    rows:\n"
    "      - {id: YOUNG, cells: ['< 25', -, refer, young, '500']}\n"
    "      - {id: RENT, cells: [-, 'rent', decline, renter, '300']}\n"
    "      - {id: ANY, cells: [-, -, approve, default, '1000']}\n"
)


def test_first_fires_the_first_matching_row_only():
    ev = run(HEAD + table(AGE_TABLE, hit="first"), {"age": 20, "home": "rent"})
    assert [f.id for f in ev.fired] == ["T/YOUNG"]
    assert (ev.outcome, ev.max_amount) == ("refer", 500)
    ev = run(HEAD + table(AGE_TABLE, hit="first"), {"age": 40})
    assert [f.id for f in ev.fired] == ["T/ANY"] and ev.outcome == "approve"


def test_priority_fires_the_most_severe_matching_row():
    ev = run(HEAD + table(AGE_TABLE, hit="priority"), {"age": 20, "home": "rent"})
    assert [f.id for f in ev.fired] == ["T/RENT"]
    assert (ev.outcome, ev.max_amount) == ("decline", 300)
    ev = run(HEAD + table(AGE_TABLE, hit="priority"), {"age": 20, "home": "owner"})
    assert [f.id for f in ev.fired] == ["T/YOUNG"]


def test_collect_fires_every_matching_row():
    ev = run(HEAD + table(AGE_TABLE, hit="collect"), {"age": 20, "home": "rent"})
    assert [f.id for f in ev.fired] == ["T/YOUNG", "T/RENT", "T/ANY"]
    assert (ev.outcome, ev.max_amount) == ("decline", 300)  # decline > refer; lowest cap
    assert [r.code for r in ev.reasons] == ["TBL-T-RENT"]


POINTS = (
    "    inputs: [age, records]\n    outputs: [set points]\n    rows:\n"
    "      - ['[18..30)', -, 10]\n      - [-, true, 5]\n      - ['>= 60', -, 3]\n"
)


@pytest.mark.parametrize(
    ("agg", "facts", "value"),
    [
        ("sum", {"age": 20, "records": True}, 15),
        ("sum", {"age": 40, "records": False}, 0),
        ("min", {"age": 20, "records": True}, 5),
        ("max", {"age": 20, "records": True}, 10),
        ("min", {"age": 40, "records": False}, None),
        ("count", {"age": 20, "records": True}, 2),
        ("count", {"age": 40, "records": False}, 0),
    ],
)
def test_collect_with_an_aggregate_sets_one_value(agg, facts, value):
    body = POINTS if agg != "count" else POINTS.replace(", 10]", ", -]").replace(", 5]", ", -]")
    body = body.replace(", 3]", ", -]") if agg == "count" else body
    ev = run(HEAD + table(body, hit=f"collect {agg}"), facts)
    assert ev.derived.get("points") == value
    rows = [f for f in ev.fired if "/" in f.id]
    assert all(f.then["applied"] is False for f in rows)  # traced, aggregated by the table
    if value is not None:
        entry = next(f for f in ev.fired if f.id == "T")
        assert entry.then["set"] == {"points": value} and entry.then["aggregate"] == agg


def test_collect_min_of_caps_and_a_later_stage_reading_the_aggregate():
    text = HEAD + table(
        "    inputs: [income]\n    outputs: [max_amount]\n    rows:\n"
        "      - ['> 0', 'income * 10']\n      - ['> 100', '5000']\n",
        hit="collect max",
    )
    ev = run(text, {"income": 200, "amount": 100})
    assert ev.max_amount == 5000  # the highest of 2000 and 5000


# -- unique: a run-time conflict is never a silent pick ---------------------------------------

OVERLAP = HEAD + table(
    "    inputs: [pd]\n    outputs: [set band]\n    rows:\n"
    "      - {id: B, cells: ['[0.08..0.15]', B]}\n      - {id: C, cells: ['[0.15..0.25)', C]}\n"
)


def test_a_unique_conflict_refers_with_a_dedicated_code_counted_and_logged():
    before = tb.conflict_count("T")
    with structlog.testing.capture_logs() as logs:
        ev = run(OVERLAP, {"pd": 0.15})
    assert ev.outcome == "refer"
    assert [(r.code, r.source) for r in ev.reasons] == [("TBL-CONFLICT", "rule")]
    assert "band" not in ev.derived  # neither row's output is applied
    assert [f.id for f in ev.fired] == ["T", "T/B", "T/C"]
    assert [f.then.get("applied") for f in ev.fired] == [None, False, False]
    assert tb.conflict_count("T") == before + 2  # once per engine
    assert [e["rows"] for e in logs if e.get("table") == "T"] == [["T/B", "T/C"]] * 2
    ev = run(OVERLAP, {"pd": 0.1})
    assert ev.derived == {"band": "B"} and [f.id for f in ev.fired] == ["T/B"]


def test_a_file_test_that_hits_a_unique_conflict_fails():
    text = OVERLAP + "tests:\n  - name: edge\n    given: {pd: 0.15}\n    expect: {outcome: refer}\n"
    _rs, c, d = both(text)
    for eng in (c, d):
        failures, _ = run_file_tests(eng)
        assert [f.message for f in failures] == [
            "unique table T matched 2 rows: T/B, T/C (at run time the application would be "
            "referred, code TBL-CONFLICT)"
        ]
    d.close()


def test_row_ids_default_to_row_n_and_appear_in_the_trace_with_values():
    ev = run(
        HEAD
        + table(
            "    inputs: [pd, income]\n    outputs: [set band]\n    rows:\n"
            "      - ['< 0.5', is missing, A]\n      - ['>= 0.5', -, B]\n"
        ),
        {"pd": 0.2},
    )
    (f,) = ev.fired
    assert (f.id, f.when, f.values) == (
        "T/row-1",
        "pd < 0.5 and income is missing",
        {"pd": 0.2, "income": None},
    )


def test_an_aggregate_adds_up_numbers_only():
    body = "    inputs: [pd]\n    outputs: [set s]\n    rows:\n      - ['< 0.1', '3']\n"
    with pytest.raises(RuleFileError) as info:
        load_ruleset_from_text(HEAD + table(body, hit="collect sum"), "t.yaml", SCHEMA)
    assert "t.yaml:9:19: T: `collect sum` adds up numbers: got '3'" in str(info.value)
