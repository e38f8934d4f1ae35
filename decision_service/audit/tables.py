"""The audit tables (SQLModel): one schema for SQLite and PostgreSQL.

- ``decision``: one row per decision, hash-chained per writer (``chain_id``, ``seq``).
- ``decision_rule``: the rules each decision fired, for the "rule fired" filter.
- ``ruleset_text``: every ruleset version ever used, by sha256, so replay can rebuild it.
- ``chain_head``: the last sequence number and hash of each chain, to detect a deleted tail.
- ``writer_heartbeat``: each writer's last write probe (readiness), outside every chain.

The schema changes only through migrations (decision_service/audit/migrations): a table added to
``TABLES`` without one fails tests/audit/test_migrations.py.
"""

from __future__ import annotations

from datetime import UTC, datetime

import sqlalchemy as sa
from sqlmodel import Field, SQLModel


class UTCDateTime(sa.TypeDecorator[datetime]):
    """A UTC timestamp with microseconds that reads back the same on SQLite and PostgreSQL.

    Stored as ``timestamptz`` on PostgreSQL and as naive UTC text on SQLite (which has no time
    zones); always returned as an aware UTC ``datetime``.
    """

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        value = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class DecisionRow(SQLModel, table=True):
    __tablename__ = "decision"
    __table_args__ = (sa.UniqueConstraint("chain_id", "seq", name="uq_decision_chain_seq"),)

    decision_id: str = Field(primary_key=True, max_length=36)  # UUIDv7: time-ordered
    chain_id: str = Field(max_length=32)
    seq: int = Field(sa_type=sa.BigInteger)
    prev_hash: str = Field(max_length=64)
    record_hash: str = Field(max_length=64)
    decided_at: datetime = Field(sa_type=UTCDateTime, index=True)
    application_id: str = Field(index=True)
    outcome: str = Field(index=True, max_length=16)
    pd: float
    risk_band: str | None = None
    approved_amount: float | None = None
    model_name: str
    model_version: str = Field(index=True)
    model_sha256: str
    ruleset_name: str
    ruleset_version: str = Field(index=True)
    ruleset_sha256: str
    engine: str
    code_version: str
    trace_id: str | None = None
    request_json: str = Field(sa_type=sa.Text)  # the application exactly as received
    decision_json: str = Field(sa_type=sa.Text)  # the decision exactly as answered


class DecisionRuleRow(SQLModel, table=True):
    __tablename__ = "decision_rule"
    __table_args__ = (sa.Index("ix_decision_rule_rule_id", "rule_id", "decision_id"),)

    decision_id: str = Field(primary_key=True, max_length=36)
    rule_id: str = Field(primary_key=True)


class RulesetTextRow(SQLModel, table=True):
    __tablename__ = "ruleset_text"

    sha256: str = Field(primary_key=True, max_length=64)
    name: str
    version: str
    text: str = Field(sa_type=sa.Text)
    first_seen: datetime = Field(sa_type=UTCDateTime)


class ChainHeadRow(SQLModel, table=True):
    __tablename__ = "chain_head"

    chain_id: str = Field(primary_key=True, max_length=32)
    last_seq: int = Field(sa_type=sa.BigInteger)
    last_hash: str = Field(max_length=64)
    updated_at: datetime = Field(sa_type=UTCDateTime)


class WriterHeartbeatRow(SQLModel, table=True):
    __tablename__ = "writer_heartbeat"

    chain_id: str = Field(primary_key=True, max_length=32)
    beat_at: datetime = Field(sa_type=UTCDateTime)


decision_table: sa.Table = DecisionRow.__table__  # type: ignore[assignment]
decision_rule_table: sa.Table = DecisionRuleRow.__table__  # type: ignore[assignment]
ruleset_text_table: sa.Table = RulesetTextRow.__table__  # type: ignore[assignment]
chain_head_table: sa.Table = ChainHeadRow.__table__  # type: ignore[assignment]
writer_heartbeat_table: sa.Table = WriterHeartbeatRow.__table__  # type: ignore[assignment]

TABLES = (
    decision_table,
    decision_rule_table,
    ruleset_text_table,
    chain_head_table,
    writer_heartbeat_table,
)


def create_tables(engine: sa.Engine) -> None:
    """Bring the database to the code's schema: migrations to head (creating an empty database,
    adopting one made by release 0.1.0). Safe when several workers start at once."""
    from decision_service.audit.migrations import upgrade

    upgrade(engine)
