"""Running the challengers after the champion: one `challenger_result` row each.

A challenger sees the champion's facts: the same application and, unless it names a model
version of its own, the same pd. It goes through the same rule engines and outcome resolution
(pipeline.evaluate_rules, pipeline.approved_amount): there is no second decision logic here.

It can neither change nor fail a decision: everything it does is caught; an exception becomes
the row's `error` (and a count), never the caller's problem. Which decisions it sees is a pure
function of the decision id and the challenger's name (`sampled`), so a replay re-checks
exactly the decisions that were sampled.
"""

from __future__ import annotations

import contextlib
import hashlib
import operator
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any, Protocol

import msgspec
import structlog

from decision_service.decision import Decision
from decision_service.pipeline import RuleFacts, approved_amount, evaluate_rules
from decision_service.rules.evaluation import Engine
from decision_service.rules.snapshot import RulesetSnapshot
from decision_service.scoring import Scorer

log = structlog.get_logger("decision_service.challengers")
_encode = msgspec.json.Encoder().encode
_CODE = operator.attrgetter("code")
RETRY_S = 30.0  # a model version that failed to load is tried again after this long
MAX_ERROR = 2000  # characters of an exception's text kept in the row


def sampled(decision_id: str, challenger: str, share: float) -> bool:
    """Whether a challenger with this sample share runs on this decision (deterministic)."""
    if share >= 1.0:
        return True
    digest = hashlib.blake2b(f"{challenger}\0{decision_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") < share * 2**64


class ChallengerModels:
    """Model versions named by challengers: each loaded once and kept warm. A version that
    cannot be loaded is remembered as its error (recorded on each decision, retried on warm).

    `load` is the one way a version is loaded (ModelRegistry.scorer): a version the registry
    has loaded already is shared, not loaded twice."""

    def __init__(self, load: Callable[[str], Scorer]) -> None:
        self.load = load
        self._scorers: dict[str, Scorer | Exception] = {}
        self._failed_at: dict[str, float] = {}  # when a version last failed to load
        self._lock = threading.Lock()

    def get(self, version: str) -> Scorer:
        scorer = self._scorers.get(version)
        if scorer is None:
            scorer = self._load(version)
        if isinstance(scorer, Exception):
            if time.monotonic() - self._failed_at.get(version, 0.0) > RETRY_S:
                # fixed on disk meanwhile? try again off the request path (never slows one)
                self._failed_at[version] = time.monotonic()
                threading.Thread(target=self.warm, args=([version],), daemon=True).start()
            raise scorer
        return scorer

    def _load(self, version: str) -> Scorer | Exception:
        with self._lock:
            got = self._scorers.get(version)
            if got is None:
                try:
                    got = self.load(version)
                except Exception as exc:  # recorded on every row of this challenger
                    log.error("challenger_model_unloadable", version=version, error=str(exc))
                    got = RuntimeError(f"model {version} cannot be loaded: {exc}")
                    self._failed_at[version] = time.monotonic()
                self._scorers[version] = got
            return got

    def warm(self, versions: Iterable[str]) -> None:
        """(Re)load the versions challengers name (at start and after each reload)."""
        for version in set(versions):
            with self._lock:
                if isinstance(self._scorers.get(version), Exception):
                    del self._scorers[version]
            self._load(version)


class Contender(Protocol):
    """What a challenger run needs: a live RulesetSnapshot, or one rebuilt by replay."""

    name: str
    version: str
    sha256: str
    engine_name: str
    engine: Engine


