"""Prometheus metrics of one worker process, exposed at /metrics."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from decision_service.scoring import Scorer


class Metrics:
    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.decisions = Counter(
            "decisions", "Decisions made and recorded", ["outcome"], registry=self.registry
        )
        self.rejected = Counter(
            "decide_rejected", "Applications rejected as invalid (422)", registry=self.registry
        )
        self.audit_failures = Counter(
            "decide_audit_failures",
            "Decisions withheld: audit store could not commit (503)",
            registry=self.registry,
        )
        self.latency = Histogram(
            "decide_latency_seconds",
            "Server time per /decide, audit commit included",
            buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 1.0),
            registry=self.registry,
        )
        self.pd = Histogram(
            "decision_pd",
            "Model probability of default of decided applications",
            buckets=(0.01, 0.02, 0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.7, 1.0),
            registry=self.registry,
        )
        self.access_denied = Counter(
            "access_denied",
            "Requests refused by access control (401, 403, 429, 413, 415)",
            ["status"],
            registry=self.registry,
        )
        self.rule_reloads = Counter(
            "rules_reloads", "Rule reload attempts", ["result"], registry=self.registry
        )
        self.ruleset_info = Gauge(
            "ruleset_active",
            "Active ruleset (1)",
            ["name", "version", "sha256", "engine"],
            registry=self.registry,
        )

        self.challenger_errors = Counter(
            "challenger_errors",
            "Challenger evaluations that raised (recorded with the decision, ignored)",
            ["challenger"],
            registry=self.registry,
        )
        self.model_info = Gauge(
            "model_active",
            "Live model version (1), set on every registry switch",
            ["name", "version", "sha256"],
            registry=self.registry,
        )

    def model_switched(self, new: Scorer, old: Scorer | None = None) -> None:
        """The registry's on_switch: one labelled series, the live version's."""
        self.model_info.clear()
        card = new.card
        self.model_info.labels(card.name, card.version, card.model_sha256).set(1)

    def render(self) -> bytes:
        return generate_latest(self.registry)
