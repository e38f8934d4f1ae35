"""An operator runs the service: several workers, JSON logs, traces, health, metrics, OpenAPI."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.conftest import start_server


def test_two_workers_each_write_a_verifiable_chain(tmp_path, application_lines) -> None:
    srv = start_server(tmp_path, f"sqlite:///{tmp_path / 'd.db'}", workers=2)
    try:

        def post(line: bytes) -> int:
            with srv.client() as c:
                return c.post("/decide", content=line).status_code

        with ThreadPoolExecutor(8) as pool:
            codes = list(pool.map(post, application_lines[:300]))
        assert codes == [200] * 300
        with srv.client() as c:
            report = c.get("/audit/verify").json()
        assert report["ok"] is True and report["records"] == 300
        assert 1 <= len(report["chains"]) <= 2
    finally:
        srv.stop()


def test_logs_traces_health_metrics_and_schema(tmp_path, application_lines, scorer) -> None:
    srv = start_server(
        tmp_path, f"sqlite:///{tmp_path / 'd.db'}", extra_env={"DECISION_OTEL_EXPORTER": "console"}
    )
    try:
        with srv.client() as c:
            assert c.get("/health/live").json() == {"status": "live"}
            ready = c.get("/health/ready").json()
            assert ready["checks"] == {"model": True, "rules": True, "audit_store": True}
            decision = c.post("/decide", content=application_lines[0]).json()
            metrics = c.get("/metrics").text
            labels = {
                "outcome": decision["outcome"],
                "model_version": decision["trace"]["model"]["version"],
                "ruleset_version": decision["trace"]["ruleset"]["version"],
            }
            counted = [
                (s.labels, s.value)
                for family in text_string_to_metric_families(metrics)
                for s in family.samples
                if s.name == "decisions_total"
            ]
            assert counted == [(labels, 1.0)]
            schema = c.get("/schema/openapi.json").json()
            assert {
                "/decide",
                "/decisions",
                "/decisions/{decision_id}",
                "/audit/verify",
                "/rules",
                "/rules/reload",
                "/health/ready",
            } <= set(schema["paths"])
    finally:
        srv.stop()  # flushes the span processor
    log = srv.log.read_text()
    lines = [json.loads(x) for x in log.splitlines() if x.startswith('{"decision_id"')]
    assert len(lines) == 1
    line = lines[0]
    assert line["event"] == "decision" and line["decision_id"] == decision["decision_id"]
    assert line["trace_id"] == decision["trace_id"]
    assert line["rules_fired"] == [r["id"] for r in decision["trace"]["rules_fired"]]
    assert {"application_id", "outcome", "pd", "latency_us", "level", "timestamp"} <= set(line)
    # The console exporter prints each span as one JSON line on stderr (merged into this file
    # by the fixture; stdout holds log records only).
    records = [json.loads(x) for x in log.splitlines() if x.startswith("{")]
    spans = [r for r in records if "context" in r]
    trace_id = "0x" + decision["trace_id"]
    names = {s["name"] for s in spans if s["context"]["trace_id"] == trace_id}
    assert names == {"POST /decide", "validate", "score", "rules", "explain", "audit"}


def test_caller_asks_for_reasons_and_passes_its_trace(tmp_path, application_lines) -> None:
    srv = start_server(tmp_path, f"sqlite:///{tmp_path / 'd.db'}")
    try:
        with srv.client() as c:
            approved = next(
                line
                for line in application_lines[:50]
                if c.post("/decide", content=line).json()["outcome"] == "approve"
            )
            plain = c.post("/decide", content=approved).json()
            assert not [r for r in plain["reasons"] if r["source"] == "model"]
            asked = c.post("/decide?explain=true", content=approved).json()
            model = [r for r in asked["reasons"] if r["source"] == "model"]
            assert 1 <= len(model) <= 4 and all(r["contribution"] > 0 for r in model)
            replay = c.post(f"/decisions/{asked['decision_id']}/replay").json()
            assert replay["identical"] is True
            trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
            traced = c.post(
                "/decide",
                content=approved,
                headers={"traceparent": f"00-{trace_id}-00f067aa0ba902b7-01"},
            )
            assert traced.json()["trace_id"] == trace_id
    finally:
        srv.stop()
