"""Prometheus gauges of the last drift report: PSI per series, and how many alert.

Under several workers (multiprocess mode) the report any worker computed last is the one shown
("mostrecent"); its files cannot forget a series, so a series of an older report stays at its
last value there (it is labelled by model version).
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Gauge

from decision_service.metrics_dir import multiprocess_dir
from decision_service.monitoring.drift import DriftReport


class DriftGauges:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.psi = Gauge(
            "drift_psi",
            "Population stability index of a feature, pd or the outcome mix (last report)",
            ["series", "model_version"],
            registry=registry,
            multiprocess_mode="mostrecent",
        )
        self.alerts = Gauge(
            "drift_alerts",
            "Series at or above the alert PSI (last report)",
            registry=registry,
            multiprocess_mode="mostrecent",
        )
        self.decisions = Gauge(
            "drift_window_decisions",
            "Decisions in the last drift window",
            registry=registry,
            multiprocess_mode="mostrecent",
        )

    def update(self, report: DriftReport) -> None:
        if multiprocess_dir() is None:
            self.psi.clear()
        series = [*report.features, report.score, report.outcomes]
        for d in series:
            if d is not None:
                self.psi.labels(d.name, report.model_version or "").set(d.psi)
        self.alerts.set(len(report.alerts))
        self.decisions.set(report.decisions)
