"""Rule files in a directory, served as immutable snapshots, hot-reloaded safely.

A reload parses and type-checks every file, builds BOTH engines, runs each file's tests on both
and only then swaps the snapshots in with one attribute assignment. A bad file is reported and
the old snapshots keep serving. A request holds the snapshot it started with; an old durable
ruleset is deleted when its last holder drops it (reference counting: `weakref.finalize` in
DurableEngine), so versions in flight are never deleted under a request.
"""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from decision_service.decision import RulesetRef
from decision_service.rules.compiled import CompiledEngine
from decision_service.rules.durable import DurableEngine
from decision_service.rules.evaluation import Engine, Evaluation, run_file_tests
from decision_service.rules.language import (
    RuleFileError,
    Ruleset,
    load_ruleset_from_text,
    sha256_text,
)
from decision_service.rules.schema import FactSchema
from decision_service.rules.verify import static_errors

ENGINES: dict[str, type] = {"durable_rules": DurableEngine, "compiled": CompiledEngine}
DEFAULT_ENGINE = "durable_rules"


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

    def evaluate(self, facts: Mapping[str, Any]) -> Evaluation:
        return self.engine.evaluate(facts)

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
    engines, errors, _coverage = build_and_test(ruleset)
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


@dataclass(frozen=True)
class ReloadResult:
    ok: bool
    changed: list[str] = field(default_factory=list)  # ruleset names swapped in
    errors: list[str] = field(default_factory=list)


Snapshot = RulesetSnapshot


class RuleRegistry:
    """Serves the rulesets of a directory of *.yaml files (or a single file).

    The constructor loads the files and raises RulesetInvalid if they are not good (unless
    `load=False`); later `reload()` calls never raise for bad files: they return the errors and
    the old snapshots keep serving.
    """

    def __init__(
        self,
        path: Path | str,
        schema: FactSchema,
        engine: str = DEFAULT_ENGINE,
        *,
        load: bool = True,
    ) -> None:
        if engine not in ENGINES:
            raise ValueError(f"unknown rules engine {engine!r} (choose from {', '.join(ENGINES)})")
        self.path = Path(path)
        self.schema = schema
        self.engine = engine
        self._snapshots: Mapping[str, RulesetSnapshot] = {}  # replaced whole, never mutated
        self._reload_lock = threading.Lock()
        self.texts: dict[str, str] = {}  # sha256 → source text of every version loaded
        self._watch_stop: threading.Event | None = None
        self._watch_thread: threading.Thread | None = None
        if load:
            result = self.reload()
            if not result.ok:
                raise RulesetInvalid(str(path), result.errors)

    def close(self) -> None:
        """Stop watching and drop the snapshots (durable rulesets go when requests finish)."""
        self.stop_watching()
        self._snapshots = {}

    def files(self) -> list[Path]:
        if self.path.is_dir():
            return sorted(p for p in self.path.glob("*.yaml") if p.is_file())
        return [self.path]

    def reload(self) -> ReloadResult:
        """Rebuild changed files; swap only if every file loads and passes its tests."""
        with self._reload_lock:
            current = self._snapshots
            by_file = {s.file: s for s in current.values()}
            new: dict[str, RulesetSnapshot] = {}
            errors: list[str] = []
            changed: list[str] = []
            built: list[RulesetSnapshot] = []
            files = self.files()
            if not files:
                return ReloadResult(False, errors=[f"{self.path}: no *.yaml rule files"])
            for path in files:
                try:
                    text = path.read_bytes().decode("utf-8")
                except (OSError, UnicodeDecodeError) as e:
                    errors.append(f"{path}: cannot read: {e}")
                    continue
                old = by_file.get(str(path))
                if old is not None and old.sha256 == sha256_text(text):
                    snap = old
                else:
                    try:
                        snap = build_snapshot(text, str(path), self.schema, self.engine)
                    except RulesetInvalid as e:
                        errors += e.errors
                        continue
                    built.append(snap)
                    changed.append(snap.name)
                if snap.name in new:
                    errors.append(
                        f"{path}: ruleset {snap.name!r} is also defined in {new[snap.name].file}"
                    )
                    continue
                new[snap.name] = snap
            if errors:
                for snap in built:
                    for eng in snap.engines.values():
                        eng.close()
                return ReloadResult(False, errors=errors)
            for snap in built:
                self.texts[snap.sha256] = snap.source
            self._snapshots = new  # the atomic swap
            # old snapshots are freed (and their durable rulesets deleted) when the last
            # request holding them finishes
            return ReloadResult(True, changed=changed)

    def snapshots(self) -> Mapping[str, RulesetSnapshot]:
        return self._snapshots

    def active(self, name: str | None = None) -> RulesetSnapshot:
        """The current snapshot (of `name`, or of the only ruleset). Hold it for the request."""
        snaps = self._snapshots
        if name is not None:
            return snaps[name]
        if len(snaps) != 1:
            raise LookupError(f"{len(snaps)} rulesets loaded; name one of {sorted(snaps)}")
        return next(iter(snaps.values()))

    def text_for(self, sha256: str) -> str | None:
        return self.texts.get(sha256)

    # -- file watching -------------------------------------------------------------------------
    def start_watching(self, on_result=None) -> threading.Thread:
        """Reload on every change to the rule files, from a daemon thread."""
        import watchfiles

        if self._watch_thread is not None:
            return self._watch_thread
        stop = threading.Event()

        def run() -> None:
            for _changes in watchfiles.watch(
                self.path, stop_event=stop, watch_filter=_yaml_filter, debounce=200
            ):
                result = self.reload()
                if on_result is not None:
                    on_result(result)

        self._watch_stop = stop
        self._watch_thread = threading.Thread(target=run, name="rules-watch", daemon=True)
        self._watch_thread.start()
        return self._watch_thread

    def stop_watching(self) -> None:
        if self._watch_stop is not None:
            self._watch_stop.set()
        if self._watch_thread is not None:
            self._watch_thread.join(timeout=5)
        self._watch_stop = self._watch_thread = None


def _yaml_filter(_change: Any, path: str) -> bool:
    return path.endswith(".yaml")
