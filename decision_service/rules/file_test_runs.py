"""Running a rule file's own `tests:` (read by file_tests.py) on an engine: every reload and
`rules check` run them on both engines; a failure refuses the file."""

from __future__ import annotations

import math
from typing import Any

import msgspec

from decision_service.rules.evaluation import Engine, Evaluation
from decision_service.rules.ruleset import TestCase
from decision_service.rules.tables import CONFLICT_CODE


class TestFailure(msgspec.Struct, frozen=True):
    __test__ = False
    file: str
    line: int
    test: str
    engine: str
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: test {self.test!r} [{self.engine}]: {self.message}"


def _close(a: Any, b: Any) -> bool:
    if isinstance(a, int | float) and isinstance(b, int | float) and not isinstance(a, bool):
        return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9)
    return a == b


def check_test(case: TestCase, result: Evaluation) -> list[str]:
    problems: list[str] = []
    expect = case.expect
    fired = [f.id for f in result.fired]
    if "outcome" in expect and result.outcome != expect["outcome"]:
        problems.append(f"outcome {result.outcome!r}, expected {expect['outcome']!r}")
    if "fired" in expect and fired != list(expect["fired"]):
        problems.append(f"fired {fired}, expected {list(expect['fired'])}")
    for rid in expect.get("not_fired") or []:
        if rid in fired:
            problems.append(f"{rid} fired, expected it not to")
    for k, v in (expect.get("derived") or {}).items():
        got = result.derived.get(k)
        if not _close(got, v):
            problems.append(f"derived {k} = {got!r}, expected {v!r}")
    if "max_amount" in expect:
        want = expect["max_amount"]
        got = result.max_amount
        if (want is None) != (got is None) or (want is not None and not _close(got, want)):
            problems.append(f"max_amount {got!r}, expected {want!r}")
    return problems


def run_file_tests(engine: Engine) -> tuple[list[TestFailure], set[str]]:
    """Run the ruleset's own tests on `engine`. Returns (failures, ids of rules fired)."""
    rs = engine.ruleset
    failures: list[TestFailure] = []
    covered: set[str] = set()
    for case in rs.tests:
        try:
            result = engine.evaluate(case.given)
        except Exception as e:
            failures.append(TestFailure(rs.file, case.line, case.name, engine.name, repr(e)))
            continue
        covered.update(f.id for f in result.fired)
        for f in result.fired:
            if f.then.get("code") == CONFLICT_CODE and f.then.get("applied") is None:
                rows = [g.id for g in result.fired if g.id.startswith(f.id + "/")]
                failures.append(
                    TestFailure(
                        rs.file,
                        case.line,
                        case.name,
                        engine.name,
                        f"unique table {f.id} matched {len(rows)} rows: {', '.join(rows)} "
                        f"(at run time the application would be referred, code {CONFLICT_CODE})",
                    )
                )
        for p in check_test(case, result):
            failures.append(TestFailure(rs.file, case.line, case.name, engine.name, p))
    return failures, covered
