"""An operator scrapes `serve --workers 2`: whichever worker answers, /metrics is the sum of
both (decisions, stage latencies, rule hits, audit batches, reloads from every source), and the
info gauges name what each live worker serves. Parsed with prometheus_client's own parser."""

from __future__ import annotations

import tempfile
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from decision_service.api.metrics import STAGES
from tests.e2e.conftest import Server, start_server

N = 40
SHARED = "decision-service-metrics-*"


def scrape(server: Server) -> dict[str, list[tuple[dict[str, str], float]]]:
    """One scrape on a fresh connection (any worker): samples by series name."""
    text = httpx.get(server.url + "/metrics", timeout=30).text
    samples: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            samples.setdefault(s.name, []).append((s.labels, s.value))
    return samples


def total(samples: dict, name: str, **labels: str) -> float:
    return sum(v for lab, v in samples.get(name, []) if labels.items() <= lab.items())


def until(check, timeout: float = 60.0):
    """Poll until `check()` is truthy (the watcher reloads each worker on its own)."""
    deadline = time.monotonic() + timeout
    while True:
        found = check()
        if found or time.monotonic() > deadline:
            return found
        time.sleep(0.2)


def test_two_workers_expose_one_aggregate(tmp_path: Path, application_lines) -> None:
    before = set(Path(tempfile.gettempdir()).glob(SHARED))
    srv = start_server(
        tmp_path,
        f"sqlite:///{tmp_path / 'd.db'}",
        workers=2,
        extra_env={"DECISION_RULES_WATCH": "true"},
    )
    try:
        shared = set(Path(tempfile.gettempdir()).glob(SHARED)) - before
        assert len(shared) == 1  # this run's own directory, made before the workers started
        key = srv.key_for("decider")

        def decide(line: bytes) -> dict:
            with srv.client_with_key(key) as c:  # a new connection: either worker
                r = c.post("/decide", content=line)
                assert r.status_code == 200, r.text
                return r.json()

        with ThreadPoolExecutor(8) as pool:
            decisions = list(pool.map(decide, application_lines[:N]))
        with srv.client_with_key(key) as c:
            assert c.post("/decide", json={"age": 1}).status_code == 422
        outcomes = Counter(
            (d["outcome"], d["trace"]["model"]["version"], d["trace"]["ruleset"]["version"])
            for d in decisions
        )
        hits = Counter(r["id"] for d in decisions for r in d["trace"]["rules_fired"])
        with srv.client("analyst") as c:
            active = c.get("/rules").json()

        # Stage latencies reach the shared files at each worker's next flush (FLUSH_S).
        flushed = until(
            lambda: total(scrape(srv), "decide_latency_seconds_count", stage="total") == N
        )
        assert flushed, "stage latencies of some worker never reached /metrics"
        pids = set()
        for _ in range(6):  # several scrapes, several workers: the same sums every time
            m = scrape(srv)
            assert total(m, "decisions_total") == N
            for (outcome, model, ruleset), count in outcomes.items():
                labels = {"outcome": outcome, "model_version": model, "ruleset_version": ruleset}
                assert total(m, "decisions_total", **labels) == count
            for stage in (*STAGES, "total"):
                assert total(m, "decide_latency_seconds_count", stage=stage) == N
            assert total(m, "decision_pd_count") == N
            assert {lab["rule"]: v for lab, v in m["rule_hits_total"]} == dict(hits)
            assert total(m, "decide_rejected_total") == 1
            assert total(m, "audit_batch_records_sum") == N
            assert total(m, "audit_commit_seconds_count") == total(m, "audit_batch_records_count")
            assert total(m, "rules_reloads_total", source="startup", result="ok") == 2
            live = [lab for lab, v in m["ruleset_active"] if v == 1]
            assert len(live) == 2  # one series per live worker
            assert {(lab["name"], lab["version"], lab["sha256"]) for lab in live} == {
                (active["name"], active["version"], active["sha256"])
            }
            pids |= {lab["pid"] for lab in live}
            assert len([lab for lab, v in m["model_active"] if v == 1]) == 2
        assert len(pids) == 2

        # The file watcher reloads each worker; an HTTP reload is counted as such.
        policy = srv.rules_dir / "risk_appetite.yaml"
        policy.write_text(policy.read_text().replace("version: 2026.11.1", "version: 2026.12.0"))
        m = until(
            lambda: (
                s
                if total(s := scrape(srv), "rules_reloads_total", source="watch", result="ok") >= 2
                else None
            )
        )
        assert m, "the watchers' reloads were not counted"
        assert total(m, "rules_reloads_total", source="watch", result="ok") == 2
        live = [lab for lab, v in m["ruleset_active"] if v == 1]
        assert [lab["version"] for lab in live] == ["2026.12.0", "2026.12.0"]
        stale = [lab["version"] for lab, v in m["ruleset_active"] if v == 0]
        assert stale == ["2026.11.1", "2026.11.1"]
        with srv.client() as c:
            assert c.post("/rules/reload").status_code == 200
        m = scrape(srv)
        assert total(m, "rules_reloads_total", source="http", result="ok") == 1
        assert total(m, "rules_reloads_total", result="rejected") == 0
    finally:
        srv.stop()
    assert set(Path(tempfile.gettempdir()).glob(SHARED)) - before == set()  # cleaned up
