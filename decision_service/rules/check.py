"""`decision-service rules check [PATH...]`: validate, compile on both engines, run file tests."""

from __future__ import annotations

import datetime as dt
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from decision_service.rules.durable import DurableEngineError
from decision_service.rules.language import RuleFileError, load_ruleset
from decision_service.rules.ruleset import Ruleset
from decision_service.rules.schema import FactSchema
from decision_service.rules.snapshot import build_and_test
from decision_service.rules.verify import verify


def _files(paths: list[Path]) -> list[Path]:
    out: list[Path] = []
    for p in paths:
        if p.is_dir():
            out += sorted(p.glob("*.yaml"))
        else:
            out.append(p)
    return out


@dataclass(frozen=True)
class _Version:
    ruleset: Ruleset


def run_check(
    paths: list[Path],
    schema: FactSchema,
    out: TextIO | None = None,
    as_of: dt.datetime | None = None,
) -> int:
    """Check rule files; print actionable errors and per-rule coverage. Returns an exit code.

    The files checked together follow the rules directory's semantics (one champion, each
    version its own effective_from, a version in force now); `as_of` also prints which
    version would be in force at that instant."""
    out = out or sys.stdout
    loaded: list[_Version] = []
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
        loaded.append(_Version(ruleset))
        try:
            built, problems, coverage = build_and_test(ruleset)
        except (DurableEngineError, SyntaxError, Exception) as e:  # pragma: no cover - a bug
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
    champions = [v for v in loaded if v.ruleset.role != "challenger"]
    for v in loaded:
        if v.ruleset.role == "challenger":  # runs beside the champion, never scheduled
            rs = v.ruleset
            print(
                f"{rs.file}: challenger {rs.name} {rs.version}: sample {rs.sample:g}, model "
                f"{rs.model or 'of the champion'}",
                file=out,
            )
    if champions and not _check_schedule(champions, out, as_of):
        failed = True
    print("FAILED" if failed else "OK", file=out)
    return 1 if failed else 0


def _failed_cases(problems: list[str]) -> int:
    return len({p.split(": ", 2)[1] for p in problems if "test " in p})


def _check_schedule(versions: list[_Version], out: TextIO, as_of: dt.datetime | None) -> bool:
    """The directory's rules for the files checked together; the version in force at `as_of`."""
    from decision_service.rules.schedule import ScheduleError, build_schedule, iso

    try:
        schedule = build_schedule(versions, time.time())
    except ScheduleError as e:
        for err in e.errors:
            print(err, file=out)
        if as_of is None:
            return False
        try:
            schedule = build_schedule(versions, as_of.timestamp(), require_now=False)
        except ScheduleError:
            return False
    if as_of is None:
        return True
    seg = schedule.segment_at(as_of.timestamp())
    when = iso(as_of.timestamp())
    if seg.version is None:
        print(f"as of {when}: no version of {schedule.name!r} is in force", file=out)
        return False
    rs = seg.version.ruleset
    until = iso(seg.end) or "further notice"
    print(
        f"as of {when}: {rs.name} {rs.version} ({rs.file}) is in force "
        f"(from {iso(seg.start) or 'the start'} until {until})",
        file=out,
    )
    return True
