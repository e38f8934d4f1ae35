"""The model registry: which version serves live traffic, as a record in the audit database.

The `model_event` table is the log (promote, rollback, retire: who, when, from → to); the live
version is derived from it, and with no record it is the settings' default version
(models/<name>/DEFAULT). Every worker and replica runs a `ModelRegistry` that polls the log
(every `poll_interval` seconds, 1 s by default) and swaps its active `Scorer` with one attribute
assignment once the new version is loaded: a request that took `active()` keeps that scorer to
the end, so in-flight decisions finish on the version they started with.

- promote: gated (models/promotion.yaml); never a retired version.
- rollback: back to the version that served before the current one (skipping retired ones);
  containment, so not gated.
- retire: the version never serves live traffic again (not the live one: roll back first);
  replay still loads it from models/.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import msgspec
import sqlalchemy as sa
import structlog

from decision_service.audit.engine import make_engine
from decision_service.audit.tables import create_tables, model_event_table
from decision_service.scoring.card import ModelCardError, load_card
from decision_service.scoring.promotion import GateResult, evaluate_gate, load_policy

if TYPE_CHECKING:
    from decision_service.scoring.scorer import Scorer  # imported when a version loads
    from decision_service.settings import Settings

log = structlog.get_logger("decision_service.models")
Action = Literal["promote", "rollback", "retire"]


class RegistryError(Exception):
    """A registry change was refused; `status` is the HTTP status that says why."""

    def __init__(self, message: str, status: int = 409, gate: GateResult | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.gate = gate


class ModelEvent(msgspec.Struct, frozen=True):
    seq: int
    at: str
    action: str
    from_version: str | None
    to_version: str
    actor: str
    reason: str | None = None


class RegistryState(msgspec.Struct, frozen=True):
    live: str
    default: str
    stack: list[str]  # versions that served, oldest first; rollback pops
    retired: list[str]
    events: list[ModelEvent]

    @classmethod
    def from_events(cls, default: str, events: list[ModelEvent]) -> RegistryState:
        stack, retired = [default], []
        for e in events:
            if e.action == "promote":
                stack.append(e.to_version)
            elif e.action == "rollback":
                while stack and stack[-1] != e.to_version:
                    stack.pop()
                if not stack:
                    stack = [e.to_version]
            elif e.action == "retire":
                retired.append(e.to_version)
        return cls(stack[-1], default, stack, retired, events)

    def rollback_target(self) -> str | None:
        """The version that served before the live one, skipping retired versions."""
        for version in reversed(self.stack[:-1]):
            if version != self.live and version not in self.retired:
                return version
        return None


def version_key(version: str) -> tuple[int, ...]:
    try:
        return tuple(int(x) for x in version.split("."))
    except ValueError:
        return (-1,)


class ModelVersion(msgspec.Struct, frozen=True):
    version: str
    status: str  # live | retired | available | invalid
    sha256: str | None
    test_auc: float | None
    features: int | None
    created: str | None
    error: str | None = None


def _now() -> datetime:
    return datetime.now(UTC)


class ModelRegistry:
    """Live-model selection for one process: `active()` is a plain attribute read."""

    def __init__(
        self,
        models_dir: Path,
        model_name: str,
        default_version: str,
        database_url: str,
        *,
        policy_path: Path | None = None,
        poll_interval: float = 1.0,
        engine: sa.Engine | None = None,
        on_switch: Callable[[Scorer, Scorer | None], None] | None = None,
    ) -> None:
        self.models_dir = models_dir
        self.model_name = model_name
        self.default_version = default_version
        self.policy_path = policy_path or models_dir / "promotion.yaml"
        self.poll_interval = poll_interval
        self.engine = engine or make_engine(database_url)
        self.on_switch = on_switch
        create_tables(self.engine)
        self._scorers: dict[str, Scorer] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._state = self._read_state()
        self._active: Scorer | None = None  # loaded on first use (the CLI never needs it)

    @classmethod
    def from_settings(cls, settings: Settings, **kwargs: Any) -> ModelRegistry:
        """From the service's Settings: default = the version settings resolve to."""
        return cls(
            settings.models_dir,
            settings.model_name,
            settings.model_dir.name,
            settings.database_url,
            **kwargs,
        )

    # ---- serving ---------------------------------------------------------------------------
    def active(self) -> Scorer:
        """The scorer serving live traffic now. Hold it for the whole decision."""
        scorer = self._active
        if scorer is None:
            scorer = self._active = self.scorer(self._state.live)
        return scorer

    def scorer(self, version: str) -> Scorer:
        """Any version by name, loaded once (replay and challengers may use retired ones)."""
        scorer = self._scorers.get(version)
        if scorer is None:
            with self._lock:
                scorer = self._scorers.get(version)
                if scorer is None:
                    from decision_service.scoring.scorer import Scorer

                    scorer = Scorer.load(self.models_dir / self.model_name / version)
                    self._scorers[version] = scorer
        return scorer

    def state(self) -> RegistryState:
        return self._state

    def refresh(self) -> bool:
        """Read the log; switch the active scorer if the live version changed. True if it did."""
        state = self._read_state()
        self._state = state
        if self._active is None or state.live == self._active.card.version:
            return False
        new = self.scorer(state.live)  # loaded before the swap: requests never wait for it
        old, self._active = self._active, new
        log.info("model_switched", from_version=old.card.version, to_version=state.live)
        if self.on_switch is not None:
            self.on_switch(new, old)
        return True

    def start_polling(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._poll, name="model-registry", daemon=True)
            self._thread.start()

    def _poll(self) -> None:
        while not self._stop.wait(self.poll_interval):
            try:
                self.refresh()
            except Exception as exc:  # store down or files missing: keep serving what we have
                log.error("model_registry_poll_failed", error=str(exc))

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self.engine.dispose()

    # ---- the log -----------------------------------------------------------------------------
    def _events(self, conn: sa.Connection) -> list[ModelEvent]:
        return _events(conn, self.model_name)

    def _read_state(self) -> RegistryState:
        with self.engine.connect() as conn:
            return RegistryState.from_events(self.default_version, self._events(conn))

    def _append(
        self,
        action: Action,
        to_version: str,
        actor: str,
        reason: str | None,
        check: Callable[[RegistryState], str | None],
    ) -> ModelEvent:
        """Check against the state read in the same transaction, then append; a concurrent
        change makes the (model, seq) insert fail instead of both succeeding."""
        try:
            with self.engine.begin() as conn:
                events = self._events(conn)
                state = RegistryState.from_events(self.default_version, events)
                to_version = check(state) or to_version
                event = ModelEvent(
                    seq=(events[-1].seq + 1) if events else 1,
                    at=_now().isoformat().replace("+00:00", "Z"),
                    action=action,
                    from_version=state.live,
                    to_version=to_version,
                    actor=actor,
                    reason=reason,
                )
                conn.execute(
                    model_event_table.insert().values(
                        model_name=self.model_name,
                        **msgspec.structs.asdict(event)
                        | {"at": datetime.fromisoformat(event.at.replace("Z", "+00:00"))},
                    )
                )
        except sa.exc.IntegrityError as exc:
            raise RegistryError(
                "another model change was recorded at the same time; retry"
            ) from exc
        log.info("model_event", **msgspec.structs.asdict(event))
        with contextlib.suppress(Exception):
            self.refresh()  # this process follows at once; the others within poll_interval
        return event

    # ---- operations ------------------------------------------------------------------------
    def versions(self) -> list[str]:
        base = self.models_dir / self.model_name
        found = [p.name for p in base.iterdir() if p.is_dir()] if base.is_dir() else []
        return sorted(found, key=version_key)

    def gate(self, version: str) -> GateResult:
        return evaluate_gate(
            self.models_dir / self.model_name / version, load_policy(self.policy_path)
        )

    def _known(self, version: str) -> None:
        if version not in self.versions():
            raise RegistryError(f"no model version {version} under {self.models_dir}", 404)

    def promote(self, version: str, actor: str, reason: str | None = None) -> ModelEvent:
        self._known(version)
        gate = self.gate(version)
        if not gate.passed:
            failed = "; ".join(f"{c.name}: {c.detail}" for c in gate.failed)
            raise RegistryError(f"promotion gate refused {version}: {failed}", 422, gate)

        def check(state: RegistryState) -> None:
            if version in state.retired:
                raise RegistryError(f"{version} is retired and never serves live traffic")
            if version == state.live:
                raise RegistryError(f"{version} is already live")

        self.scorer(version)  # load (and verify) before recording: workers will need it
        return self._append("promote", version, actor, reason, check)

    def rollback(self, actor: str, reason: str | None = None) -> ModelEvent:
        def check(state: RegistryState) -> str:
            target = state.rollback_target()
            if target is None:
                raise RegistryError(f"nothing to roll back to: {state.live} is the first version")
            return target

        return self._append("rollback", "", actor, reason, check)

    def retire(self, version: str, actor: str, reason: str | None = None) -> ModelEvent:
        self._known(version)

        def check(state: RegistryState) -> None:
            if version in state.retired:
                raise RegistryError(f"{version} is already retired")
            if version == state.live:
                raise RegistryError(
                    f"{version} is live: promote another version or roll back before retiring it"
                )

        return self._append("retire", version, actor, reason, check)

    def describe(self) -> list[ModelVersion]:
        state = self._state
        out = []
        for version in self.versions():
            status = "live" if version == state.live else "available"
            if version in state.retired:
                status = "retired"
            try:
                card = load_card(self.models_dir / self.model_name / version)
            except ModelCardError as exc:
                out.append(ModelVersion(version, "invalid", None, None, None, None, str(exc)))
                continue
            out.append(
                ModelVersion(
                    version,
                    status,
                    card.model_sha256,
                    card.metrics.get("test", {}).get("auc"),
                    len(card.features),
                    card.created,
                )
            )
        return out


def _events(conn: sa.Connection, model_name: str) -> list[ModelEvent]:
    t = model_event_table
    rows = conn.execute(
        sa.select(t).where(t.c.model_name == model_name).order_by(t.c.seq)
    ).mappings()
    return [
        ModelEvent(
            r["seq"],
            r["at"].isoformat().replace("+00:00", "Z"),
            r["action"],
            r["from_version"],
            r["to_version"],
            r["actor"],
            r["reason"],
        )
        for r in rows
    ]


def read_state(engine: sa.Engine, model_name: str, default: str) -> RegistryState:
    """The registry's state from its log in an existing database, creating nothing (batch and
    backtest follow the live version without a registry of their own)."""
    if not sa.inspect(engine).has_table(model_event_table.name):
        return RegistryState.from_events(default, [])
    with engine.connect() as conn:
        return RegistryState.from_events(default, _events(conn, model_name))
