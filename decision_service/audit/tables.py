"""The audit tables (SQLModel): one schema for SQLite and PostgreSQL.

- ``decision``: one row per decision, hash-chained per writer (``chain_id``, ``seq``).
- ``decision_rule``: the rules each decision fired, for the "rule fired" filter.
- ``ruleset_text``: every ruleset version ever used, by sha256, so replay can rebuild it.
- ``chain_head``: the last sequence number and hash of each chain, to detect a deleted tail.
- ``model_event``: the model registry's promotions, rollbacks and retirements.
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


class ModelEventRow(SQLModel, table=True):
    """The model registry's log: which version serves live traffic, who changed it, when.

    Append-only; the live version is the last promote/rollback's ``to_version``. ``seq`` is
    unique per model, so two concurrent changes cannot both be recorded from the same state.
    """

    __tablename__ = "model_event"
    __table_args__ = (sa.UniqueConstraint("model_name", "seq", name="uq_model_event_seq"),)

    id: int | None = Field(default=None, primary_key=True)
    model_name: str = Field(max_length=64)
    seq: int
    at: datetime = Field(sa_type=UTCDateTime)
    action: str = Field(max_length=16)  # promote | rollback | retire
    from_version: str | None = Field(default=None, max_length=32)
    to_version: str = Field(max_length=32)  # retire: the version retired
    actor: str = Field(max_length=128)
    reason: str | None = Field(default=None, sa_type=sa.Text)


decision_table: sa.Table = DecisionRow.__table__  # type: ignore[assignment]
decision_rule_table: sa.Table = DecisionRuleRow.__table__  # type: ignore[assignment]
ruleset_text_table: sa.Table = RulesetTextRow.__table__  # type: ignore[assignment]
chain_head_table: sa.Table = ChainHeadRow.__table__  # type: ignore[assignment]
model_event_table: sa.Table = ModelEventRow.__table__  # type: ignore[assignment]

TABLES = (
    decision_table,
    decision_rule_table,
    ruleset_text_table,
    chain_head_table,
    model_event_table,
)


def create_tables(engine: sa.Engine) -> None:
    """Create the audit tables if absent (only ours, not every SQLModel table in the process).

    Several workers may start at once: if another one created a table between our check and
    our CREATE, the second attempt finds everything in place.
    """
    try:
        SQLModel.metadata.create_all(engine, tables=list(TABLES))
    except sa.exc.DBAPIError:
        SQLModel.metadata.create_all(engine, tables=list(TABLES))
