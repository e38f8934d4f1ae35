"""Who did what: the ``access_log`` and ``change_log`` chains.

Each log is ONE chain for the whole database (all workers, replicas and the CLI append to it):
an append locks the log's head row (PostgreSQL: ``SELECT … FOR UPDATE``; SQLite: the writer's
``BEGIN IMMEDIATE``), so the chain stays linear across processes. Records are MAC'd under the
audit key like decisions (chain.py); appends are rare (reads of personal data, reloads, key
changes), so the lock costs nothing that matters.

The first record of ``change_log`` is ``audit.init``: its subject is this database's id, which
signed checkpoints carry, so a checkpoint file is never mistaken for another database's.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import msgspec
import sqlalchemy as sa
import uuid_utils

from decision_service.audit.bulk import insert_or_skip
from decision_service.audit.chain import GENESIS, LogSpec, canonical_values
from decision_service.audit.keys import Keyring
from decision_service.audit.tables import access_log_table, change_log_table, log_head_table

LOG_FORMAT = "audit-log-v1"
ACCESS_COLUMNS = ("id", "at", "actor", "route", "filters", "returned")
CHANGE_COLUMNS = ("id", "at", "actor", "action", "subject", "before", "after")
INIT_ACTION = "audit.init"


def _message(log: str, columns: tuple[str, ...]):
    def message(
        key_id: str, chain_id: str, seq: int, prev_hash: str, row: Mapping[str, Any]
    ) -> bytes:
        return canonical_values([LOG_FORMAT, log, key_id, chain_id, seq, prev_hash], row, columns)

    return message


ACCESS = LogSpec("access_log", "id", _message("access_log", ACCESS_COLUMNS))
CHANGE = LogSpec("change_log", "id", _message("change_log", CHANGE_COLUMNS))
LOG_TABLES: dict[str, tuple[LogSpec, sa.Table]] = {
    "access_log": (ACCESS, access_log_table),
    "change_log": (CHANGE, change_log_table),
}


def canonical_json(value: Any) -> str | None:
    """Sorted-key JSON text (None stays None): how filters and before/after are stored."""
    if value is None:
        return None
    return msgspec.json.encode(value, order="sorted").decode()


def _lock_head(conn: sa.Connection, log: str, table: sa.Table) -> tuple[int, str]:
    """The log's last (seq, hash), with its head row locked until the transaction ends."""
    h = log_head_table.c
    head = conn.execute(
        sa.select(h.last_seq, h.last_hash).where(h.log == log).with_for_update()
    ).first()
    if head is not None:
        return head.last_seq, head.last_hash
    # No head row yet (new log, or deleted): start from the last record, and create the row
    # so concurrent appenders queue on it.
    last = conn.execute(
        sa.select(table.c.seq, table.c.record_hash).order_by(table.c.seq.desc()).limit(1)
    ).first()
    seq, last_hash = (0, GENESIS) if last is None else (last.seq, last.record_hash)
    conn.execute(
        insert_or_skip(conn, log_head_table, ["log"]).values(
            log=log, last_seq=seq, last_hash=last_hash, updated_at=datetime.now(UTC)
        )
    )
    head = conn.execute(
        sa.select(h.last_seq, h.last_hash).where(h.log == log).with_for_update()
    ).one()
    return head.last_seq, head.last_hash


def append(
    engine: sa.Engine,
    keyring: Keyring,
    log: str,
    values: dict[str, Any],
    *,
    only_if_empty: bool = False,
) -> tuple[int, str] | None:
    """Append one record to ``log``; returns its (seq, record_hash) once committed.

    ``only_if_empty``: append only as the log's first record (None if it has one already)."""
    spec, table = LOG_TABLES[log]
    with engine.begin() as conn:
        seq, prev_hash = _lock_head(conn, log, table)
        if only_if_empty and seq > 0:
            return None
        if log == "change_log" and seq == 0 and values.get("action") != INIT_ACTION:
            # whoever writes first (the CLI, say), the database's id comes first
            seq, prev_hash = _insert(conn, keyring, spec, table, log, seq, prev_hash, _init())
        seq, record_hash = _insert(conn, keyring, spec, table, log, seq, prev_hash, values)
        conn.execute(
            sa.update(log_head_table)
            .where(log_head_table.c.log == log)
            .values(last_seq=seq, last_hash=record_hash, updated_at=datetime.now(UTC))
        )
    return seq, record_hash


def _init() -> dict[str, Any]:
    return {
        "actor": "audit-store",
        "action": INIT_ACTION,
        "subject": uuid_utils.uuid7().hex,
        "before": None,
        "after": None,
    }


def _insert(
    conn: sa.Connection,
    keyring: Keyring,
    spec: LogSpec,
    table: sa.Table,
    log: str,
    seq: int,
    prev_hash: str,
    values: dict[str, Any],
) -> tuple[int, str]:
    seq += 1
    key_id = keyring.current_id
    assert key_id is not None
    row = {"id": str(uuid_utils.uuid7()), "at": datetime.now(UTC), **values}
    row |= {"seq": seq, "prev_hash": prev_hash, "key_id": key_id}
    row["record_hash"] = keyring.mac(spec.message(key_id, log, seq, prev_hash, row), key_id)
    conn.execute(sa.insert(table), [row])
    return seq, row["record_hash"]


def database_id(engine: sa.Engine) -> str | None:
    """This database's id: the subject of change_log's first record (``audit.init``)."""
    t = change_log_table.c
    with engine.connect() as conn:
        row = conn.execute(sa.select(t.subject).where(t.seq == 1, t.action == INIT_ACTION)).first()
    return None if row is None else row.subject


class LogWriter:
    """Appends to access_log and change_log for one process, and remembers the last record it
    wrote to each (what its signed checkpoints vouch for)."""

    def __init__(self, engine: sa.Engine, keyring: Keyring) -> None:
        self.engine = engine
        self.keyring = keyring
        self._lock = threading.Lock()
        self.written: dict[str, tuple[int, str]] = {}

    def _append(self, log: str, values: dict[str, Any], **kw: Any) -> tuple[int, str] | None:
        done = append(self.engine, self.keyring, log, values, **kw)
        if done is not None:
            with self._lock:
                if done[0] > self.written.get(log, (0, ""))[0]:
                    self.written[log] = done
        return done

    def init_database(self) -> str:
        """This database's id, written as change_log's first record if it has none yet."""
        self._append("change_log", _init(), only_if_empty=True)
        found = database_id(self.engine)
        if found is None:  # change_log has records but no audit.init: verify names it
            return "unknown"
        return found

    def record_access(
        self, actor: str, route: str, filters: Mapping[str, Any], returned: int
    ) -> None:
        kept = {k: v for k, v in filters.items() if v is not None}
        self._append(
            "access_log",
            {
                "actor": actor,
                "route": route,
                "filters": canonical_json(kept),
                "returned": int(returned),
            },
        )

    def record_change(
        self, actor: str, action: str, subject: str, before: Any = None, after: Any = None
    ) -> None:
        self._append(
            "change_log",
            {
                "actor": actor,
                "action": action,
                "subject": subject,
                "before": canonical_json(before),
                "after": canonical_json(after),
            },
        )

    def heads(self) -> dict[str, tuple[int, str]]:
        with self._lock:
            return dict(self.written)
