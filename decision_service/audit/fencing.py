"""Fencing a lost session: make sure a connection we lost can no longer commit.

When the answer to COMMIT is lost, the server may still be running that COMMIT. Before we look
for the batch on a new connection, the old session must be over, or the answer could change
after we looked. PostgreSQL: end the old backend (``pg_terminate_backend``: a COMMIT already
running finishes first, an idle transaction is rolled back) and wait until it is gone.
SQLite has no server: a failed ``commit()`` call has returned, so its outcome is already final.
"""

from __future__ import annotations

import time
from typing import Any

import sqlalchemy as sa

Backend = tuple[int, Any]  # (pid, backend_start): a pid alone may be reused

_ME = sa.text("SELECT pid, backend_start FROM pg_stat_activity WHERE pid = pg_backend_pid()")
_END = sa.text(
    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
    "WHERE pid = :pid AND backend_start = :started"
)
_ALIVE = sa.text("SELECT 1 FROM pg_stat_activity WHERE pid = :pid AND backend_start = :started")


def backend_of(conn: sa.Connection) -> Backend | None:
    """The server session behind ``conn`` (PostgreSQL), or None where there is no server."""
    if conn.dialect.name != "postgresql":
        return None
    pid, started = conn.execute(_ME).one()
    conn.rollback()
    return pid, started


def end_backend(conn: sa.Connection, pid: int, started: Any, wait_s: float = 10.0) -> bool:
    """End that session and wait until it is gone; False if it still lingers after ``wait_s``."""
    params = {"pid": pid, "started": started}
    conn.execute(_END, params)
    conn.rollback()
    deadline = time.monotonic() + wait_s
    while True:
        alive = conn.execute(_ALIVE, params).first()
        conn.rollback()  # pg_stat_activity is read once per transaction
        if alive is None:
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
