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


def upgrade() -> None:
    conn = op.get_bind()
    with op.batch_alter_table("decision", schema=None) as batch_op:
        batch_op.add_column(sa.Column("record", sa.LargeBinary(), nullable=True))
    texts = _decision("decision_id", "request_json", "decision_json")
    packed = _decision("decision_id", "record")
    last = ""
    while True:  # in decision_id order, BATCH rows at a time
        rows = conn.execute(
            sa.select(texts.c.decision_id, texts.c.request_json, texts.c.decision_json)
            .where(texts.c.decision_id > last)
            .order_by(texts.c.decision_id)
            .limit(BATCH)
        ).all()
        if not rows:
            break
        conn.execute(
            sa.update(packed)
            .where(packed.c.decision_id == sa.bindparam("id"))
            .values(record=sa.bindparam("packed")),
            [{"id": r.decision_id, "packed": pack(r.request_json, r.decision_json)} for r in rows],
        )
        last = rows[-1].decision_id
    with op.batch_alter_table("decision", schema=None) as batch_op:
        batch_op.alter_column("record", existing_type=sa.LargeBinary(), nullable=False)
        batch_op.drop_column("request_json")
        batch_op.drop_column("decision_json")

    op.rename_table("decision_rule", "decision_rule_0004")
    op.create_table(
        "decision_rule",
        sa.Column("decision_id", sa.String(length=36), nullable=False),
        sa.Column("rule_id", sa.String(), nullable=False),
        sa.PrimaryKeyConstraint("rule_id", "decision_id", name="pk_decision_rule"),
        sqlite_with_rowid=False,
    )
    op.execute(
        "INSERT INTO decision_rule (decision_id, rule_id) "
        "SELECT decision_id, rule_id FROM decision_rule_0004"
    )
    op.drop_table("decision_rule_0004")


def downgrade() -> None:
    conn = op.get_bind()
    op.rename_table("decision_rule", "decision_rule_0005")
    op.create_table(
        "decision_rule",
        sa.Column("decision_id", sa.String(length=36), nullable=False),
        sa.Column("rule_id", sa.String(), nullable=False),
        sa.PrimaryKeyConstraint("decision_id", "rule_id"),
        sa.Index("ix_decision_rule_rule_id", "rule_id", "decision_id"),
    )
    op.execute(
        "INSERT INTO decision_rule (decision_id, rule_id) "
        "SELECT decision_id, rule_id FROM decision_rule_0005"
    )
    op.drop_table("decision_rule_0005")

    with op.batch_alter_table("decision", schema=None) as batch_op:
        batch_op.add_column(sa.Column("request_json", sa.Text(), nullable=True))
        batch_op.add_column(sa.Column("decision_json", sa.Text(), nullable=True))
    packed = _decision("decision_id", "record")
    texts = _decision("decision_id", "request_json", "decision_json")
    last = ""
    while True:
        rows = conn.execute(
            sa.select(packed.c.decision_id, packed.c.record)
            .where(packed.c.decision_id > last)
            .order_by(packed.c.decision_id)
            .limit(BATCH)
        ).all()
        if not rows:
            break
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
        last = rows[-1].decision_id
    with op.batch_alter_table("decision", schema=None) as batch_op:
        batch_op.alter_column("request_json", existing_type=sa.Text(), nullable=False)
        batch_op.alter_column("decision_json", existing_type=sa.Text(), nullable=False)
        batch_op.drop_column("record")
