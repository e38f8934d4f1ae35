"""One version of one rule file, built to serve: parsed, type-checked, compiled on every
engine and its tests run on each. A refusal is a RulesetInvalid with analyst-readable errors.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import structlog

from decision_service.decision import RulesetRef
from decision_service.rules.compiled import CompiledEngine
from decision_service.rules.durable import DurableEngine
from decision_service.rules.evaluation import Engine, Evaluation
from decision_service.rules.file_test_runs import run_file_tests
from decision_service.rules.language import RuleFileError, load_ruleset_from_text
from decision_service.rules.ruleset import Ruleset
from decision_service.rules.schema import FactSchema
from decision_service.rules.verify import static_errors

ENGINES: dict[str, type] = {"durable_rules": DurableEngine, "compiled": CompiledEngine}
DEFAULT_ENGINE = "durable_rules"
log = structlog.get_logger("decision_service.rules")


@dataclass(frozen=True)
class RulesetSnapshot:
    """One loaded version of one rule file. Immutable; safe to hold for a whole request."""

    name: str
    version: str
    sha256: str
    source: str
    file: str
    engine_name: str
    engine: Engine  # the configured engine (serves requests)
    ruleset: Ruleset
    engines: Mapping[str, Engine]  # both engines, built and tested
    loaded_at: str

    @property
    def text(self) -> str:
        return self.source

    def evaluate(
        self, facts: Mapping[str, Any], *, trace: bool = True, normalised: bool = False
    ) -> Evaluation:
        return self.engine.evaluate(facts, trace=trace, normalised=normalised)

    def ref(self) -> RulesetRef:
        return RulesetRef(self.name, self.version, self.sha256, self.engine_name)


class RulesetInvalid(Exception):
    """A ruleset failed to load, compile or pass its tests. `errors` are analyst-readable."""

    def __init__(self, file: str, errors: list[str]) -> None:
        self.file = file
        self.errors = errors
        super().__init__(f"{file}: {len(errors)} error(s)\n" + "\n".join(errors))


def build_and_test(
    ruleset: Ruleset,
) -> tuple[dict[str, Engine], list[str], dict[str, set[str]]]:
    """Compile `ruleset` on every engine and run the file's tests on each: the engines, the
    failures (analyst-readable), and the rules each engine's test runs fired."""
    engines: dict[str, Engine] = {}
    failures: list[str] = []
    coverage: dict[str, set[str]] = {}
    failures += [str(f) for f in static_errors(ruleset)]  # overlaps, gaps, dead rules
    try:
        for name, cls in ENGINES.items():
            engines[name] = cls(ruleset)
        for name, eng in engines.items():
            failed, coverage[name] = run_file_tests(eng)
            failures += [str(f) for f in failed]
    except BaseException:
        for eng in engines.values():
            eng.close()
        raise
    return engines, failures, coverage


def build_snapshot(
    text: str, name_for_errors: str, schema: FactSchema, engine: str = DEFAULT_ENGINE
) -> RulesetSnapshot:
    """Parse, type-check, compile on both engines and run the file's tests on both."""
    if engine not in ENGINES:
        raise ValueError(f"unknown rules engine {engine!r} (choose from {', '.join(ENGINES)})")
    try:
        ruleset = load_ruleset_from_text(text, name_for_errors, schema)
    except RuleFileError as e:
        raise RulesetInvalid(name_for_errors, [str(x) for x in e.errors]) from None
    try:
        engines, errors, _coverage = build_and_test(ruleset)
    except Exception as e:  # a construct an engine refused: a refusal, never a crash
        log.exception("rules_build_failed", file=name_for_errors)
        raise RulesetInvalid(
            name_for_errors, [f"{name_for_errors}: cannot build the engines: {e}"]
        ) from None
    if errors:
        for eng in engines.values():
            eng.close()
        raise RulesetInvalid(name_for_errors, errors)
    return RulesetSnapshot(
        name=ruleset.name,
        version=ruleset.version,
        sha256=ruleset.sha256,
        source=text,
        file=name_for_errors,
        engine_name=engine,
        engine=engines[engine],
        ruleset=ruleset,
        engines=engines,
        loaded_at=dt.datetime.now(dt.UTC).isoformat(),
    )
