"""The audit tables (SQLModel): one schema for SQLite and PostgreSQL.

- ``decision``: one row per decision, hash-chained per writer (``chain_id``, ``seq``); its
  request and answer packed in ``record`` (encoding.py).
- ``fired_set``: each distinct set of fired rules, once (decisions repeat a few hundred sets);
  ``decision.fired_set`` names its decision's set. ``fired_set_rule``: the rules of each set,
  keyed by rule, for the "rule fired" filter.
- ``ruleset_text``: every ruleset version ever used, by sha256, so replay can rebuild it.
- ``chain_head``: the last sequence number and hash of each chain, to detect a deleted tail.
- ``idempotency_key``: a client's Idempotency-Key → the decisions it produced, written in the
  same commit as those decisions (see idempotency.py).
- ``access_log``: every read of personal data (who, when, route, filters, how many records).
- ``change_log``: every change to what decides (rule reloads, keys; later model switches).
- ``log_head``: the last seq and hash of ``access_log`` and ``change_log`` (one chain each).

Every chained record carries ``key_id``: the audit key its MAC was made with (NULL on
decisions recorded before the audit key existed: plain sha256, see chain.py).
- ``model_event``: the model registry's promotions, rollbacks and retirements.
- ``writer_heartbeat``: each writer's last write probe (readiness), outside every chain.

The schema changes only through migrations (decision_service/audit/migrations): a table added to
``TABLES`` without one fails tests/audit/test_migrations.py.
- ``challenger_result``: each sampled challenger's outcome on a decision's facts (same commit).
"""

from __future__ import annotations

from datetime import UTC, datetime

import sqlalchemy as sa
from sqlmodel import Field, SQLModel

from decision_service.access.tables import api_key_table


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
    __table_args__ = (
        sa.UniqueConstraint("chain_id", "seq", name="uq_decision_chain_seq"),
        # the "rule fired" filter: its sets' decisions, in decision_id order within each set
        # (a page sorts ids from the index, not whole rows: 10x faster for a common rule)
        sa.Index("ix_decision_fired_set", "fired_set", "decision_id"),
    )

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
    # the application exactly as received and the decision exactly as answered, packed
    # (encoding.py: ~370 bytes instead of ~2.3 KB of JSON)
    record: bytes = Field(sa_type=sa.LargeBinary)
    key_id: str | None = Field(default=None, max_length=16)  # NULL: plain-hashed (pre-key)
    # the set of rules it fired (fired_set.id): not hashed, verify checks it against `record`
    fired_set: int


class FiredSetRow(SQLModel, table=True):
    """One distinct set of fired rules. A row per (decision, rule) was over half of the bytes
    a decision took (~8 rules each, with their index); the sets repeat, so each decision names
    its set instead. Written in the commit of the first decision that fires it (fired_sets.py)."""

    __tablename__ = "fired_set"

    id: int | None = Field(default=None, primary_key=True)
    sha256: str = Field(max_length=64, unique=True)  # encoding.fired_set_key of its rules


class FiredSetRuleRow(SQLModel, table=True):
    """One rule of a set. Keyed by (rule, set): the key serves the "rule fired" filter (the
    sets that hold the rule, then their decisions by ``ix_decision_fired_set``); on SQLite the
    table is that key (WITHOUT ROWID)."""

    __tablename__ = "fired_set_rule"
    __table_args__ = (
        sa.PrimaryKeyConstraint("rule_id", "set_id", name="pk_fired_set_rule"),
        {"sqlite_with_rowid": False},
    )

    set_id: int = Field(primary_key=True)
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


class IdempotencyKeyRow(SQLModel, table=True):
    __tablename__ = "idempotency_key"

    # "<API key name>/<Idempotency-Key>": each caller has its own key space. The primary key
    # decides races.
    key: str = Field(primary_key=True, max_length=320)
    request_sha256: str = Field(max_length=64)  # what was asked: same key, other request → 422
    decision_ids: str = Field(sa_type=sa.Text)  # space-separated, in answer order
    created_at: datetime = Field(sa_type=UTCDateTime, index=True)  # expiry and purge


class AccessLogRow(SQLModel, table=True):
    """One read of personal data: by whom, when, how, and how many records it returned."""

    __tablename__ = "access_log"

    seq: int = Field(
        sa_column_kwargs={"autoincrement": False}, sa_type=sa.BigInteger, primary_key=True
    )
    id: str = Field(max_length=36, unique=True)  # UUIDv7
    at: datetime = Field(sa_type=UTCDateTime, index=True)
    actor: str = Field(index=True)  # API key name, or cli:<os user>
    route: str
    filters: str = Field(sa_type=sa.Text)  # canonical JSON of the query
    returned: int
    prev_hash: str = Field(max_length=64)
    record_hash: str = Field(max_length=64)
    key_id: str = Field(max_length=16)


