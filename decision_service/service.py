"""The composition root: one place that builds the service from settings.

Model, rules, audit store and tracer are built here and handed to the API and the CLI; nothing
else reads settings or holds a module-level singleton.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import msgspec
import structlog
import uuid_utils
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import Tracer

from decision_service.audit import AuditStore, AuditUnavailable
from decision_service.decision import Decision
from decision_service.observability import configure_tracing
from decision_service.pipeline import Versions, decide, versions
from decision_service.rules.registry import ReloadResult, RuleRegistry, Snapshot
from decision_service.rules.schema import FactSchema
from decision_service.scoring import ModelCard, Scorer
from decision_service.settings import Settings


def card_schema(card: ModelCard) -> FactSchema:
    """The facts rules may use: the card's application fields and the model's outputs."""
    return FactSchema.from_card_features(msgspec.to_builtins(card.request_fields))


log = structlog.get_logger("decision_service.service")


def new_decision_id() -> str:
    return str(uuid_utils.uuid7())


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


@dataclass
class Service:
    """Everything a decision needs, loaded and verified."""

    settings: Settings
    scorer: Scorer
    rules: RuleRegistry
    store: AuditStore
    tracing: TracerProvider
    tracer: Tracer
    _versions: dict[str, Versions] = field(default_factory=dict)
    _remembered: set[str] = field(default_factory=set)

    @classmethod
    def build(cls, settings: Settings) -> Service:
        scorer = Scorer.load(settings.model_dir)
        rules = RuleRegistry(
            settings.rules_dir, card_schema(scorer.card), engine=settings.rules_engine
        )
        store = AuditStore.open(
            settings.database_url, sqlite_synchronous=settings.sqlite_synchronous
        )
        tracing = configure_tracing(settings)
        return cls(settings, scorer, rules, store, tracing, tracing.get_tracer("decision_service"))

    async def start(self) -> None:
        await self.store.start()
        self.remember_rules(self.rules.active())
        if self.settings.rules_watch:
            self.rules.start_watching(on_result=self._log_reload)

    async def stop(self) -> None:
        self.rules.close()
        await self.store.close()
        self.tracing.shutdown()  # flush the spans still queued for export

    def remember_rules(self, snap: Snapshot) -> None:
        """Keep the ruleset text by sha256 so every decision made with it can be replayed."""
        if snap.sha256 not in self._remembered:
            try:
                self.store.remember_ruleset(snap.sha256, snap.name, snap.version, snap.text)
            except Exception as exc:  # no decision may cite a ruleset the log cannot replay
                raise AuditUnavailable(f"cannot keep ruleset {snap.sha256}: {exc}") from exc
            self._remembered.add(snap.sha256)

    def refs(self, snap: Snapshot) -> Versions:
        refs = self._versions.get(snap.sha256)
        if refs is None:
            self.remember_rules(snap)  # first decision on a new version: its text is kept first
            refs = self._versions[snap.sha256] = versions(self.scorer, snap.engine, snap.sha256)
        return refs

    async def reload_rules(self) -> tuple[bool, list[str]]:
        result = await asyncio.to_thread(self.rules.reload)
        self._log_reload(result)
        if result.ok:
            with contextlib.suppress(AuditUnavailable):  # retried by the first decision
                self.remember_rules(self.rules.active())
        return result.ok, result.errors

    def _log_reload(self, result: ReloadResult) -> None:
        if result.ok:
            log.info("rules_reloaded", changed=result.changed, active=self.rules_status())
        else:
            log.error("rules_rejected", errors=result.errors, active=self.rules_status())

    def rules_status(self) -> dict[str, Any]:
        snap = self.rules.active()
        return {
            "name": snap.name,
            "version": snap.version,
            "sha256": snap.sha256,
            "engine": snap.engine_name,
            "file": snap.file,
            "loaded_at": snap.loaded_at,
            "rules": [
                {"id": r.id, "stage": r.stage, "priority": r.priority, "when": r.when.text}
                for r in snap.ruleset.rules
            ],
        }

    async def readiness(self) -> dict[str, bool]:
        try:
            rules_ok = self.rules.active() is not None
        except LookupError:
            rules_ok = False
        return {
            "model": self.scorer is not None,
            "rules": rules_ok,
            "audit_store": await self.store.ping() and self.store.healthy(),
        }

    def decide(
        self,
        app: object,
        *,
        explain: bool = False,
        trace_id: str | None = None,
        timings_us: dict[str, int] | None = None,
    ) -> Decision:
        snap = self.rules.active()  # held for the whole decision, whatever reloads meanwhile
        return decide(
            app,
            self.scorer,
            snap.engine,
            self.refs(snap),
            explain=explain or self.settings.explain == "always",
            decision_id=new_decision_id(),
            decided_at=utc_now(),
            trace_id=trace_id,
            timings_us=timings_us,
        )
