"""Prometheus metrics, exposed at /metrics: one aggregate over every worker of a server.

`serve --workers N` sets PROMETHEUS_MULTIPROC_DIR (metrics_dir.py) before the workers start:
each worker then writes its samples to memory-mapped files there, and /metrics, whichever worker
answers, sums them (prometheus_client's MultiProcessCollector). Without the variable (one
process, tests) the worker's own registry is exposed. Info gauges (`model_active`,
`ruleset_active`) are "liveall": one series per live worker (label `pid`), value 1 for what it
serves now and 0 for what it served before (multiprocess files cannot forget a series).

The /decide path records a decision with a handful of increments on label children resolved
once (`labels()` costs more than the increment itself). Its six stage latencies are counted
into plain lists (`StageLatency`) and added to the histogram in one go at each scrape and,
under several workers, every FLUSH_S seconds: six locked histogram updates per request would
cost more than all the other metrics together.
"""

from __future__ import annotations

import asyncio
from bisect import bisect_left
from collections.abc import Callable, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from decision_service.decision import Decision
from decision_service.metrics_dir import multiprocess_dir
from decision_service.scoring import Scorer

STAGES = ("validate", "score", "rules", "explain", "audit")
FLUSH_S = 1.0  # under several workers: how stale another worker's stage latencies may be
LATENCY_BUCKETS = (
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 1.0,
)  # fmt: skip
RELOAD_SOURCES = ("startup", "http", "watch")


class ActiveInfo:
    """An info gauge naming what is live: the current label set at 1, the previous one at 0."""

    def __init__(self, gauge: Gauge) -> None:
        self.gauge = gauge
        self.labels: tuple[str, ...] | None = None

    def set(self, *labels: str) -> None:
        if labels == self.labels:
            return
        if self.labels is not None:
            self.gauge.labels(*self.labels).set(0)
        self.gauge.labels(*labels).set(1)
        self.labels = labels


class StageLatency:
    """Stage latencies observed but not yet in the histogram: bucket counts and sums per stage.

    Touched only on the event loop's thread (requests, scrape, the flush task), so plain lists
    need no lock. Flushing goes through the histogram children's values (prometheus_client has
    no public "observe n times"); the test of the aggregate checks every count.
    """

    def __init__(self, histogram: Histogram, stages: tuple[str, ...]) -> None:
        self.children = [histogram.labels(stage) for stage in stages]
        self.bounds = list(self.children[0]._upper_bounds)
        self._reset()

    def _reset(self) -> None:
        self.counts = [[0] * len(self.bounds) for _ in self.children]
        self.sums = [0.0] * len(self.children)
        self.pending = 0

    def flush(self) -> None:
        if not self.pending:
            return
        counts, sums = self.counts, self.sums
        self._reset()
        for child, buckets, total in zip(self.children, counts, sums, strict=True):
            for value, n in zip(child._buckets, buckets, strict=True):
                if n:
                    value.inc(n)
            child._sum.inc(total)


