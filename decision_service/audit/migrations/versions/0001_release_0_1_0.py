"""The schema of release 0.1.0, adopted as it is (tables made by ``create_all``).

A database that release created has these tables and no ``alembic_version``: it is stamped
with this revision when its tables match ``release_metadata()`` exactly (see
``decision_service.audit.migrations.adopt``), then upgraded like any other.

Revision ID: 0001
Revises:
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def release_metadata() -> sa.MetaData:
    """The four audit tables of release 0.1.0, frozen (plain SQLAlchemy types)."""
    md = sa.MetaData()
    sa.Table(
        "decision",
        md,
        sa.Column("decision_id", sa.String(36), primary_key=True),
        sa.Column("chain_id", sa.String(32), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("prev_hash", sa.String(64), nullable=False),
        sa.Column("record_hash", sa.String(64), nullable=False),
        sa.Column("decided_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("application_id", sa.String(), nullable=False),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("pd", sa.Float(), nullable=False),
        sa.Column("risk_band", sa.String(), nullable=True),
        sa.Column("approved_amount", sa.Float(), nullable=True),
        sa.Column("model_name", sa.String(), nullable=False),
        sa.Column("model_version", sa.String(), nullable=False),
        sa.Column("model_sha256", sa.String(), nullable=False),
        sa.Column("ruleset_name", sa.String(), nullable=False),
        sa.Column("ruleset_version", sa.String(), nullable=False),
        sa.Column("ruleset_sha256", sa.String(), nullable=False),
        sa.Column("engine", sa.String(), nullable=False),
        sa.Column("code_version", sa.String(), nullable=False),
        sa.Column("trace_id", sa.String(), nullable=True),
        sa.Column("request_json", sa.Text(), nullable=False),
        sa.Column("decision_json", sa.Text(), nullable=False),
        sa.UniqueConstraint("chain_id", "seq", name="uq_decision_chain_seq"),
        sa.Index("ix_decision_application_id", "application_id"),
        sa.Index("ix_decision_decided_at", "decided_at"),
        sa.Index("ix_decision_model_version", "model_version"),
        sa.Index("ix_decision_outcome", "outcome"),
        sa.Index("ix_decision_ruleset_version", "ruleset_version"),
    )
    sa.Table(
        "decision_rule",
        md,
        sa.Column("decision_id", sa.String(36), primary_key=True),
        sa.Column("rule_id", sa.String(), primary_key=True),
        sa.Index("ix_decision_rule_rule_id", "rule_id", "decision_id"),
    )
    sa.Table(
        "ruleset_text",
        md,
        sa.Column("sha256", sa.String(64), primary_key=True),
        sa.Column("name", sa.String(), nullable=False),
        sa.Column("version", sa.String(), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("first_seen", sa.DateTime(timezone=True), nullable=False),
    )
    sa.Table(
        "chain_head",
        md,
        sa.Column("chain_id", sa.String(32), primary_key=True),
        sa.Column("last_seq", sa.BigInteger(), nullable=False),
        sa.Column("last_hash", sa.String(64), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    return md


def upgrade() -> None:
    release_metadata().create_all(op.get_bind())


def downgrade() -> None:
    release_metadata().drop_all(op.get_bind())
