"""compact decisions: request and answer packed in ``record``; decision_rule keyed by rule

Every stored decision is converted: its ``request_json`` and ``decision_json`` texts are packed
into ``record`` (decision_service.audit.encoding, format 1: a frozen format that unpacks to the
same bytes, so every chain still verifies), then the text columns are dropped. ``decision_rule``
is rebuilt keyed by (rule_id, decision_id), WITHOUT ROWID on SQLite, without its second index.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-26 04:00:00
"""

from __future__ import annotations

from collections.abc import Iterator

import sqlalchemy as sa
from alembic import op

# The one application import of a migration: the record format is frozen (format 1 unpacks the
# same forever), so this conversion stays what it was when written.
from decision_service.audit.encoding import pack, unpack

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

BATCH = 2000


def _decision(*columns: str) -> sa.TableClause:
    return sa.table("decision", *(sa.column(c) for c in columns))


def _batches(conn: sa.Connection, *columns: str) -> Iterator[list[sa.Row]]:
    """Every decision's ``columns`` (the first is decision_id), BATCH rows at a time, in
    decision_id order (keyset pagination: each batch starts after the last one's id)."""
    table = _decision(*columns)
    last = ""
    while True:
        rows = conn.execute(
            sa.select(*table.c)
            .where(table.c.decision_id > last)
            .order_by(table.c.decision_id)
            .limit(BATCH)
        ).all()
        if not rows:
            return
        yield rows
        last = rows[-1].decision_id


def _rebuild_decision_rule(*key_and_indexes: sa.SchemaItem, **table_kw: object) -> None:
    """Recreate decision_rule with another key (and indexes), keeping every row."""
    op.rename_table("decision_rule", "decision_rule_old")
    op.create_table(
        "decision_rule",
        sa.Column("decision_id", sa.String(length=36), nullable=False),
        sa.Column("rule_id", sa.String(), nullable=False),
        *key_and_indexes,
        **table_kw,
    )
    op.execute(
        "INSERT INTO decision_rule (decision_id, rule_id) "
        "SELECT decision_id, rule_id FROM decision_rule_old"
    )
    op.drop_table("decision_rule_old")


def upgrade() -> None:
    conn = op.get_bind()
    with op.batch_alter_table("decision", schema=None) as batch_op:
        batch_op.add_column(sa.Column("record", sa.LargeBinary(), nullable=True))
    packed = _decision("decision_id", "record")
    for rows in _batches(conn, "decision_id", "request_json", "decision_json"):
        conn.execute(
            sa.update(packed)
            .where(packed.c.decision_id == sa.bindparam("id"))
            .values(record=sa.bindparam("packed")),
            [{"id": r.decision_id, "packed": pack(r.request_json, r.decision_json)} for r in rows],
        )
    with op.batch_alter_table("decision", schema=None) as batch_op:
        batch_op.alter_column("record", existing_type=sa.LargeBinary(), nullable=False)
        batch_op.drop_column("request_json")
        batch_op.drop_column("decision_json")

    _rebuild_decision_rule(
        sa.PrimaryKeyConstraint("rule_id", "decision_id", name="pk_decision_rule"),
        sqlite_with_rowid=False,
    )


def downgrade() -> None:
    conn = op.get_bind()
    _rebuild_decision_rule(
        sa.PrimaryKeyConstraint("decision_id", "rule_id"),
        sa.Index("ix_decision_rule_rule_id", "rule_id", "decision_id"),
    )

    with op.batch_alter_table("decision", schema=None) as batch_op:
        batch_op.add_column(sa.Column("request_json", sa.Text(), nullable=True))
        batch_op.add_column(sa.Column("decision_json", sa.Text(), nullable=True))
    texts = _decision("decision_id", "request_json", "decision_json")
    for rows in _batches(conn, "decision_id", "record"):
        values = []
        for r in rows:
            request_json, decision_json = unpack(r.record)
            values.append({"id": r.decision_id, "req": request_json, "dec": decision_json})
        conn.execute(
            sa.update(texts)
            .where(texts.c.decision_id == sa.bindparam("id"))
            .values(request_json=sa.bindparam("req"), decision_json=sa.bindparam("dec")),
            values,
        )
    with op.batch_alter_table("decision", schema=None) as batch_op:
        batch_op.alter_column("request_json", existing_type=sa.Text(), nullable=False)
        batch_op.alter_column("decision_json", existing_type=sa.Text(), nullable=False)
        batch_op.drop_column("record")
