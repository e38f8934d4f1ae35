"""Replay: re-decide a stored decision with its own model and ruleset versions, and compare.

The model comes from models/<name>/<version>/ (its sha256 must be the recorded one); the
ruleset is rebuilt from the text kept in the audit store under its sha256, on the recorded
engine. Ids, clock and trace id are the recorded ones, so only a real difference shows.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec

from decision_service.audit import AuditStore, StoredDecision, challenger_records
from decision_service.audit.consistency import disagreements, indexed_values
from decision_service.challengers.shadow import challenge
from decision_service.challengers.stored import results_for
from decision_service.decision import Decision
from decision_service.pipeline import decide, versions
from decision_service.rules.evaluation import Engine
from decision_service.rules.language import RuleFileError, load_ruleset_from_text
from decision_service.rules.snapshot import ENGINES
from decision_service.scoring import Scorer, application_type
from decision_service.scoring.application import decode_application
from decision_service.service import card_schema

_IGNORED = {("trace", "timings_us")}  # measured, not decided


class Difference(msgspec.Struct, frozen=True):
    field: str  # JSON path
    recorded: Any
    replayed: Any


class ReplayResult(msgspec.Struct, frozen=True):
    decision_id: str
    identical: bool
    differences: list[Difference]
    model_version: str
    ruleset_version: str
    engine: str
    challengers: int = 0  # challenger results re-checked (differences under $challengers.*)


@dataclass(frozen=True)
class _Recorded:
    """A challenger version as recorded: what challengers.shadow.challenge needs."""

    name: str
    version: str
    sha256: str
    engine_name: str
    engine: Engine


class ReplayError(Exception):
    """The recorded versions cannot be rebuilt (model directory or ruleset text missing)."""


def differences(recorded: Any, replayed: Any, path: str = "$") -> list[Difference]:
    if isinstance(recorded, dict) and isinstance(replayed, dict):
        out: list[Difference] = []
        for key in recorded.keys() | replayed.keys():
            if (path.rsplit(".", 1)[-1], key) in _IGNORED:
                continue
            out += differences(recorded.get(key), replayed.get(key), f"{path}.{key}")
        return sorted(out, key=lambda d: d.field)
    if isinstance(recorded, list) and isinstance(replayed, list) and len(recorded) == len(replayed):
        return [
            d
            for i, (a, b) in enumerate(zip(recorded, replayed, strict=True))
            for d in differences(a, b, f"{path}[{i}]")
        ]
    return [] if recorded == replayed else [Difference(path, recorded, replayed)]


class Replayer:
    """Rebuilds and caches every (model version) and (ruleset sha256, engine) it meets."""

    def __init__(self, models_dir: Path, store: AuditStore) -> None:
        self.models_dir = models_dir
        self.store = store
        self._scorers: dict[tuple[str, str], Scorer] = {}
        self._engines: dict[tuple[str, str, str], Engine] = {}

    def scorer(self, name: str, version: str, sha256: str) -> Scorer:
        key = (name, version)
        if key not in self._scorers:
            path = self.models_dir / name / version
            try:
                self._scorers[key] = Scorer.load(path)
            except Exception as exc:
                raise ReplayError(f"model {name} {version}: {exc}") from exc
        scorer = self._scorers[key]
        if scorer.card.model_sha256 != sha256:
            raise ReplayError(
                f"model {name} {version} in {self.models_dir} has sha256 "
                f"{scorer.card.model_sha256}, the decision recorded {sha256}"
            )
        return scorer

    def engine(self, scorer: Scorer, sha256: str, kind: str) -> Engine:
        key = (scorer.card.version, sha256, kind)
        if key not in self._engines:
            kept = self.store.ruleset_text(sha256)
            if kept is None:
                raise ReplayError(f"ruleset text {sha256} is not in the audit store")
            try:
                ruleset = load_ruleset_from_text(
                    kept.text, f"{kept.name}@{sha256[:12]}", card_schema(scorer.card)
                )
            except RuleFileError as exc:  # e.g. a text kept before a language limit existed
                raise ReplayError(f"ruleset text {sha256} no longer loads: {exc}") from exc
            self._engines[key] = ENGINES[kind](ruleset)
        return self._engines[key]

    def replay(self, stored: StoredDecision) -> ReplayResult:
        recorded = stored.decision()
        scorer = self.scorer(stored.model_name, stored.model_version, stored.model_sha256)
        engine = self.engine(scorer, stored.ruleset_sha256, stored.engine)
        app = decode_application(application_type(scorer.card), stored.request_json)
        explained = recorded.outcome == "approve" and any(
            r.source == "model" for r in recorded.reasons
        )
        replayed: Decision = decide(
            app,
            scorer,
            engine,
            versions(scorer, engine, stored.ruleset_sha256),
            explain=explained,
            decision_id=recorded.decision_id,
            decided_at=recorded.decided_at,
            trace_id=recorded.trace_id,
        )
        diffs = differences(msgspec.to_builtins(recorded), msgspec.to_builtins(replayed))
        # one record, one truth: an indexed column (what filters and reports read) that says
        # something else than the replayed decision is a difference too
        replayed_index = indexed_values(msgspec.json.encode(replayed))
        diffs += [
            Difference(f"$columns.{name}", column, value)
            for name, column, value in disagreements(msgspec.structs.asdict(stored), replayed_index)
        ]
        rows = results_for(self.store.reader, stored.decision_id)
        for row in rows:
            diffs += self.recheck_challenger(row, app, recorded, scorer)
        return ReplayResult(
            decision_id=stored.decision_id,
            identical=not diffs,
            differences=diffs,
            model_version=stored.model_version,
            ruleset_version=stored.ruleset_version,
            engine=stored.engine,
            challengers=len(rows),
        )

    def recheck_challenger(
        self, row: dict[str, Any], app: Any, recorded: Decision, scorer: Scorer
    ) -> list[Difference]:
        """Re-run the challenger version recorded (its text kept by sha256) on the recorded
        decision's facts, through the same code as live (challengers.shadow.challenge)."""
        where = f"$challengers.{row['challenger']}"
        diffs: list[Difference] = []
        if challenger_records.check(self.store.keyring, row) is False:
            diffs.append(Difference(f"{where}.mac", row["mac"], "does not verify"))
        engine = self.engine(scorer, row["ruleset_sha256"], row["engine"])
        own_model = engine.ruleset.model
        model_scorer = None
        if own_model is not None:
            name = recorded.trace.model.name

            def model_scorer() -> Scorer:
                return self.scorer(name, own_model, row["model_sha256"])

        contender = _Recorded(
            row["challenger"], row["version"], row["ruleset_sha256"], row["engine"], engine
        )
        again = challenge(contender, app, recorded, model_scorer)
        if row["error"] is not None:  # it raised live: it must raise again (texts may vary)
            if again["error"] is None:
                diffs.append(Difference(f"{where}.error", row["error"], None))
            return diffs
        for column in challenger_records.MACED_COLUMNS:
            if again[column] != row[column]:
                diffs.append(Difference(f"{where}.{column}", row[column], again[column]))
        return diffs

    def close(self) -> None:
        for engine in self._engines.values():
            engine.close()
