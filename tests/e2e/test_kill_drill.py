"""The drill: kill -9 the server (every process of it) under load, restart it on the same
database, and check that every decision answered 200 is in the store and the chains verify.
Bounded: at most LOAD_THREADS x MAX_PER_THREAD requests per run."""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
import uuid
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa

from tests.e2e.conftest import Server, start_server

pytestmark = pytest.mark.slow  # a soak: runs in the `pytest -m slow` pass (.ci/run)

LOAD_THREADS = 4
MAX_PER_THREAD = 150
KILL_AFTER = 40  # decisions answered before the kill
START_S = 180  # N workers each import and load everything: slow on a busy CI machine


def _descendants(pid: int) -> list[int]:
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            children = (task / "children").read_text().split()
        except OSError:
            continue
        for child in map(int, children):
            found += [child, *_descendants(child)]
    return found


def _kill_9(server: Server) -> int:
    """SIGKILL the server and all its workers at once, as a node failure would."""
    pids = [server.process.pid, *_descendants(server.process.pid)]
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    server.process.wait(10)
    return len(pids)


def _body(line: bytes, app_id: str) -> bytes:
    start = line.index(b'"APP-')
    return line[:start] + f'"{app_id}"'.encode() + line[line.index(b'",', start) + 1 :]


@pytest.mark.parametrize("workers", [1, 2])
def test_kill_9_under_load_loses_no_answered_decision(
    database_url: str, workers: int, tmp_path: Path, application_lines: list[bytes]
) -> None:
    tag = uuid.uuid4().hex[:6]
    server = start_server(tmp_path, database_url, workers=workers, ready_timeout=START_S)
    answered: dict[str, str] = {}  # application_id -> decision_id, for every 200
    other: list[int | str] = []
    lock = threading.Lock()
    killed = threading.Event()

    def load(worker: int) -> None:
        with server.client() as c:
            for i in range(MAX_PER_THREAD):
                app_id = f"KILL-{tag}-{worker}-{i}"
                line = application_lines[(worker * 131 + i) % len(application_lines)]
                try:
                    r = c.post("/decide", content=_body(line, app_id))
                except httpx.HTTPError as exc:  # the server died under this request
                    with lock:
                        other.append(type(exc).__name__)
                    if killed.is_set():
                        return
                    continue
                with lock:
                    if r.status_code == 200:
                        answered[app_id] = r.json()["decision_id"]
                    else:
                        other.append(r.status_code)

    threads = [threading.Thread(target=load, args=(w,)) for w in range(LOAD_THREADS)]
    try:
        for t in threads:
            t.start()
        deadline = time.monotonic() + 30
        while len(answered) < KILL_AFTER and time.monotonic() < deadline:
            time.sleep(0.02)
        assert len(answered) >= KILL_AFTER, f"load did not start: {other[:5]}"
        killed.set()
        assert _kill_9(server) >= workers
        for t in threads:
            t.join(60)
        before_restart = dict(answered)
    finally:
        killed.set()
        server.stop()

    restarted = start_server(tmp_path, database_url, workers=workers, ready_timeout=START_S)
    try:
        with restarted.client() as c:  # and it serves again
            assert c.post("/decide", content=application_lines[0]).status_code == 200
        engine = sa.create_engine(database_url)
        with engine.connect() as conn:
            stored = dict(
                conn.execute(
                    sa.text(
                        "SELECT application_id, decision_id FROM decision "
                        f"WHERE application_id LIKE 'KILL-{tag}-%'"
                    )
                ).all()
            )
        engine.dispose()
        lost = {a: d for a, d in before_restart.items() if stored.get(a) != d}
        assert lost == {}, f"{len(lost)} decisions answered 200 are not stored"
        assert set(other) <= {503, "RemoteProtocolError", "ConnectError", "ReadError"}
        verified = restarted.cli("audit", "verify")
        assert verified.returncode == 0, verified.stdout + verified.stderr
    finally:
        restarted.stop()
