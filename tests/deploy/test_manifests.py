"""Kubernetes manifests and compose: linted by checkov, the parts an operator relies on present,
and the rules ConfigMap byte-for-byte the shipped rule files."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import yaml

from tests.conftest import ROOT
from tests.deploy.conftest import CHECKOV, uv_tool

K8S = ROOT / "deploy" / "k8s"


def _docs() -> dict[str, dict[str, Any]]:
    docs: dict[str, dict[str, Any]] = {}
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    for name in kustomization["resources"]:
        for doc in yaml.safe_load_all((K8S / name).read_text()):
            docs[doc["kind"]] = doc
    return docs


def test_checkov_passes_on_the_kubernetes_manifests() -> None:
    args = ["checkov", "-d", "deploy/k8s", "--framework", "kubernetes", "--compact", "--quiet"]
    result = uv_tool(CHECKOV, *args, "--skip-download")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]


def test_every_manifest_the_issue_lists_is_there_and_wired() -> None:
    docs = _docs()
    assert {"Deployment", "Service", "ConfigMap", "Secret", "HorizontalPodAutoscaler"} <= set(docs)
    assert "PodDisruptionBudget" in docs
    pod = docs["Deployment"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["livenessProbe"]["httpGet"]["path"] == "/health/live"
    assert container["readinessProbe"]["httpGet"]["path"] == "/health/ready"
    assert {"cpu", "memory"} <= set(container["resources"]["requests"])
    assert {"cpu", "memory"} <= set(container["resources"]["limits"])
    assert pod["securityContext"]["runAsNonRoot"] is True
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    env = {e["name"]: e.get("value") for e in container["env"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert env["DECISION_RULES_DIR"] == mounts["rules"]
    assert volumes["rules"]["configMap"]["name"] == docs["ConfigMap"]["metadata"]["name"]
    assert env["DECISION_CONFIG"].startswith(mounts["secret"])
    assert volumes["secret"]["secret"]["secretName"] == docs["Secret"]["metadata"]["name"]
    assert "database_url" in docs["Secret"]["stringData"]["decision.toml"]
    labels = docs["Deployment"]["spec"]["selector"]["matchLabels"]
    assert docs["Service"]["spec"]["selector"] == labels
    assert docs["PodDisruptionBudget"]["spec"]["selector"]["matchLabels"] == labels
    assert (
        docs["HorizontalPodAutoscaler"]["spec"]["scaleTargetRef"]["name"]
        == (docs["Deployment"]["metadata"]["name"])
    )
    assert docs["HorizontalPodAutoscaler"]["spec"]["minReplicas"] >= 2
    assert docs["PodDisruptionBudget"]["spec"]["minAvailable"] >= 1


def test_the_rules_configmap_is_the_shipped_rule_files() -> None:
    spec = importlib.util.spec_from_file_location("render", K8S / "render_rules_configmap.py")
    assert spec and spec.loader
    render = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(render)
    assert (K8S / "configmap-rules.yaml").read_text() == render.render(), (
        "rules/ changed: run `python deploy/k8s/render_rules_configmap.py`"
    )
    data = _docs()["ConfigMap"]["data"]
    for path in (ROOT / "rules").glob("*.yaml"):
        assert data[path.name] == path.read_text()


def test_compose_runs_the_service_on_postgresql_with_prometheus_and_grafana() -> None:
    compose = yaml.safe_load((ROOT / "compose.yaml").read_text())
    services = compose["services"]
    assert set(services) == {"decision-service", "postgres", "prometheus", "grafana"}
    app = services["decision-service"]
    assert app["environment"]["DATABASE_URL"].startswith("postgresql+psycopg://")
    assert app["depends_on"]["postgres"]["condition"] == "service_healthy"
    for service in services.values():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("./"):
                assert (ROOT / source).exists(), source
    prometheus = yaml.safe_load((ROOT / "deploy/prometheus/prometheus.yml").read_text())
    assert prometheus["scrape_configs"][0]["static_configs"][0]["targets"] == [
        "decision-service:8000"
    ]
    assert Path(prometheus["rule_files"][0]).name == "alerts.yml"
