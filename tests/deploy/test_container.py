"""The container image definition: linted (hadolint, checkov), multi-stage, locked, non-root,
no compiler in the final image, a health check, and the README's own `serve` command."""

from __future__ import annotations

import json
import re
import shlex

import yaml

from tests.conftest import ROOT
from tests.deploy.conftest import CHECKOV, HADOLINT, uv_tool

DOCKERFILE = ROOT / "Dockerfile"


def _stages() -> list[list[str]]:
    """Instructions per stage, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n\s*", " ", DOCKERFILE.read_text())
    stages: list[list[str]] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.upper().startswith("FROM "):
            stages.append([])
        if stages:
            stages[-1].append(line)
    return stages


def _readme_serve() -> list[str]:
    """The command the README runs the service with, from `decision-service` on."""
    for line in (ROOT / "README.md").read_text().splitlines():
        if "decision-service serve" in line and "uv run" in line:
            words = shlex.split(line.split("&&")[-1])
            return words[words.index("decision-service") :]
    raise AssertionError("README has no `uv run … decision-service serve` line")


def test_hadolint_passes_at_warning_level() -> None:
    result = uv_tool(HADOLINT, "hadolint", "--config", ".hadolint.yaml", "Dockerfile")
    assert result.returncode == 0, result.stdout + result.stderr


def test_checkov_passes_on_the_dockerfile() -> None:
    args = ["checkov", "-f", "Dockerfile", "--framework", "dockerfile", "--compact", "--quiet"]
    result = uv_tool(CHECKOV, *args, "--skip-download")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]


def test_image_runs_the_readme_serve_command() -> None:
    cmd = [line for line in _stages()[-1] if line.startswith("CMD ")]
    assert len(cmd) == 1
    assert (
        json.loads(cmd[0].removeprefix("CMD "))
        == _readme_serve()
        == [
            "decision-service",
            "serve",
        ]
    )
    compose = yaml.safe_load((ROOT / "compose.yaml").read_text())
    assert compose["services"]["decision-service"]["command"] == _readme_serve()
    k8s = yaml.safe_load((ROOT / "deploy/k8s/deployment.yaml").read_text())
    container = k8s["spec"]["template"]["spec"]["containers"][0]
    assert container["command"] == _readme_serve()


def test_multi_stage_locked_non_root_without_build_tools_with_a_healthcheck() -> None:
    stages = _stages()
    assert len(stages) >= 2
    build, final = "\n".join(stages[0]), "\n".join(stages[-1])
    assert "uv sync --locked --no-dev --no-install-project" in build
    assert "uv sync --locked --no-dev --no-editable" in build
    assert "gcc" in build  # durable-rules is compiled here…
    for tool in ("gcc", "g++", "build-essential", "make ", "libc6-dev", "uv=="):
        assert tool not in final, f"{tool} in the final image"  # …and never shipped
    assert "COPY --from=build /app/.venv /app/.venv" in final
    users = [line for line in stages[-1] if line.startswith("USER ")]
    assert users and users[-1].split()[1].split(":")[0] not in ("0", "root")
    assert any(line.startswith("HEALTHCHECK ") and "/health/" in line for line in stages[-1])
