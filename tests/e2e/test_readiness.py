"""Readiness tells the truth: when the store can be read but not written (a full disk, a
read-only SQLite file, a PostgreSQL database gone read-only), /health/ready answers 503 for as
long as writes fail, and 200 again after the first commit that succeeds. Every decision answered
200 meanwhile is in the store, and the chains verify."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa

from tests.audit.conftest import PG_URL, admin_execute
from tests.e2e.conftest import Server, start_server


def _body(line: bytes, app_id: str) -> bytes:
    start = line.index(b'"APP-')
    return line[:start] + f'"{app_id}"'.encode() + line[line.index(b'",', start) + 1 :]


def _until(check: Callable[[], bool], seconds: float = 45) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.25)
    return False


def _ready(c: httpx.Client) -> int:
    return c.get("/health/ready").status_code


def drill(server: Server, lines: list[bytes], break_writes, restore) -> None:
    """Writes break, readiness says so, writes come back, readiness says so; nothing lost."""
    answered: dict[str, str] = {}  # application_id -> decision_id of every 200
    tag = uuid.uuid4().hex[:6]

    def post(c: httpx.Client, i: int) -> int:
        app_id = f"RDY-{tag}-{i}"
        r = c.post("/decide", content=_body(lines[i % len(lines)], app_id))
        assert r.status_code in (200, 503), r.text
        if r.status_code == 200:
            answered[app_id] = r.json()["decision_id"]
        return r.status_code

    with server.client() as c:
        assert [post(c, i) for i in range(5)] == [200] * 5
        assert _ready(c) == 200
        break_writes()
        codes = []
        for i in range(5, 1500):  # bounded: until the store refuses a commit
            codes.append(post(c, i))
            if codes[-1] == 503:
                break
        assert codes[-1] == 503, "writes never failed"
        assert _ready(c) == 503  # not ready while writes fail ...
        assert _until(lambda: _ready(c) == 503 and post(c, 2000) == 503, 10)
        assert c.get("/health/live").status_code == 200
        restored_at = datetime.now(UTC)
        restore()
        assert _until(lambda: _ready(c) == 200), "not ready again after writes came back"
        assert [post(c, i) for i in range(3000, 3005)] == [200] * 5

    engine = sa.create_engine(server.database_url)
    try:
        with engine.connect() as conn:
            stored = dict(
                conn.execute(
                    sa.text(
                        "SELECT application_id, decision_id FROM decision "
                        f"WHERE application_id LIKE 'RDY-{tag}-%'"
                    )
                ).all()
            )
            beats = conn.execute(sa.text("SELECT max(beat_at) FROM writer_heartbeat")).scalar()
    finally:
        engine.dispose()
    assert stored == answered  # every 200 is stored, nothing else is
    # ready again because a commit succeeded: the readiness probe's heartbeat, after the restore
    beat = datetime.fromisoformat(str(beats)) if not isinstance(beats, datetime) else beats
    assert beat.replace(tzinfo=beat.tzinfo or UTC) >= restored_at.replace(microsecond=0)
    verified = server.cli("audit", "verify")
    assert verified.returncode == 0, verified.stdout + verified.stderr


@pytest.fixture
def small_tmpfs(tmp_path: Path) -> Iterator[Path]:
    mount = tmp_path / "small"
    mount.mkdir()
    if shutil.which("mount") is None:
        pytest.skip("no mount command: cannot make a small disk to fill")
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(mount)],
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs (needs root/CAP_SYS_ADMIN): {result.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_full_disk(small_tmpfs: Path, tmp_path: Path, application_lines: list[bytes]) -> None:
    url = f"sqlite:///{small_tmpfs}/decisions.db"
    server = start_server(tmp_path / "srv", url)
    filler = small_tmpfs / "filler"

    def fill() -> None:
        fd = os.open(filler, os.O_WRONLY | os.O_CREAT)
        for size in (65536, 512, 1):  # to the last byte
            with contextlib.suppress(OSError):
                while True:
                    os.write(fd, b"\0" * size)
        os.close(fd)

    try:
        drill(server, application_lines, fill, filler.unlink)
    finally:
        server.stop()


def test_read_only_sqlite_file(tmp_path: Path, application_lines: list[bytes]) -> None:
    """chattr +i: even root cannot write the file (chmod would not stop root)."""
    db = tmp_path / "db" / "decisions.db"
    server = start_server(tmp_path / "srv", f"sqlite:///{db}")
    files = [db, db.with_name("decisions.db-wal")]

    def chattr(flag: str) -> None:
        for f in files:
            subprocess.run(["chattr", flag, str(f)], check=True, capture_output=True)

    try:
        probe = subprocess.run(["chattr", "+i", str(db)], capture_output=True, text=True)
        if probe.returncode != 0:
            pytest.skip(f"chattr +i not possible here: {probe.stderr.strip()}")
        chattr("-i")
        drill(server, application_lines, lambda: chattr("+i"), lambda: chattr("-i"))
    finally:
        subprocess.run(["chattr", "-i", *map(str, files)], capture_output=True)
        server.stop()


@pytest.mark.postgres
def test_read_only_postgres_after_failover(
    tmp_path: Path, application_lines: list[bytes], postgres_available: None
) -> None:
    """What a failover to a replica looks like to the service: the database turns read-only
    and every connection is dropped."""
    name = f"ro_{uuid.uuid4().hex[:10]}"
    admin_execute(f"CREATE DATABASE {name}")
    url = sa.make_url(PG_URL).set(database=name).render_as_string(hide_password=False)

    def read_only(on: bool) -> None:
        admin_execute(
            f"ALTER DATABASE {name} SET default_transaction_read_only = {'on' if on else 'off'}",
            f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'",
        )

    server = start_server(tmp_path, url)
    try:
        drill(server, application_lines, lambda: read_only(True), lambda: read_only(False))
    finally:
        server.stop()
        admin_execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
