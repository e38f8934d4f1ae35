"""The composition root: ``bootstrap(settings)`` builds everything, for the API and the CLI.

Model, rules, audit store, tracer and the deciding use case (deciding.py) are built here from
one settings object; ``Service`` holds them and runs their lifecycle (start, stop, rule
reloads, readiness). Nothing else reads settings or holds a module-level singleton.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import structlog
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import Tracer

from decision_service.audit import AuditStore, AuditUnavailable
from decision_service.audit_store import open_store
from decision_service.challengers.shadow import ChallengerModels, Shadow
from decision_service.deciding import Deciding, KnownRulesets
from decision_service.decision import Decision
from decision_service.observability import configure_tracing
from decision_service.rules.registry import ReloadResult, RuleRegistry
from decision_service.rules.schema import card_schema
from decision_service.scoring import Scorer
from decision_service.scoring.registry import ModelRegistry
from decision_service.settings import Settings

log = structlog.get_logger("decision_service.service")


@dataclass
class Service:
    """Everything a decision needs, loaded and verified, and its lifecycle."""

    settings: Settings
    models: ModelRegistry
    rules: RuleRegistry
    store: AuditStore
    tracing: TracerProvider
    tracer: Tracer
    rulesets: KnownRulesets
    deciding: Deciding
    _rules_seen: dict[str, Any] = field(default_factory=dict)  # for change_log's "before"
    # Told of every reload (source "http" or "watch"), after it is logged: metrics count it.
    on_reload: Callable[[str, ReloadResult], None] | None = None

    @property
    def scorer(self) -> Scorer:
        """The live model now (the registry's); a decision takes it once and keeps it."""
        return self.models.active()

    async def start(self) -> None:
        await self.store.start()
        await asyncio.to_thread(self.models.active)  # loaded before the first request
        self.models.start_polling()
        self.rulesets.remember(self.rules.active())
        self._rules_seen = self._rules_version()
        if self.settings.rules_watch:
            self.rules.start_watching(on_result=self._watched)

    async def stop(self) -> None:
        self.rules.close()
        await asyncio.to_thread(self.models.close)
        await self.store.close()
        self.tracing.shutdown()  # flush the spans still queued for export

    async def reload_rules(self, actor: str = "anonymous") -> tuple[bool, list[str]]:
        result = await asyncio.to_thread(self.rules.reload)
        await asyncio.to_thread(self._log_reload, result, actor, "http")
        if result.ok:
            with contextlib.suppress(AuditUnavailable):  # retried by the first decision
                self.rulesets.remember(self.rules.active())
            shadow = self.deciding.shadow
            if shadow is not None and shadow.models is not None:  # challenger models, warm
                versions = [c.ruleset.model for c in self.rules.challengers() if c.ruleset.model]
                await asyncio.to_thread(shadow.models.warm, versions)
        return result.ok, result.errors

    # Kept for callers written before bootstrap/deciding (batch, challengers on other branches).
    @classmethod
    def build(cls, settings: Settings) -> Service:
        return bootstrap(settings)

    def decide(self, app: Any, **options: Any) -> Decision:
        """A decision, not recorded: see ``Deciding.decide``."""
        return self.deciding.decide(app, **options)

    def _watched(self, result: ReloadResult) -> None:
        self._log_reload(result, "file-watch", "watch")

    def _log_reload(self, result: ReloadResult, actor: str, source: str) -> None:
        # What is live, never the rules' text (a ruleset may hold thousands of rules).
        if result.ok:
            log.info("rules_reloaded", source=source, changed=result.changed, **self.rules_label())
        else:
            log.error("rules_rejected", source=source, errors=result.errors, **self.rules_label())
        self._record_reload(result, actor)
        if self.on_reload is not None:
            self.on_reload(source, result)

    def rules_label(self) -> dict[str, Any]:
        """The live ruleset in a few fields, for log lines."""
        snap = self.rules.active()
        return {
            "ruleset": snap.name,
            "ruleset_version": snap.version,
            "ruleset_sha256": snap.sha256,
            "rule_count": len(snap.ruleset.rules),
        }

    def _rules_version(self) -> dict[str, Any]:
        snap = self.rules.active()
        return {"name": snap.name, "version": snap.version, "sha256": snap.sha256}

    def _record_reload(self, result: ReloadResult, actor: str) -> None:
        """change_log: who reloaded the rules, from which version to which (or what failed)."""
        before = self._rules_seen or None
        after: dict[str, Any] = self._rules_version()
        if not result.ok:
            after = {**after, "rejected": result.errors[:20]}
        try:
            self.store.record_change_sync(
                actor,
                "rules.reload" if result.ok else "rules.reload_rejected",
                str(after["name"]),
                before,
                after,
            )
        except Exception as exc:
            log.error("change_log_write_failed", action="rules.reload", error=str(exc))
        self._rules_seen = self._rules_version()

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
            # every version in rules/: active, scheduled (effective_from ahead) or past
            "versions": self.rules.versions_status(),
            "watch_errors": self.rules.watch_errors,  # failed watcher reloads since start
            # run after the champion on live traffic, recorded, never answered
            "challengers": [
                {
                    "name": c.name,
                    "version": c.version,
                    "sha256": c.sha256,
                    "file": c.file,
                    "sample": c.ruleset.sample,
                    "model_version": c.ruleset.model,
                    "effective_from": c.ruleset.effective_from,
                    "effective_to": c.ruleset.effective_to,
                }
                for c in self.rules.challengers()
            ],
        }

    def _model_ready(self) -> bool:
        """The live version is loaded and the registry's log can be read."""
        try:
            self.models.refresh()
            return self.models.active().card.version == self.models.state().live
        except Exception as exc:
            log.error("model_not_ready", error=str(exc))
            return False

    async def readiness(self) -> dict[str, bool]:
        return {
            "model": await asyncio.to_thread(self._model_ready),
            "rules": self.rules.ready(),
            "audit_store": await self.store.ping() and self.store.healthy(),
        }


def bootstrap(
    settings: Settings, on_switch: Callable[[Scorer, Scorer | None], None] | None = None
) -> Service:
    """The one place that builds the service from settings (API, CLI, benchmarks, tests)."""
    models = ModelRegistry.from_settings(
        settings, poll_interval=settings.model_poll_seconds, on_switch=on_switch
    )
    # Rules see the application fields: the same in every version's card (application_fields).
    schema = card_schema(models.scorer(settings.model_dir.name).card)
    rules = RuleRegistry(settings.rules_dir, schema, engine=settings.rules_engine)
    store = open_store(settings)
    tracing = configure_tracing(settings)
    rulesets = KnownRulesets(store)
    challenger_models = ChallengerModels(models.scorer)
    challenger_models.warm(c.ruleset.model for c in rules.challengers() if c.ruleset.model)
    deciding = Deciding(
        models,
        rules,
        store,
        rulesets,
        explain_always=settings.explain == "always",
        shadow=Shadow(challenger_models),
    )
    return Service(
        settings,
        models,
        rules,
        store,
        tracing,
        tracing.get_tracer("decision_service"),
        rulesets,
        deciding,
    )
