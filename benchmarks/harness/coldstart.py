"""Target 7: CPU a CLI command spends before it is done (commands that do not score), and the
CPU `serve` spends until it answers /health/ready (taken from the decide phases' servers).

Each command runs pinned like the server, in a fresh directory with the repo's rules and
models and an empty SQLite store; its CPU (user + system, the whole process) comes from
``wait4``'s rusage.
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

from benchmarks.harness.common import ROOT, clean_env, log
from benchmarks.harness.core import Harness

# (label, arguments, also in --quick)
COMMANDS: list[tuple[str, list[str], bool]] = [
    ("decision-service --help", ["--help"], True),
    ("decision-service audit verify (empty store)", ["audit", "verify"], True),
    ("decision-service keys list (empty store)", ["keys", "list"], False),
    ("decision-service rules check", ["rules", "check"], False),
]


def cpu_of(argv: list[str], env: dict[str, str], cwd: Path) -> tuple[float, int]:
    proc = subprocess.Popen(
        argv, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return usage.ru_utime + usage.ru_stime, proc.returncode


def run(h: Harness, *, quick: bool) -> None:
    repeats = 1 if quick else 3
    work = h.tmp / "coldstart"
    work.mkdir(exist_ok=True)
    shutil.copytree(ROOT / "rules", work / "rules")
    (work / "models").symlink_to(ROOT / "models")
    (work / "notices").symlink_to(ROOT / "notices")  # the lenders' notice texts
    env = clean_env() | {"DATABASE_URL": f"sqlite:///{work}/empty.db"}
    out: dict[str, Any] = {}
    for label, args, in_quick in COMMANDS:
        if quick and not in_quick:
            continue
        argv = [*h.place.server, sys.executable, "-m", "decision_service", *args]
        cpus, codes = [], []
        for _ in range(repeats):
            cpu, code = cpu_of(argv, env, work)
            cpus.append(cpu)
            codes.append(code)
        out[label] = {"cpu_s": statistics.median(cpus), "runs": cpus, "exit": max(codes)}
        log(f"cold start: {label}: {statistics.median(cpus):.2f} s CPU (exit {max(codes)})")
    h.extras["coldstart"] = out