class ChangeLogRow(SQLModel, table=True):
    """One change to what decides or who may call: rule reload, key created/revoked, model."""

    __tablename__ = "change_log"

    seq: int = Field(
        sa_column_kwargs={"autoincrement": False}, sa_type=sa.BigInteger, primary_key=True
    )
    id: str = Field(max_length=36, unique=True)  # UUIDv7
    at: datetime = Field(sa_type=UTCDateTime, index=True)
    actor: str = Field(index=True)  # API key name, file-watch, or cli:<os user>
    action: str = Field(index=True)  # rules.reload, rules.reload_rejected, key.create, ...
    subject: str
    before: str | None = Field(default=None, sa_type=sa.Text)  # canonical JSON
    after: str | None = Field(default=None, sa_type=sa.Text)  # canonical JSON
    prev_hash: str = Field(max_length=64)
    record_hash: str = Field(max_length=64)
    key_id: str = Field(max_length=16)


class LogHeadRow(SQLModel, table=True):
    __tablename__ = "log_head"

    log: str = Field(primary_key=True, max_length=32)  # access_log | change_log
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


class WriterHeartbeatRow(SQLModel, table=True):
    __tablename__ = "writer_heartbeat"

    chain_id: str = Field(primary_key=True, max_length=32)
    beat_at: datetime = Field(sa_type=UTCDateTime)


class ChallengerResultRow(SQLModel, table=True):
    """What a challenger would have decided on a decision's facts: recorded in the decision's
    commit, never answered. ``mac``: HMAC (audit key ``key_id``) of the row, see shadow.py."""

    __tablename__ = "challenger_result"

    decision_id: str = Field(primary_key=True, max_length=36)
    challenger: str = Field(primary_key=True, max_length=128, index=True)
    version: str = Field(max_length=64)
    ruleset_sha256: str = Field(max_length=64)
    engine: str = Field(max_length=32)
    model_version: str = Field(max_length=32)  # the champion's, unless the challenger names one
    model_sha256: str = Field(max_length=64)  # "" if the challenger's model could not be loaded
    outcome: str | None = Field(default=None, max_length=16)  # None: the challenger failed
    approved_amount: float | None = None
    risk_band: str | None = None
    pd: float | None = None
    fired_json: str = Field(default="[]", sa_type=sa.Text)  # rule ids, in firing order
    reasons_json: str = Field(default="[]", sa_type=sa.Text)  # reason codes
    error: str | None = Field(default=None, sa_type=sa.Text)
    key_id: str = Field(max_length=16)
    mac: str = Field(max_length=64)


decision_table: sa.Table = DecisionRow.__table__  # type: ignore[assignment]
fired_set_table: sa.Table = FiredSetRow.__table__  # type: ignore[assignment]
fired_set_rule_table: sa.Table = FiredSetRuleRow.__table__  # type: ignore[assignment]
ruleset_text_table: sa.Table = RulesetTextRow.__table__  # type: ignore[assignment]
chain_head_table: sa.Table = ChainHeadRow.__table__  # type: ignore[assignment]
idempotency_key_table: sa.Table = IdempotencyKeyRow.__table__  # type: ignore[assignment]
access_log_table: sa.Table = AccessLogRow.__table__  # type: ignore[assignment]
change_log_table: sa.Table = ChangeLogRow.__table__  # type: ignore[assignment]
log_head_table: sa.Table = LogHeadRow.__table__  # type: ignore[assignment]
model_event_table: sa.Table = ModelEventRow.__table__  # type: ignore[assignment]
writer_heartbeat_table: sa.Table = WriterHeartbeatRow.__table__  # type: ignore[assignment]
challenger_result_table: sa.Table = ChallengerResultRow.__table__  # type: ignore[assignment]

TABLES = (
    decision_table,
    fired_set_table,
    fired_set_rule_table,
    ruleset_text_table,
    chain_head_table,
    idempotency_key_table,
    api_key_table,
    access_log_table,
    change_log_table,
    log_head_table,
    model_event_table,
    writer_heartbeat_table,
    challenger_result_table,
)


def create_tables(engine: sa.Engine) -> None:
    """Bring the database to the code's schema: migrations to head (creating an empty database,
    adopting one made by release 0.1.0). Safe when several workers start at once."""
    from decision_service.audit.migrations import upgrade

    upgrade(engine)
