"""The metrics of one process, read back with prometheus_client's parser: stage latencies
counted in bulk equal the histogram's own `observe`, and an info gauge names only what is live."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from decision_service.api.metrics import LATENCY_BUCKETS, STAGES, Metrics


def samples(text: bytes, family: str) -> dict[tuple, float]:
    found = {}
    for fam in text_string_to_metric_families(text.decode()):
        if fam.name == family:
            for s in fam.samples:
                if not s.name.endswith("_created"):
                    found[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return found


def test_stage_latencies_flushed_in_bulk_equal_observe_one_by_one() -> None:
    metrics = Metrics()
    reference = CollectorRegistry()
    hist = Histogram(
        "decide_latency_seconds", "x", ["stage"], buckets=LATENCY_BUCKETS, registry=reference
    )
    # values on bucket bounds, between them, zero and beyond the last bound
    for k, micros in enumerate([0, 50, 51, 99, 100, 250, 999, 1000, 20_000, 5_000_000]):
        timings = {stage: micros + i for i, stage in enumerate(STAGES)}
        total = (micros * 7 + k) / 1e6
        metrics.timed(timings, total)
        for stage in STAGES:
            hist.labels(stage).observe(timings[stage] / 1e6)
        hist.labels("total").observe(total)
    ours = samples(metrics.render(), "decide_latency_seconds")
    expected = samples(generate_latest(reference), "decide_latency_seconds")
    assert ours.keys() == expected.keys() and len(ours) == 6 * (len(LATENCY_BUCKETS) + 3)
    for key, value in expected.items():
        assert abs(ours[key] - value) < 1e-9, key
    # a second render adds nothing twice
    assert samples(metrics.render(), "decide_latency_seconds") == ours


def test_info_gauge_keeps_one_live_series() -> None:
    metrics = Metrics()
    metrics.ruleset_switched("risk", "1", "aaa", "compiled")
    metrics.ruleset_switched("risk", "1", "aaa", "compiled")  # unchanged: nothing new
    metrics.ruleset_switched("risk", "2", "bbb", "compiled")
    found = samples(metrics.render(), "ruleset_active")
    live = {dict(labels)["version"]: v for (_, labels), v in found.items()}
    assert live == {"1": 0.0, "2": 1.0}
