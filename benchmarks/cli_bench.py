"""CPU seconds of the CLI's start (issue 14 target 7): every command that does not score must be
done in <= 1 s of CPU, `serve` must answer /health/ready in <= 3 s of CPU.

    uv run python benchmarks/cli_bench.py [--repeat 5] [--json FILE] [--only NAME ...]

CPU is user + system of the command's process: resource.getrusage(RUSAGE_CHILDREN) before and
after each run (runs are sequential, so the difference is that run's), the median of --repeat.
For `serve`, the server's own CPU (/proc/PID/stat) at the moment /health/ready first answers
200 (one process, polled every 50 ms). CPU, not wall time: the machine is shared, and CPU time
barely moves with load. Every command first runs once unmeasured with bytecode caching on
(PYTHONDONTWRITEBYTECODE is dropped from the environment), as an installed tool runs.

Each run works in a fresh directory holding the repo's rules and models and an SQLite store that
`db upgrade` created, with a few decisions recorded (so export and verify have work to do)."""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
COMMAND_TARGET, SERVE_TARGET = 1.0, 3.0

# (name, arguments): the commands that never score.
COMMANDS: list[tuple[str, list[str]]] = [
    ("--help", ["--help"]),
    ("audit export --help", ["audit", "export", "--help"]),
    ("rules check", ["rules", "check"]),
    ("db history", ["db", "history"]),
    ("db current", ["db", "current"]),
    ("db upgrade", ["db", "upgrade"]),
    ("keys list", ["keys", "list"]),
    ("keys create", ["keys", "create", "--role", "auditor", "--name", "{unique}"]),
    ("keys revoke", ["keys", "revoke", "{last}"]),
    ("audit verify", ["audit", "verify"]),
    ("audit export", ["audit", "export", "--format", "csv", "-o", "export.csv"]),
    ("models list", ["models", "list"]),
    ("drift", ["drift", "--format", "json"]),
    ("challengers report", ["challengers", "report", "--format", "json"]),
]


def environment(work: Path) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("DECISION_") and k not in ("PYTHONDONTWRITEBYTECODE", "DATABASE_URL")
    }
    return env | {
        "DATABASE_URL": f"sqlite:///{work}/var/decisions.db",
        "DECISION_RULES_WATCH": "false",
        "PYTHONPATH": str(ROOT),
    }


def prepare(work: Path, env: dict[str, str]) -> None:
    shutil.copytree(ROOT / "rules", work / "rules")
    for shared in ("models", "notices"):
        (work / shared).symlink_to(ROOT / shared)
    # A few recorded decisions: `batch --audit` writes them through the one pipeline.
    apps = ROOT / "benchmarks" / "data" / "applications.jsonl"
    (work / "apps.jsonl").write_bytes(b"".join(apps.read_bytes().splitlines(True)[:200]))
    cli = [sys.executable, "-m", "decision_service"]
    for argv in (["db", "upgrade"], ["batch", "apps.jsonl", "-o", "out.jsonl", "--audit", "-q"]):
        subprocess.run([*cli, *argv], cwd=work, env=env, check=True, capture_output=True)


def cpu_of(argv: list[str], env: dict[str, str], cwd: Path) -> tuple[float, int]:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    done = subprocess.run(argv, cwd=cwd, env=env, capture_output=True)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return cpu, done.returncode


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def process_cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def serve_cpu(env: dict[str, str], cwd: Path, timeout: float = 120.0) -> float:
    """The server's CPU when /health/ready first answers 200 (then it is stopped)."""
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "decision_service", "serve", "--port", str(port), "--workers", "1"],
        cwd=cwd,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if server.poll() is not None:
                raise RuntimeError(f"serve exited with {server.returncode} before it was ready")
            try:
                url = f"http://127.0.0.1:{port}/health/ready"
                with urllib.request.urlopen(url, timeout=1) as answer:
                    if answer.status == 200:
                        return process_cpu(server.pid)
            except OSError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"serve not ready after {timeout:.0f} s")
    finally:
        server.terminate()
        server.wait(timeout=30)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5, help="runs per command (median)")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    parser.add_argument("--only", nargs="*", default=None, help="command names to run")
    parser.add_argument("--no-serve", action="store_true", help="skip `serve`")
    args = parser.parse_args()
    results: list[dict[str, object]] = []
    with tempfile.TemporaryDirectory(prefix="cli-bench-") as tmp:
        work = Path(tmp)
        env = environment(work)
        prepare(work, env)
        cli = [sys.executable, "-m", "decision_service"]
        n = 0
        for name, template in COMMANDS:
            if args.only and name not in args.only:
                continue
            cpus, codes = [], []
            for run in range(args.repeat + 1):  # run 0 warms the bytecode cache
                n += 1
                argv = [a.format(unique=f"bench-{n}", last=f"bench-{n - 1}") for a in template]
                cpu, code = cpu_of([*cli, *argv], env, work)
                if run:
                    cpus.append(cpu)
                    codes.append(code)
            results.append(_result(name, cpus, COMMAND_TARGET, max(codes)))
        if not args.no_serve and (not args.only or "serve" in args.only):
            serve_cpu(env, work)  # warm-up
            cpus = [serve_cpu(env, work) for _ in range(args.repeat)]
            results.append(_result("serve (until /health/ready)", cpus, SERVE_TARGET, 0))
    width = max(len(str(r["command"])) for r in results)
    print(f"{'command':<{width}}  median CPU s  runs                      target  verdict")
    for r in results:
        runs = " ".join(f"{x:.2f}" for x in r["runs"])  # type: ignore[attr-defined]
        print(
            f"{r['command']:<{width}}  {r['cpu_s']:>12.2f}  {runs:<24}  {r['target_s']:>5.1f}  "
            f"{r['verdict']}{'' if r['exit'] in (0, 1) else ' (exit ' + str(r['exit']) + ')'}"
        )
    met = sum(r["verdict"] == "met" for r in results)
    print(f"{met} of {len(results)} met")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


def _result(name: str, cpus: list[float], target: float, code: int) -> dict[str, object]:
    median = statistics.median(cpus)
    return {
        "command": name,
        "cpu_s": round(median, 3),
        "runs": [round(c, 3) for c in cpus],
        "target_s": target,
        "verdict": "met" if median <= target else "missed",
        "exit": code,
    }


if __name__ == "__main__":
    sys.exit(main())
