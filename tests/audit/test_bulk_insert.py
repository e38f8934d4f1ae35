"""The writer's driver-level executemany stores exactly what SQLAlchemy's insert stores."""

from __future__ import annotations

import sqlalchemy as sa

from decision_service.audit import create_tables
from decision_service.audit.bulk import bulk_insert
from decision_service.audit.records import record_columns
from decision_service.audit.tables import decision_table
from decision_service.audit.testing import sample_decision, sample_request


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