def result_row(
    snap: Contender,
    decision: Decision,
    model_version: str,
    model_sha256: str = "",
    *,
    outcome: str | None = None,
    amount: float | None = None,
    risk_band: Any = None,
    pd: float | None = None,
    fired: list[str] | None = None,
    reasons: list[str] | None = None,
    error: str | None = None,
) -> dict[str, Any]:
    """A challenger_result row (without key_id/mac: the store signs it in the commit)."""
    return {
        "decision_id": decision.decision_id,
        "challenger": snap.name,
        "version": snap.version,
        "ruleset_sha256": snap.sha256,
        "engine": snap.engine_name,
        "model_version": model_version,
        "model_sha256": model_sha256,
        "outcome": outcome,
        "approved_amount": amount,
        "risk_band": None if risk_band is None else str(risk_band),
        "pd": pd,
        "fired_json": _encode(fired or []).decode(),
        "reasons_json": _encode(reasons or []).decode(),
        "error": error,
    }


def challenge(
    snap: Contender,
    app: Any,
    decision: Decision,
    scorer: Callable[[], Scorer] | None,
    seen: RuleFacts | None = None,
) -> dict[str, Any]:
    """One challenger on one decision's facts (`seen`: as the champion's rules saw them, see
    pipeline.evaluate_rules). Raises nothing it can catch."""
    own = snap.engine.ruleset.model
    champion = decision.trace.model
    model_version = own or champion.version
    model_sha256 = "" if own else champion.sha256
    try:
        if scorer is None:
            pd = decision.pd  # the champion's facts exactly
        else:
            model = scorer()
            model_sha256 = model.card.model_sha256
            pd = model.predict(model.features(app))
        result = evaluate_rules(app, pd, snap.engine, trace=False, seen=seen)
        return result_row(
            snap,
            decision,
            model_version,
            model_sha256,
            outcome=result.outcome,
            amount=approved_amount(result.outcome, app.amount, result.max_amount),
            risk_band=result.derived.get("risk_band"),
            pd=pd,
            fired=result.ids(),
            reasons=list(map(_CODE, result.reasons)),
        )
    except Exception as exc:  # a challenger never fails a decision: recorded, counted
        text = f"{type(exc).__name__}: {exc}"[:MAX_ERROR]
        return result_row(snap, decision, model_version, model_sha256, error=text)


class Shadow:
    """The challengers of the live registry, run after the champion on its decisions."""

    def __init__(self, models: ChallengerModels | None = None) -> None:
        self.models = models
        self.errors = 0  # challenger evaluations that raised (read by /metrics)
        self.runs = 0
        self.on_error: Callable[[str], None] | None = None  # e.g. a Prometheus counter

    def _scorer(self, version: str) -> Callable[[], Scorer]:
        """The model version a challenger names (it has its own pd), loaded on first use."""
        models = self.models
        if models is None:
            return _no_models(version)
        return lambda: models.get(version)

    def run(
        self,
        challengers: tuple[RulesetSnapshot, ...],
        app: Any,
        decision: Decision,
        seen: RuleFacts | None = None,
    ) -> list[dict[str, Any]]:
        """The rows of every challenger sampled for this decision (none: an empty list)."""
        if not challengers:
            return []
        rows: list[dict[str, Any]] = []
        now = time.time()
        for snap in challengers:  # a loop without calls where it can: on every decision
            try:
                ruleset = snap.ruleset
                share = ruleset.sample
                if share < 1.0 and not sampled(decision.decision_id, snap.name, share):
                    continue
                # a challenger runs inside its own [effective_from, effective_to)
                start, end = ruleset.window  # unbounded: -inf / inf
                if not start <= now < end:
                    continue
                # None: the champion's pd
                scorer = None if ruleset.model is None else self._scorer(ruleset.model)
                row = challenge(snap, app, decision, scorer, seen)
            except Exception as exc:  # pragma: no cover - challenge() catches its own
                row = result_row(snap, decision, "", error=f"{type(exc).__name__}: {exc}")
            self.runs += 1
            if row["error"] is not None:
                self.errors += 1
                if self.on_error is not None:  # a metric must not fail a decision either
                    with contextlib.suppress(Exception):
                        self.on_error(snap.name)
            rows.append(row)
        return rows


def _no_models(version: str) -> Callable[[], Scorer]:
    def fail() -> Scorer:
        raise RuntimeError(f"model {version}: no model directory configured for challengers")

    return fail
