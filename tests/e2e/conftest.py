"""End-to-end fixtures: the real server process (`decision-service serve`) over HTTP, on
SQLite and on PostgreSQL (a database created for the run and dropped after it)."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.audit.conftest import PG_URL, admin_execute, postgres_available  # noqa: F401
from tests.conftest import ROOT


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Server:
    """A running `decision-service serve` and what it was started with."""

    url: str
    database_url: str
    rules_dir: Path
    workdir: Path
    env: dict[str, str]
    process: subprocess.Popen[bytes]
    log: Path

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=30)

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        """Run `decision-service …` against the same settings as the server."""
        return subprocess.run(
            [sys.executable, "-m", "decision_service", *args],
            cwd=self.workdir,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=300,
        )

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def start_server(
    workdir: Path,
    database_url: str,
    *,
    workers: int = 1,
    extra_env: dict[str, str] | None = None,
    ready_timeout: float = 60,
) -> Server:
    """Start the service from a copy of the repo's models/ and rules/ in `workdir`."""
    rules_dir = workdir / "rules"
    if not rules_dir.exists():
        shutil.copytree(ROOT / "rules", rules_dir)
        (workdir / "models").symlink_to(ROOT / "models")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("DECISION_")}
    env |= {
        "DATABASE_URL": database_url,
        "DECISION_PORT": str(port),
        "DECISION_WORKERS": str(workers),
        "DECISION_RULES_WATCH": "false",
        "PYTHONPATH": str(ROOT),
    } | (extra_env or {})
    log = workdir / f"server-{port}.log"
    process = subprocess.Popen(
        [sys.executable, "-m", "decision_service", "serve"],
        cwd=workdir,
        env=env,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )
    server = Server(f"http://127.0.0.1:{port}", database_url, rules_dir, workdir, env, process, log)
    deadline = time.monotonic() + ready_timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited: {log.read_text()[-3000:]}")
        try:
            if httpx.get(server.url + "/health/ready", timeout=1).status_code == 200:
                return server
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    server.stop()
    raise RuntimeError(f"server not ready in {ready_timeout} s: {log.read_text()[-3000:]}")


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest, tmp_path_factory) -> Iterator[str]:
    if request.param == "sqlite":
        path = tmp_path_factory.mktemp("db") / "decisions.db"
        yield f"sqlite:///{path}"
        return
    request.getfixturevalue("postgres_available")
    name = f"e2e_{uuid.uuid4().hex[:12]}"
    admin_execute(f"CREATE DATABASE {name}")
    import sqlalchemy as sa

    yield sa.make_url(PG_URL).set(database=name).render_as_string(hide_password=False)
    admin_execute(
        f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'",
        f"DROP DATABASE IF EXISTS {name}",
    )


@pytest.fixture(scope="module")
def server(database_url: str, tmp_path_factory) -> Iterator[Server]:
    srv = start_server(tmp_path_factory.mktemp("srv"), database_url)
    yield srv
    srv.stop()
