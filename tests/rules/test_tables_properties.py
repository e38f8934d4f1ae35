"""Property test: random decision tables under every hit policy give, on both engines, exactly
what an independent oracle computes from the reference three-valued interpreter (`ex.truth`)
and the hit policy's definition."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from decision_service.rules import expressions as ex
from decision_service.rules.compiled import CompiledEngine
from decision_service.rules.durable import DurableEngine
from decision_service.rules.language import load_ruleset_from_text

from ._data import SCHEMA

CELLS = {
    "pd": ["-", "< 0.1", "[0.1..0.3)", ">= 0.3", "(0.05..0.2]", "not(< 0.2)", "== 0.1"],
    "income": ["-", "> 100", "<= 100", "is missing", "is not missing", "[50..150]", "100, 200"],
    "home": ["-", "rent", "owner, rent", "is missing", '!= "parents"', '"owner"'],
    "records": ["-", "true", "false"],
    "age": ["-", "< 30", ">= 30", "30, 31", "not(30)"],
    "amount / term": ["-", "> 10", "<= 10", "[5..20)"],
}
POLICIES = ["unique", "first", "priority", "collect", "collect sum", "collect min",
            "collect max", "collect count"]  # fmt: skip
SEVERITY = {"approve": 1, "refer": 2, "decline": 3}

FACTS = st.fixed_dictionaries(
    {"pd": st.sampled_from([0.0, 0.05, 0.1, 0.2, 0.25, 0.3, 0.6])},
    optional={
        "income": st.sampled_from([0, 50, 100, 100.5, 150, 200]),
        "home": st.sampled_from(["rent", "owner", "parents"]),
        "records": st.booleans(),
        "age": st.sampled_from([29, 30, 31]),
        "amount": st.sampled_from([0, 100, 240]),
        "term": st.sampled_from([0, 12, 24]),
    },
)


@st.composite
def tables(draw):
    columns = draw(st.lists(st.sampled_from(sorted(CELLS)), min_size=1, max_size=3, unique=True))
    hit = draw(st.sampled_from(POLICIES))
    n = draw(st.integers(1, 6))
    rows = []
    for i in range(n):
        cells = [draw(st.sampled_from(CELLS[c])) for c in columns]
        if hit == "collect count":
            out = ["-"]
        elif hit.startswith("collect "):
            out = [str(draw(st.integers(-5, 20)))]
        else:
            outcome = draw(st.sampled_from(["approve", "refer", "decline", "-"]))
            out = [outcome, f"reason {i}", str(draw(st.integers(0, 9)))]
        rows.append(cells + out)
    return columns, hit, rows


def render(columns, hit, rows) -> str:
    outputs = ["set s"] if hit.startswith("collect ") else ["outcome", "reason", "set s"]
    q = lambda c: "'" + c.replace("'", "''") + "'"  # noqa: E731
    width = len(columns)
    body = "".join(
        "      - [" + ", ".join([*(q(c) for c in r[:width]), *r[width:]]) + "]\n" for r in rows
    )
    return (
        "ruleset: p\nversion: '1'\ndefault: {outcome: approve}\ntables:\n  - id: T\n"
        f"    hit: {hit}\n    inputs: [{', '.join(q(c) for c in columns)}]\n"
        f"    outputs: [{', '.join(outputs)}]\n    rows:\n{body}"
    )


def oracle(rs, hit, facts):
    rows = rs.tables[0].rows
    m = [r for r in rows if ex.truth(r.when.node, facts) is True]
    if hit.startswith("collect "):
        agg = hit.split()[1]
        vals = [r.set.get("s") for r in m]
        if agg == "count":
            value = len(m)
        elif agg == "sum":
            value = sum(vals)
        else:
            value = (min if agg == "min" else max)(vals) if vals else None
        derived = {} if value is None else {"s": value}
        return "approve", [r.id for r in m] + ["T"], derived
    if hit == "unique" and len(m) > 1:
        return "refer", ["T"] + [r.id for r in m], {}
    if hit == "first":
        m = m[:1]
    if hit == "priority" and m:
        m = [max(m, key=lambda r: (SEVERITY.get(r.outcome, 0), -rows.index(r)))]
    outcomes = [r.outcome for r in m if r.outcome]
    outcome = max(outcomes, key=SEVERITY.get) if outcomes else "approve"
    derived = {"s": m[0].set["s"]} if m else {}
    return outcome, [r.id for r in m], derived


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(spec=tables(), facts=st.lists(FACTS, min_size=1, max_size=6))
def test_both_engines_implement_every_hit_policy(spec, facts):
    columns, hit, rows = spec
    rs = load_ruleset_from_text(render(columns, hit, rows), "p.yaml", SCHEMA)
    comp, dur = CompiledEngine(rs), DurableEngine(rs)
    try:
        for f in facts:
            want = oracle(rs, hit, f)
            for eng in (comp, dur):
                ev = eng.evaluate(f)
                got = (ev.outcome, [x.id for x in ev.fired], ev.derived)
                assert got == want, (eng.name, f)
    finally:
        dur.close()
