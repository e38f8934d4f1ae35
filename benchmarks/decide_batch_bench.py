"""POST /decide/batch of 100 vs POST /decide: server CPU per decision, in one run.

One real server (`decision-service serve`, 1 worker, SQLite under a temp dir, rate limit off),
the same held-out applications sent as single requests and as batches of 100 from 4 client
threads with keep-alive; the server process's CPU (user + system, from /proc) over each phase,
divided by the decisions it made. Rounds alternate (single, batch, single, batch …) so a busy
machine slows both alike; the ratio is the figure to read.

    uv run --all-groups python benchmarks/decide_batch_bench.py [--decisions 4000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
APPLICATIONS = ROOT / "benchmarks" / "data" / "applications.jsonl"
BATCH = 100
TARGET = 1.0  # a batched decision should cost no more server CPU than a single one


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(workdir: Path) -> tuple[subprocess.Popen[bytes], str, str]:
    shutil.copytree(ROOT / "rules", workdir / "rules")
    (workdir / "models").symlink_to(ROOT / "models")
    (workdir / "notices").symlink_to(ROOT / "notices")  # the lenders' notice texts
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("DECISION_")}
    env |= {
        "DATABASE_URL": f"sqlite:///{workdir}/decisions.db",
        "DECISION_PORT": str(port),
        "DECISION_RULES_WATCH": "false",
        "DECISION_RATE_LIMIT": "off",
        "DECISION_LOG_DECISIONS": "false",
        "PYTHONPATH": str(ROOT),
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "decision_service", "serve"],
        cwd=workdir,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url, key_file = f"http://127.0.0.1:{port}", workdir / "var" / "admin.key"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + "/health/ready", timeout=1).status_code == 200 and key_file.exists():
                return process, url, key_file.read_text().strip()
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    process.kill()
    raise SystemExit("server did not start")


def _phase(url: str, key: str, bodies: list[bytes], path: str, pid: int) -> tuple[float, int]:
    """Server CPU seconds spent answering `bodies` on `path`, and the decisions made."""
    headers = {"authorization": f"Bearer {key}", "content-type": "application/json"}
    made = 0

    def send(chunk: list[bytes]) -> int:
        n = 0
        with httpx.Client(base_url=url, headers=headers, timeout=60) as c:
            for body in chunk:
                r = c.post(path, content=body)
                r.raise_for_status()
                n += len(r.json()["decisions"]) if path.endswith("batch") else 1
        return n

    chunks = [bodies[i::4] for i in range(4)]
    before = _cpu_seconds(pid)
    with ThreadPoolExecutor(4) as pool:
        made = sum(pool.map(send, chunks))
    return _cpu_seconds(pid) - before, made


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--decisions", type=int, default=4000, help="decisions per phase")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    lines = APPLICATIONS.read_bytes().splitlines()
    singles = [lines[i % len(lines)] for i in range(args.decisions)]
    batches = [
        b"[" + b",".join(singles[i : i + BATCH]) + b"]" for i in range(0, len(singles), BATCH)
    ]
    with tempfile.TemporaryDirectory() as tmp:
        process, url, key = _start(Path(tmp))
        try:
            _phase(url, key, singles[:200], "/decide", process.pid)  # warm up both paths
            _phase(url, key, batches[:2], "/decide/batch", process.pid)
            single_us, batch_us = [], []
            for _ in range(args.rounds):
                cpu, n = _phase(url, key, singles, "/decide", process.pid)
                single_us.append(cpu / n * 1e6)
                cpu, n = _phase(url, key, batches, "/decide/batch", process.pid)
                batch_us.append(cpu / n * 1e6)
        finally:
            process.terminate()
            process.wait(30)
    single, batch = statistics.median(single_us), statistics.median(batch_us)
    ratio = batch / single
    print(
        f"POST /decide          server CPU per decision: {single:7.1f} µs (rounds: "
        + ", ".join(f"{x:.0f}" for x in single_us)
        + ")"
    )
    print(
        f"POST /decide/batch×{BATCH} server CPU per decision: {batch:7.1f} µs (rounds: "
        + ", ".join(f"{x:.0f}" for x in batch_us)
        + ")"
    )
    verdict = "met" if ratio <= TARGET else "missed"
    print(f"batch / single: {ratio:.2f} (target ≤ {TARGET:.2f}: {verdict})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