class Metrics:
    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = registry = CollectorRegistry()
        self.multiprocess = multiprocess_dir() is not None
        self.decisions = Counter(
            "decisions",
            "Decisions made and recorded, by outcome and the versions that decided",
            ["outcome", "model_version", "ruleset_version"],
            registry=registry,
        )
        self.rejected = Counter(
            "decide_rejected",
            "Requests to decide refused as invalid (400, 422): nothing was decided",
            registry=registry,
        )
        self.audit_failures = Counter(
            "decide_audit_failures",
            "Decisions withheld: audit store could not commit (503)",
            registry=registry,
        )
        self.latency = Histogram(
            "decide_latency_seconds",
            "Server time per /decide by stage; stage=total is the whole request, audit commit "
            "included",
            ["stage"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.pd = Histogram(
            "decision_pd",
            "Model probability of default of decided applications",
            buckets=(0.01, 0.02, 0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.7, 1.0),
            registry=registry,
        )
        self.rule_hits = Counter(
            "rule_hits",
            "Rules fired in recorded decisions, by rule id (the ruleset's ids: bounded)",
            ["rule"],
            registry=registry,
        )
        self.audit_batch = Histogram(
            "audit_batch_records",
            "Records per audit commit (group commit: requests queued while the last one ran)",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024),
            registry=registry,
        )
        self.audit_commit = Histogram(
            "audit_commit_seconds",
            "Time to write and commit one audit batch",
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.access_denied = Counter(
            "access_denied",
            "Requests refused by access control (401, 403, 429, 413, 415)",
            ["status"],
            registry=registry,
        )
        self.rule_reloads = Counter(
            "rules_reloads",
            "Rule loads and reloads by source (startup, http, watch) and result (ok, rejected)",
            ["source", "result"],
            registry=registry,
        )
        self.ruleset_info = ActiveInfo(
            Gauge(
                "ruleset_active",
                "Ruleset in force in a worker (1; 0 for one it served before)",
                ["name", "version", "sha256", "engine"],
                registry=registry,
                multiprocess_mode="liveall",
            )
        )
        self.model_info = ActiveInfo(
            Gauge(
                "model_active",
                "Live model version in a worker (1; 0 for one it served before)",
                ["name", "version", "sha256"],
                registry=registry,
                multiprocess_mode="liveall",
            )
        )
        self.challenger_errors = Counter(
            "challenger_errors",
            "Challenger evaluations that raised (recorded with the decision, ignored)",
            ["challenger"],
            registry=registry,
        )
        for source in RELOAD_SOURCES:  # every series exists from the start: rate() sees the 1st
            for result in ("ok", "rejected"):
                self.rule_reloads.labels(source, result)
        self.stage_latency = StageLatency(self.latency, (*STAGES, "total"))
        self._decided: dict[tuple[str, str, str], Any] = {}
        self._hits: dict[str, Any] = {}
        self._ruleset_sha = ""
        self.on_scrape: Callable[[], None] | None = None  # refreshes info gauges before a scrape

    def decided(self, decision: Decision) -> None:
        """One recorded decision: its outcome by versions, its pd and the rules it fired."""
        trace = decision.trace
        ruleset = trace.ruleset
        if ruleset.sha256 != self._ruleset_sha:  # a switch (reload, or a version's start)
            self.ruleset_switched(ruleset.name, ruleset.version, ruleset.sha256, ruleset.engine)
        key = (decision.outcome, trace.model.version, ruleset.version)
        counter = self._decided.get(key)
        if counter is None:
            counter = self._decided[key] = self.decisions.labels(*key)
        counter.inc()
        self.pd.observe(decision.pd)
        hits = self._hits
        for fired in trace.rules_fired:
            hit = hits.get(fired.id)
            if hit is None:
                hit = hits[fired.id] = self.rule_hits.labels(fired.id)
            hit.inc()

    def timed(self, timings_us: Mapping[str, int], total_s: float) -> None:
        """The stage timings one /decide measured (µs), and its total (s)."""
        pending = self.stage_latency
        counts, sums, bounds = pending.counts, pending.sums, pending.bounds
        for i, stage in enumerate(STAGES):
            seconds = timings_us.get(stage, 0) / 1e6
            counts[i][bisect_left(bounds, seconds)] += 1
            sums[i] += seconds
        counts[-1][bisect_left(bounds, total_s)] += 1
        sums[-1] += total_s
        pending.pending += 1

    async def flush_every(self, seconds: float = FLUSH_S) -> None:
        """Under several workers: this worker's stage latencies reach the shared files."""
        while True:
            await asyncio.sleep(seconds)
            self.stage_latency.flush()

    def audit_committed(self, records: int, seconds: float) -> None:
        """The audit store's observer of each committed batch (on the writer's loop)."""
        self.audit_batch.observe(records)
        self.audit_commit.observe(seconds)

    def reloaded(self, source: str, ok: bool) -> None:
        self.rule_reloads.labels(source, "ok" if ok else "rejected").inc()

    def ruleset_switched(self, name: str, version: str, sha256: str, engine: str) -> None:
        self._ruleset_sha = sha256
        self.ruleset_info.set(name, version, sha256, engine)

    def model_switched(self, new: Scorer, old: Scorer | None = None) -> None:
        """The model registry's on_switch: the live version's series at 1."""
        card = new.card
        self.model_info.set(card.name, card.version, card.model_sha256)

    def render(self) -> bytes:
        self.stage_latency.flush()
        if self.on_scrape is not None:
            self.on_scrape()
        if not self.multiprocess:
            return generate_latest(self.registry)
        from prometheus_client.multiprocess import MultiProcessCollector

        registry = CollectorRegistry()  # every worker's files, summed (gauges per mode)
        MultiProcessCollector(registry)
        return generate_latest(registry)
