"""The incident playbook's containment step, run as written in docs/operations.md: after a
promotion, its rollback commands put the previous version back, a worker's registry follows,
and the log names who did it and why."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

from decision_service.scoring.registry import ModelRegistry
from tests.conftest import ROOT

PLAYBOOK = ROOT / "docs" / "operations.md"


def _section_commands(title: str) -> list[list[str]]:
    text = PLAYBOOK.read_text()
    section = text.split(f"### {title}", 1)[1].split("\n### ", 1)[0]
    block = re.search(r"```sh\n(.*?)```", section, re.S)
    assert block, f"no sh block under {title}"
    lines = [line.split("  #", 1)[0].strip() for line in block.group(1).splitlines()]
    return [shlex.split(line) for line in lines if line]


def _cli(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    assert args[0] == "decision-service"
    return subprocess.run(
        [sys.executable, "-m", "decision_service", *args[1:]],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_the_documented_rollback_contains_a_bad_promotion(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'decisions.db'}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("DECISION_")}
    env |= {"DATABASE_URL": url, "PYTHONPATH": str(ROOT), "USER": "oncall"}
    promoted = _cli(["decision-service", "models", "promote", "1.1.0", "--actor", "alice"], env)
    assert promoted.returncode == 0, promoted.stdout + promoted.stderr
    worker = ModelRegistry(ROOT / "models", "underwriting", "1.0.0", url, poll_interval=0.2)
    try:
        worker.start_polling()
        assert worker.active().card.version == "1.1.0"
        commands = _section_commands("Contain: roll back")
        assert [c[:3] for c in commands] == [
            ["decision-service", "models", "rollback"],
            ["decision-service", "models", "list"],
        ]
        for command in commands:
            done = _cli(command, env)
            assert done.returncode == 0, done.stdout + done.stderr
        assert "live 1.0.0" in done.stdout
        deadline = time.monotonic() + 30
        while worker.active().card.version != "1.0.0" and time.monotonic() < deadline:
            time.sleep(0.05)
        assert worker.active().card.version == "1.0.0"
        listed = _cli(["decision-service", "models", "list", "--format", "json"], env)
        last = json.loads(listed.stdout)["events"][-1]
        assert last["action"] == "rollback" and last["to_version"] == "1.0.0"
        assert last["actor"] == "cli:oncall" and last["reason"].startswith("INC-123")
    finally:
        worker.close()
