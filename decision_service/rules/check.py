"""`decision-service rules check [PATH...]`: validate, compile on both engines, run file tests."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import TextIO

from decision_service.rules.durable import DurableEngineError
from decision_service.rules.language import RuleFileError, load_ruleset
from decision_service.rules.registry import build_and_test
from decision_service.rules.schema import FactSchema
from decision_service.rules.verify import verify


def _files(paths: list[Path]) -> list[Path]:
    out: list[Path] = []
    for p in paths:
        if p.is_dir():
            out += sorted(p.glob("*.yaml"))
        else:
            out.append(p)
    return out


def run_check(paths: list[Path], schema: FactSchema, out: TextIO | None = None) -> int:
    """Check rule files; print actionable errors and per-rule coverage. Returns an exit code."""
    out = out or sys.stdout
    files = _files(paths or [Path("rules")])
    if not files:
        print(f"no rule files found in {', '.join(map(str, paths))}", file=out)
        return 1
    failed = False
    for path in files:
        if not path.exists():
            print(f"{path}: no such file", file=out)
            failed = True
            continue
        try:
            ruleset = load_ruleset(path, schema)
        except RuleFileError as e:
            for err in e.errors:
                print(err, file=out)
            failed = True
            continue
        try:
            built, problems, coverage = build_and_test(ruleset)
        except (DurableEngineError, SyntaxError) as e:  # pragma: no cover - a bug of ours
            print(f"{path}: could not compile: {e}", file=out)
            failed = True
            continue
        engines = list(built.values())
        results = {
            eng.name: [[f.id for f in eng.evaluate(case.given).fired] for case in ruleset.tests]
            for eng in engines
        }
        a, b = results["compiled"], results["durable_rules"]
        for case, ra, rb in zip(ruleset.tests, a, b, strict=True):
            if ra != rb:
                problems.append(
                    f"{path}:{case.line}: test {case.name!r}: engines disagree: "
                    f"compiled fired {ra}, durable_rules fired {rb}"
                )
        for eng in engines:
            eng.close()
        covered = set.intersection(*coverage.values()) if coverage else set()
        never = [r for r in ruleset.rules if r.id not in covered]
        for p in problems:
            print(p, file=out)
        t0 = time.perf_counter()
        findings = verify(ruleset)  # errors are already in `problems` (build_and_test)
        elapsed_ms = (time.perf_counter() - t0) * 1000
        for f in findings:
            if f.severity != "error":
                print(f, file=out)
        n_err = sum(f.severity == "error" for f in findings)
        print(
            f"  static check: {n_err} errors, {len(findings) - n_err} warnings "
            f"({elapsed_ms:.1f} ms)",
            file=out,
        )
        n_rules, n_tests = len(ruleset.rules), len(ruleset.tests)
        print(
            f"{path}: {ruleset.name} {ruleset.version} sha256 {ruleset.sha256[:12]}: "
            f"{n_rules} rules, {n_tests} tests, {n_tests * 2 - _failed_cases(problems)} of "
            f"{n_tests * 2} test runs passed (compiled + durable_rules)",
            file=out,
        )
        print(f"  coverage: {n_rules - len(never)}/{n_rules} rules fired by a test", file=out)
        for r in never:
            print(f"  {path}:{r.line}: {r.id}: never fired by any test (add a test)", file=out)
        if problems or never:
            failed = True
    print("FAILED" if failed else "OK", file=out)
    return 1 if failed else 0


def _failed_cases(problems: list[str]) -> int:
    return len({p.split(": ", 2)[1] for p in problems if "test " in p})
