"""Server processes: start one pinned, wait until ready, read its CPU and RSS, stop it.

The decide server runs with authentication on: on its first start it writes an admin key to
``DECISION_ADMIN_KEY_FILE``; every request the harness sends carries that key, so every
measured /decide pays for authentication.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import signal
import subprocess
import sys
import time
from hashlib import sha256
from pathlib import Path
from typing import Any

from benchmarks.harness.common import BENCH, HOST, MODEL_DIR, ROOT, PhaseError, clean_env

# The API key each decide server wrote on its first start (port → key).
AUTH_KEYS: dict[int, str] = {}


def auth_headers(port: int) -> dict[str, str]:
    key = AUTH_KEYS.get(port)
    return {"Authorization": f"Bearer {key}"} if key else {}


def http_get(port: int, path: str, timeout: float = 2.0) -> int:
    return _get(port, path, timeout, {})[0]


def _get(port: int, path: str, timeout: float, headers: dict[str, str]) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection(HOST, port, timeout=timeout)
    try:
        conn.request("GET", path, headers=headers)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def audit_counters(port: int) -> dict[str, float] | None:
    """The audit store's commit counters from a decide server's /metrics (None: not one):
    records and commits so far, and the seconds its commits took."""
    from prometheus_client.parser import text_string_to_metric_families

    try:
        status, body = _get(port, "/metrics", 5.0, auth_headers(port))
    except OSError:
        return None
    if status != 200:
        return None
    got: dict[str, float] = {}
    for family in text_string_to_metric_families(body.decode()):
        if family.name in ("audit_batch_records", "audit_commit_seconds"):
            for sample in family.samples:
                if sample.name.endswith(("_sum", "_count")):
                    got[sample.name] = got.get(sample.name, 0.0) + sample.value
    return got if "audit_batch_records_count" in got else None


class Server:
    """One server process (and its children), pinned, with its log in a file."""

    def __init__(
        self,
        name: str,
        argv: list[str],
        *,
        env: dict[str, str],
        cwd: Path,
        port: int,
        prefix: list[str],
        log_path: Path,
        key_file: Path | None = None,
        ready_path: str = "/health/ready",
        path: str = "/decide",
    ) -> None:
        self.name, self.argv, self.env, self.cwd, self.port = name, argv, env, cwd, port
        self.prefix, self.log_path, self.key_file = prefix, log_path, key_file
        self.ready_path, self.path = ready_path, path
        self.proc: subprocess.Popen[bytes] | None = None
        self.ready_cpu_s: float | None = None  # CPU of the process tree when first ready
        self.ready_wall_s: float | None = None

    def start(self, timeout: float = 120.0) -> None:
        self._log = self.log_path.open("wb")
        t0 = time.monotonic()
        self.proc = subprocess.Popen(
            [*self.prefix, *self.argv],
            env=self.env,
            cwd=self.cwd,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = t0 + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise PhaseError(f"{self.name} exited with {self.proc.returncode}:\n{self.tail()}")
            with contextlib.suppress(OSError, http.client.HTTPException):
                key_ready = self.key_file is None or self.key_file.exists()
                if key_ready and http_get(self.port, self.ready_path) == 200:
                    if self.key_file is not None:  # the first start's admin key
                        AUTH_KEYS[self.port] = self.key_file.read_text().strip()
                    self.ready_cpu_s = self.cpu_seconds()
                    self.ready_wall_s = time.monotonic() - t0
                    return
            time.sleep(0.05)
        self.stop()
        raise PhaseError(f"{self.name} not ready after {timeout:.0f}s:\n{self.tail()}")

    def tail(self, n: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def _procs(self) -> list[Any]:
        import psutil

        assert self.proc is not None
        try:
            root = psutil.Process(self.proc.pid)
            return [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []

    def cpu_seconds(self) -> float:
        """user + system CPU time of the whole process tree (all threads), from /proc."""
        import psutil

        total = 0.0
        for p in self._procs():
            with contextlib.suppress(psutil.NoSuchProcess):
                t = p.cpu_times()
                total += t.user + t.system
        return total

    def thread_cpu_seconds(self) -> tuple[float, float]:
        """(main thread, other threads) CPU time of the worker process."""
        import psutil

        procs = self._procs()
        if not procs:
            return 0.0, 0.0
        worker = procs[-1]
        main = other = 0.0
        with contextlib.suppress(psutil.NoSuchProcess):
            for t in worker.threads():
                if t.id == worker.pid:
                    main += t.user_time + t.system_time
                else:
                    other += t.user_time + t.system_time
        return main, other

    def worker_rss(self) -> int:
        """RSS (bytes) of the worker: the deepest process of the tree (gunicorn: its child)."""
        procs = self._procs()
        return procs[-1].memory_info().rss if procs else 0

    def stop(self, timeout: float = 30.0) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)  # our own session only
                self.proc.wait()
        self._log.close()


def bare_server(port: int, prefix: list[str], tmp: Path) -> Server:
    return Server(
        "bare",
        [sys.executable, str(BENCH / "bare_app.py"), "--port", str(port)],
        env=clean_env(),
        cwd=ROOT,
        port=port,
        prefix=prefix,
        log_path=tmp / f"bare-{port}.log",
    )


def decide_server(
    port: int, prefix: list[str], tmp: Path, engine: str, database_url: str, log_decisions: bool
) -> Server:
    """The real service (`python -m decision_service serve`, one worker), run from `tmp`."""
    # The admin key is written on the store's FIRST start only: one file per store, so later
    # rounds on the same store find it.
    key_file = tmp / "keys" / f"admin-{sha256(database_url.encode()).hexdigest()[:16]}.key"
    env = clean_env() | {
        "DATABASE_URL": database_url,
        "DECISION_RULES_ENGINE": engine,
        "DECISION_RULES_WATCH": "false",
        "DECISION_WORKERS": "1",
        "DECISION_HOST": HOST,
        "DECISION_PORT": str(port),
        "DECISION_LOG_DECISIONS": "true" if log_decisions else "false",
        # Authentication and the in-process limiter run on every request; the limit is set
        # out of reach so the load generator measures speed, not the rate limit.
        "DECISION_ADMIN_KEY_FILE": str(key_file),
        "DECISION_RATE_LIMIT": "100000000/second",
    }
    return Server(
        f"decide ({engine})",
        [sys.executable, "-m", "decision_service", "serve", "--port", str(port)],
        env=env,
        cwd=tmp,
        port=port,
        prefix=prefix,
        log_path=tmp / f"decide-{engine}-{port}.log",
        key_file=key_file,
    )


def textbook_server(port: int, prefix: list[str], tmp: Path, database_url: str) -> Server:
    env = clean_env() | {
        "TEXTBOOK_DATABASE_URL": database_url,
        "TEXTBOOK_MODEL_DIR": str(MODEL_DIR),
    }
    argv = [
        *(sys.executable, "-m", "gunicorn", "--chdir", str(BENCH), "textbook_app:app"),
        *("-k", "uvicorn.workers.UvicornWorker", "-w", "1", "-b", f"{HOST}:{port}"),
        *("--log-level", "warning", "--graceful-timeout", "20"),
    ]
    return Server(
        "textbook",
        argv,
        env=env,
        cwd=tmp,
        port=port,
        prefix=prefix,
        log_path=tmp / f"textbook-{port}.log",
    )
