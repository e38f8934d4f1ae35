"""Alert rules pass `promtool check rules`; the dashboard and the alerts query only metrics the
running service exports (read from its own /metrics)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import APPLICATIONS, ROOT
from tests.deploy.conftest import missing_tool
from tests.e2e.conftest import Server, start_server

ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "dashboards" / "decision-service.json"
PROMQL_WORDS = {
    "by", "without", "on", "ignoring", "group_left", "group_right", "offset", "bool",
    "and", "or", "unless", "inf", "nan",
}  # fmt: skip
BUILTIN = {"up"}  # Prometheus' own per-target series
SERIES_SUFFIXES = {
    "counter": ("_total", "_created"),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "summary": ("_sum", "_count", "_created", ""),
}


def metric_names(expr: str) -> set[str]:
    """Series names a PromQL expression selects (functions, labels and keywords removed)."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', "", expr)  # strings
    expr = re.sub(r"\{[^}]*\}", "", expr)  # label matchers
    expr = re.sub(r"\[[^\]]*\]", "", expr)  # ranges, $__rate_interval
    expr = re.sub(r"\b(?:by|without|on|ignoring)\s*\([^)]*\)", "", expr)  # grouping labels
    names = set()
    for m in re.finditer(r"(?<![A-Za-z0-9_:.])[A-Za-z_:][A-Za-z0-9_:]*", expr):
        rest = expr[m.end() :].lstrip()
        if rest.startswith("("):
            continue  # a function or aggregation
        if m.group(0).lower() in PROMQL_WORDS:
            continue
        names.add(m.group(0))
    return names


def _alert_exprs() -> list[str]:
    groups = yaml.safe_load(ALERTS.read_text())["groups"]
    return [rule["expr"] for group in groups for rule in group["rules"]]


def _dashboard_exprs() -> list[str]:
    panels = json.loads(DASHBOARD.read_text())["panels"]
    return [t["expr"] for p in panels for t in p.get("targets", [])]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    workdir = tmp_path_factory.mktemp("srv")
    srv = start_server(workdir, f"sqlite:///{workdir / 'decisions.db'}")
    yield srv
    srv.stop()


def test_promtool_accepts_the_alert_rules() -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        missing_tool("promtool not installed (Debian package `prometheus`; .ci/run installs it)")
    result = subprocess.run(
        [promtool, "check", "rules", str(ALERTS)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(_alert_exprs())} rules found" in result.stdout


def test_metric_name_extraction() -> None:
    expr = (
        'histogram_quantile(0.99, sum by (le) (rate(decide_latency_seconds_bucket{job="x"}[5m])))'
        " / clamp_min(sum(rate(decisions_total[1h] offset 7d)), 1e-9) > 0.1 and up == 0"
    )
    assert metric_names(expr) == {"decide_latency_seconds_bucket", "decisions_total", "up"}


def test_dashboard_and_alerts_use_only_metrics_the_service_exports(server: Server) -> None:
    with server.client() as client:
        body = APPLICATIONS.read_bytes().splitlines()[0]
        decided = client.post("/decide", content=body, headers={"content-type": "application/json"})
        assert decided.status_code == 200
        assert client.post("/decide", json={"age": 1}).status_code == 422
        exposition = client.get("/metrics").text
    exported = set()
    for family in text_string_to_metric_families(exposition):
        # Declared families count even before their first sample (a labelled counter has
        # none until a label value occurs); their series names follow from the type.
        exported |= {s.name for s in family.samples}
        exported |= {family.name + suffix for suffix in SERIES_SUFFIXES.get(family.type, ("",))}
    assert "decisions_total" in exported and "decide_latency_seconds_bucket" in exported
    dashboard = set().union(*(metric_names(e) for e in _dashboard_exprs()))
    alerts = set().union(*(metric_names(e) for e in _alert_exprs()))
    assert dashboard and alerts
    assert dashboard - exported - BUILTIN == set(), "dashboard queries unknown metrics"
    assert alerts - exported - BUILTIN == set(), "alert rules query unknown metrics"
    # What issue 13 asks a dashboard to show is on it: decisions by outcome and versions,
    # latency per stage, pd, rule hits, audit batches and commits, reloads, live model/ruleset.
    for name in (
        "decisions_total",
        "decide_latency_seconds_bucket",
        "decision_pd_bucket",
        "rule_hits_total",
        "audit_batch_records_sum",
        "audit_commit_seconds_bucket",
        "rules_reloads_total",
        "model_active",
        "ruleset_active",
    ):
        assert name in dashboard, name
    exprs = " ".join(_dashboard_exprs())
    assert "by (le, stage)" in exprs and "model_version, ruleset_version" in exprs


def test_dashboard_is_valid_grafana_json() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] and dashboard["title"] and dashboard["schemaVersion"] >= 36
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dashboard["panels"]:
        assert panel["datasource"]["uid"] == "prometheus"
        assert {"x", "y", "w", "h"} <= set(panel["gridPos"])
    provisioning = ROOT / "deploy/grafana/provisioning/dashboards/decision-service.yaml"
    path = yaml.safe_load(provisioning.read_text())["providers"][0]["options"]["path"]
    assert Path(path).name == DASHBOARD.parent.name
