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
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from tests.audit.conftest import PG_URL, admin_execute, postgres_available  # noqa: F401
from tests.conftest import ROOT


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


ROLES = ("decider", "analyst", "auditor", "admin")


@dataclass
class Server:
    """A running `decision-service serve` and what it was started with.

    `client()` authenticates with the admin key the first start wrote (admin may call every
    route); `client(role)` with a key of that role, made once per server over POST /keys;
    `anonymous()` sends no key."""

    url: str
    database_url: str
    rules_dir: Path
    workdir: Path
    env: dict[str, str]
    process: subprocess.Popen[bytes]
    log: Path
    admin_key: str = ""
    keys: dict[str, str] = field(default_factory=dict)

    def client(self, role: str = "admin") -> httpx.Client:
        return self.client_with_key(self.key_for(role))

    def client_with_key(self, key: str) -> httpx.Client:
        headers = {"authorization": f"Bearer {key}", "content-type": "application/json"}
        return httpx.Client(base_url=self.url, timeout=30, headers=headers)

    def anonymous(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=30)

    def key_for(self, role: str) -> str:
        if role == "admin" and not self.keys.get("admin"):
            self.keys["admin"] = self.admin_key
        if role not in self.keys:
            self.keys[role] = self.new_key(role, f"e2e-{role}-{uuid.uuid4().hex[:8]}")
        return self.keys[role]

    def new_key(self, role: str, name: str) -> str:
        """Make a key over the admin API and wait until every worker accepts it (≤ 1 s)."""
        with self.client_with_key(self.admin_key) as c:
            r = c.post("/keys", json={"name": name, "role": role})
            assert r.status_code == 201, r.text
        key = r.json()["key"]
        self.wait_for_key(key, accepted=True)
        return key

    def wait_for_key(self, key: str, *, accepted: bool, timeout: float = 10.0) -> None:
        """Until a fresh connection (any worker) sees the key as known (or as unknown):
        GET /keys answers 401 to an unknown key and 403/200 to a known one."""
        deadline = time.monotonic() + timeout
        agreeing = 0  # every worker must agree: 10 fresh connections in a row (any worker each)
        while time.monotonic() < deadline:
            with self.client_with_key(key) as c:
                known = c.get("/keys").status_code != 401
            agreeing = agreeing + 1 if known == accepted else 0
            if agreeing >= 10:
                return
            if not agreeing:
                time.sleep(0.05)
        raise AssertionError(f"key not {'accepted' if accepted else 'refused'} in {timeout} s")

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


# The admin key each database's first start wrote: a later server on the same database (another
# workdir, a restart, a second replica) writes no key file, and authenticates with this one.
_ADMIN_KEYS: dict[str, str] = {}
# Likewise the audit key file: every server on one database must sign with the same key (as
# replicas of one deployment do), or verify rightly finds records under a key it does not hold.
_AUDIT_KEY_FILES: dict[str, Path] = {}


def start_server(
    workdir: Path,
    database_url: str,
    *,
    workers: int = 1,
    extra_env: dict[str, str] | None = None,
    admin_key: str | None = None,
    ready_timeout: float = 180,
) -> Server:
    """Start the service from a copy of the repo's models/ and rules/ in `workdir`.

    On a database that already has keys, the key its first start wrote is used (or pass
    `admin_key`)."""
    admin_key = admin_key or _ADMIN_KEYS.get(database_url)
    rules_dir = workdir / "rules"
    if not rules_dir.exists():
        shutil.copytree(ROOT / "rules", rules_dir)
    for shared in ("models", "notices"):  # a test may bring its own models/ (or rules/)
        if not (workdir / shared).exists():
            (workdir / shared).symlink_to(ROOT / shared)
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("DECISION_")}
    env |= {
        "DATABASE_URL": database_url,
        "DECISION_PORT": str(port),
        "DECISION_WORKERS": str(workers),
        "DECISION_RULES_WATCH": "false",
        "PYTHONPATH": str(ROOT),
    } | (extra_env or {})
    if database_url in _AUDIT_KEY_FILES:
        env.setdefault("DECISION_AUDIT_KEY_FILE", str(_AUDIT_KEY_FILES[database_url]))
    log = workdir / f"server-{port}.log"
    process = subprocess.Popen(
        [sys.executable, "-m", "decision_service", "serve"],
        cwd=workdir,
        env=env,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )
    server = Server(f"http://127.0.0.1:{port}", database_url, rules_dir, workdir, env, process, log)
    key_file = workdir / env.get("DECISION_ADMIN_KEY_FILE", "var/admin.key")
    # 180 s by default: a start is ~5 s alone, but over a minute on a shared machine under load.
    deadline = time.monotonic() + ready_timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited: {log.read_text()[-3000:]}")
        try:
            ready = httpx.get(server.url + "/health/ready", timeout=1).status_code == 200
        except httpx.HTTPError:
            ready = False
        # The first start wrote the admin key (a restart on the same database keeps it).
        if ready and (admin_key or key_file.exists()):
            server.admin_key = admin_key or key_file.read_text().strip()
            _ADMIN_KEYS.setdefault(database_url, server.admin_key)
            audit_key = Path(env.get("DECISION_AUDIT_KEY_FILE", workdir / "var" / "audit.key"))
            _AUDIT_KEY_FILES.setdefault(database_url, (workdir / audit_key).resolve())
            env.setdefault("DECISION_AUDIT_KEY_FILE", str(_AUDIT_KEY_FILES[database_url]))
            return server
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
