"""The writer's driver-level statements store exactly what SQLAlchemy's own execution stores."""

from __future__ import annotations

from datetime import UTC, datetime

import sqlalchemy as sa

from decision_service.audit import create_tables
from decision_service.audit.bulk import bulk_insert, driver_execute
from decision_service.audit.records import record_columns
from decision_service.audit.tables import chain_head_table, decision_table
from decision_service.audit.testing import sample_decision, sample_request
from decision_service.audit.writer import _MOVE_HEAD


def test_bulk_insert_stores_what_sqlalchemy_stores(raw: sa.Engine) -> None:
    create_tables(raw)
    rows = []
    for i, via in enumerate(("orm", "bulk")):
        columns, _ = record_columns(
            sample_request(f"APP-{via}"),
            sample_decision(application_id=f"APP-{via}", decided_at="2026-11-24T21:00:00.123456Z"),
            "test",
        )
        rows.append(
            columns
            | {"chain_id": via, "seq": 1, "prev_hash": "0" * 64, "record_hash": str(i) * 64}
            | {"key_id": "k0123456789abcde", "fired_set": 1}
        )
    with raw.begin() as conn:
        conn.execute(sa.insert(decision_table), [rows[0]])
        bulk_insert(conn, decision_table, [rows[1]])
    with raw.connect() as conn:
        stored = conn.execute(sa.select(decision_table).order_by(decision_table.c.chain_id))
        bulk, orm = (dict(r._mapping) for r in stored)
        raw_times = conn.execute(sa.text("SELECT decided_at FROM decision")).scalars().all()
    differ = {k for k in orm if orm[k] != bulk[k]}
    assert differ == {
        "decision_id",
        "chain_id",
        "application_id",
        "record_hash",
        "record",
    }
    assert raw_times[0] == raw_times[1]  # same text on SQLite, same timestamptz on PostgreSQL


def test_the_head_update_stores_what_sqlalchemy_stores(raw: sa.Engine) -> None:
    create_tables(raw)
    start = {"last_seq": 0, "last_hash": "0" * 64, "updated_at": datetime(2026, 1, 1, tzinfo=UTC)}
    head = {"last_seq": 7, "last_hash": "a" * 64, "updated_at": datetime.now(UTC)}
    with raw.begin() as conn:
        conn.execute(sa.insert(chain_head_table), [{"chain_id": c, **start} for c in "ab"])
        conn.execute(_MOVE_HEAD, {"head_chain_id": "a", **head})
        driver_execute(conn, _MOVE_HEAD, [{"head_chain_id": "b", **head}])
    with raw.connect() as conn:
        a, b = (
            dict(r._mapping)
            for r in conn.execute(sa.select(chain_head_table).order_by(chain_head_table.c.chain_id))
        )
        raw_times = conn.execute(sa.text("SELECT updated_at FROM chain_head")).scalars().all()
    assert a | {"chain_id": "b"} == b
    assert a["last_seq"] == 7 and a["updated_at"] == head["updated_at"]
    assert raw_times[0] == raw_times[1]
