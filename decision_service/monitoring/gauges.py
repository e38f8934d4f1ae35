"""Prometheus gauges of the last drift report: PSI per series, and how many alert."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Gauge

from decision_service.monitoring.drift import DriftReport


class DriftGauges:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.psi = Gauge(
            "drift_psi",
            "Population stability index of a feature, pd or the outcome mix (last report)",
            ["series", "model_version"],
            registry=registry,
        )
        self.alerts = Gauge(
            "drift_alerts", "Series at or above the alert PSI (last report)", registry=registry
        )
        self.decisions = Gauge(
            "drift_window_decisions", "Decisions in the last drift window", registry=registry
        )

    def update(self, report: DriftReport) -> None:
        self.psi.clear()
        series = [*report.features, report.score, report.outcomes]
        for d in series:
            if d is not None:
                self.psi.labels(d.name, report.model_version or "").set(d.psi)
        self.alerts.set(len(report.alerts))
        self.decisions.set(report.decisions)
