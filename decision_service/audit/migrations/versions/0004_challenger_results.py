"""challenger results

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-26 01:57:45.008549
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "challenger_result",
        sa.Column("decision_id", sa.String(length=36), nullable=False),
        sa.Column("challenger", sa.String(length=128), nullable=False),
        sa.Column("version", sa.String(length=64), nullable=False),
        sa.Column("ruleset_sha256", sa.String(length=64), nullable=False),
        sa.Column("engine", sa.String(length=32), nullable=False),
        sa.Column("model_version", sa.String(length=32), nullable=False),
        sa.Column("model_sha256", sa.String(length=64), nullable=False),
        sa.Column("outcome", sa.String(length=16), nullable=True),
        sa.Column("approved_amount", sa.Float(), nullable=True),
        sa.Column("risk_band", sa.String(), nullable=True),
        sa.Column("pd", sa.Float(), nullable=True),
        sa.Column("fired_json", sa.Text(), nullable=False),
        sa.Column("reasons_json", sa.Text(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("key_id", sa.String(length=16), nullable=False),
        sa.Column("mac", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("decision_id", "challenger"),
    )
    with op.batch_alter_table("challenger_result", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_challenger_result_challenger"), ["challenger"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("challenger_result", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_challenger_result_challenger"))

    op.drop_table("challenger_result")
