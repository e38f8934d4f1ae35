"""Rule files in a directory, served as immutable snapshots, hot-reloaded safely.

The directory holds ONE champion ruleset: every file is a version of it (same `ruleset` name,
each with its own `effective_from`; see schedule.py for which is in force when). A file of
another ruleset, two versions starting at the same instant, no version in force now, a file
that is too big, malformed, a symlink out of the directory, or whose tests fail: the reload
is refused with file:line:col messages, and the old snapshots keep serving.

A reload parses and type-checks every file, builds BOTH engines, runs each file's tests on both
and only then swaps the snapshots in with one attribute assignment. A request holds the
snapshot it started with; an old durable ruleset is deleted when its last holder drops it
(reference counting: `weakref.finalize` in DurableEngine), so versions in flight are never
deleted under a request.

One version built and tested is snapshot.py; the checks on challenger files,
challenger_files.py; watching the directory for changes, watching.py.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog

from decision_service.rules.challenger_files import _by_name, challenger_errors
from decision_service.rules.language import RuleFileError, read_rule_text
from decision_service.rules.ruleset import sha256_text
from decision_service.rules.schedule import Schedule, ScheduleError, build_schedule
from decision_service.rules.schema import FactSchema
from decision_service.rules.snapshot import (
    DEFAULT_ENGINE,
    ENGINES,
    RulesetInvalid,
    RulesetSnapshot,
    build_snapshot,
)
from decision_service.rules.watching import WatchesRuleFiles

MAX_RULE_FILES = 100  # versions of the champion kept in rules/ (each is built on both engines)
log = structlog.get_logger("decision_service.rules")


@dataclass(frozen=True)
class ReloadResult:
    ok: bool
    changed: list[str] = field(default_factory=list)  # files (re)built and swapped in
    errors: list[str] = field(default_factory=list)


Snapshot = RulesetSnapshot


class NoRulesetInForce(LookupError):
    """No version of the champion is in force at this instant (only if the clock went back
    before every effective_from: gaps from now on are refused at load)."""


@dataclass(frozen=True)
class _State:
    files: Mapping[str, RulesetSnapshot]  # by file path
    schedule: Schedule[RulesetSnapshot]
    challengers: tuple[RulesetSnapshot, ...] = ()  # `role: challenger` files, by name


class RuleRegistry(WatchesRuleFiles):
    """Serves the champion ruleset of a directory of *.yaml files (or of a single file).

    The constructor loads the files and raises RulesetInvalid if they are not good (unless
    `load=False`); later `reload()` calls never raise for bad files: they return the errors and
    the old snapshots keep serving. `active()` answers the version in force now.
    """

    def __init__(
        self,
        path: Path | str,
        schema: FactSchema,
        engine: str = DEFAULT_ENGINE,
        *,
        load: bool = True,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if engine not in ENGINES:
            raise ValueError(f"unknown rules engine {engine!r} (choose from {', '.join(ENGINES)})")
        self.path = Path(path)
        self.schema = schema
        self.engine = engine
        self.clock = clock
        self._state: _State | None = None  # replaced whole, never mutated
        # (state, start, end, snapshot): the segment of the timeline now is in; a request
        # checks two numbers, and moves to the next segment when its instant has come
        self._current: tuple[_State | None, float, float, RulesetSnapshot | None] = (
            None,
            0.0,
            0.0,
            None,
        )
        self._reload_lock = threading.Lock()
        self.texts: dict[str, str] = {}  # sha256 → source text of every version loaded
        self.watch_errors = 0  # watcher reloads that failed or raised (read by metrics)
        self.last_error: list[str] = []
        self._watch_stop: threading.Event | None = None
        self._watch_thread: threading.Thread | None = None
        if load:
            result = self.reload()
            if not result.ok:
                raise RulesetInvalid(str(path), result.errors)

    def close(self) -> None:
        """Stop watching and drop the snapshots (durable rulesets go when requests finish)."""
        self.stop_watching()
        self._state = None
        self._current = (None, 0.0, 0.0, None)

    def files(self) -> tuple[list[Path], list[str]]:
        """The rule files, and refusals for those that are symlinks out of the directory."""
        if not self.path.is_dir():
            return [self.path], []
        root = self.path.resolve()
        files: list[Path] = []
        refused: list[str] = []
        for p in sorted(self.path.glob("*.yaml")):
            try:
                target = p.resolve(strict=True)
            except (OSError, RuntimeError):
                refused.append(f"{p}:1:1: broken or looping symlink: refused")
                continue
            if not target.is_relative_to(root):
                # never read it: its content must not appear in any message
                refused.append(f"{p}:1:1: symlink to a file outside the rules directory: refused")
                continue
            if target.is_file():
                files.append(p)
        return files, refused

    def reload(self) -> ReloadResult:
        """Rebuild changed files; swap only if every file loads, passes its tests, and the
        versions make a valid schedule. Never raises for a bad file."""
        with self._reload_lock:
            try:
                result = self._reload()
            except Exception as e:  # a bug of ours must not kill a watcher or answer 500
                log.exception("rules_reload_failed")
                result = ReloadResult(False, errors=[f"{self.path}: reload failed: {e!r}"])
            self.last_error = result.errors
            return result

    def _reload(self) -> ReloadResult:
        state = self._state
        by_file = dict(state.files) if state is not None else {}
        new: dict[str, RulesetSnapshot] = {}
        errors: list[str] = []
        built: list[RulesetSnapshot] = []
        files, errors = self.files()
        if not files and not errors:
            return ReloadResult(False, errors=[f"{self.path}: no *.yaml rule files"])
        if len(files) > MAX_RULE_FILES:
            return ReloadResult(
                False,
                errors=[
                    f"{self.path}: {len(files)} rule files; the limit is {MAX_RULE_FILES} "
                    "(remove versions that are past)"
                ],
            )
        for path in files:
            try:
                text = read_rule_text(path)
            except RuleFileError as e:
                errors.append(str(e))
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
            new[str(path)] = snap
        schedule = None
        champions = [s for s in new.values() if s.ruleset.role != "challenger"]
        challengers = tuple(
            sorted((s for s in new.values() if s.ruleset.role == "challenger"), key=_by_name)
        )
        if not errors:
            try:
                serving = state.schedule.name if state is not None else None
                schedule = build_schedule(champions, self.clock(), champion=serving)
            except ScheduleError as e:
                errors += e.errors
            else:
                errors += challenger_errors(challengers, schedule.name)
        if errors or schedule is None:
            for snap in built:
                for eng in snap.engines.values():
                    eng.close()
            return ReloadResult(False, errors=errors)
        for snap in built:
            self.texts[snap.sha256] = snap.source
        self._state = _State(new, schedule, challengers)  # the atomic swap
        # old snapshots are freed (and their durable rulesets deleted) when the last
        # request holding them finishes
        return ReloadResult(True, changed=[s.file for s in built])

    def snapshots(self) -> Mapping[str, RulesetSnapshot]:
        """Every loaded version, by file."""
        state = self._state
        return {} if state is None else state.files

    def challengers(self) -> tuple[RulesetSnapshot, ...]:
        """The challenger rulesets loaded now (run after the champion, never deciding)."""
        state = self._state
        return () if state is None else state.challengers

    def schedule(self) -> Schedule[RulesetSnapshot] | None:
        state = self._state
        return None if state is None else state.schedule

    def active(self, name: str | None = None) -> RulesetSnapshot:
        """The version in force now. Hold it for the whole request."""
        state, start, end, snap = self._current
        now = self.clock()
        if state is not self._state or not start <= now < end or snap is None:
            state = self._state
            if state is None:
                raise NoRulesetInForce("no rules loaded")
            seg = state.schedule.segment_at(now)
            snap = seg.version
            self._current = (state, seg.start, seg.end, snap)
            if snap is None:
                raise NoRulesetInForce(f"no version of {state.schedule.name!r} is in force now")
        if name is not None and name != snap.name:
            raise KeyError(name)
        return snap

    def ready(self) -> bool:
        """A version is in force now and its engine can decide."""
        try:
            snap = self.active()
        except LookupError:
            return False
        return not getattr(snap.engine, "closed", False)

    def versions_status(self) -> list[dict[str, Any]]:
        """Every version in the directory: active, scheduled or past, with its window."""
        schedule = self.schedule()
        return [] if schedule is None else schedule.status(self.clock())

    def text_for(self, sha256: str) -> str | None:
        return self.texts.get(sha256)


def in_force_at(versions: list[RulesetSnapshot], at: dt.datetime) -> RulesetSnapshot | None:
    """The version in force at `at` among `versions` (for `rules check --as-of`)."""
    return build_schedule(versions, at.timestamp(), require_now=False).at(at.timestamp())
