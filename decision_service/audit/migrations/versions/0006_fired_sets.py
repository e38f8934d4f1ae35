"""fired sets: each decision names its set of fired rules; decision_rule is dropped

A row per (decision, fired rule) in ``decision_rule`` was over half of the bytes a decision
took. The sets repeat (a few hundred distinct ones), so each distinct set is stored once
(``fired_set``, keyed by ``encoding.fired_set_key`` of its rules), its rules in
``fired_set_rule`` (keyed by rule, WITHOUT ROWID on SQLite: the "rule fired" filter), and
``decision.fired_set`` names the set (a decision that fired nothing names the empty set),
indexed with ``decision_id`` (a "rule fired" page sorts ids from the index, not rows).
The downgrade rebuilds ``decision_rule`` (0005's shape) from the sets, row for row.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-26 10:30:00
"""

from __future__ import annotations

from collections.abc import Iterator

import sqlalchemy as sa
from alembic import op

# The one application import of a migration: the set key is frozen (encoding.py), as the
# record format is, so what this conversion stores is what writers look sets up by.
from decision_service.audit.encoding import fired_set_key

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

BATCH = 2000

_decision = sa.table("decision", sa.column("decision_id"), sa.column("fired_set"))
_decision_rule = sa.table("decision_rule", sa.column("decision_id"), sa.column("rule_id"))
_fired_set = sa.table("fired_set", sa.column("id"), sa.column("sha256"))
_fired_set_rule = sa.table("fired_set_rule", sa.column("set_id"), sa.column("rule_id"))


def _fired(conn: sa.Connection) -> Iterator[tuple[str, frozenset[str]]]:
    """Each decision that fired rules, with its rules, from decision_rule (streamed: any order
    that keeps a decision's rows together)."""
    r = _decision_rule.c
    rows = conn.execute(  # the statement streams, not the connection (it writes meanwhile)
        sa.select(r.decision_id, r.rule_id)
        .order_by(r.decision_id)
        .execution_options(yield_per=BATCH)
    )
    current, rules = None, set()
    for decision_id, rule_id in rows:
        if decision_id != current:
            if current is not None:
                yield current, frozenset(rules)
            current, rules = decision_id, set()
        rules.add(rule_id)
    if current is not None:
        yield current, frozenset(rules)


def _set_id(conn: sa.Connection, ids: dict[frozenset[str], int], rules: frozenset[str]) -> int:
    """The id of a set, stored (with its rules) the first time it is seen."""
    set_id = ids.get(rules)
    if set_id is None:
        set_id = conn.execute(
            sa.insert(_fired_set).values(sha256=fired_set_key(rules)).returning(_fired_set.c.id)
        ).scalar_one()
        if rules:
            conn.execute(
                sa.insert(_fired_set_rule), [{"set_id": set_id, "rule_id": r} for r in rules]
            )
        ids[rules] = set_id
    return set_id


def upgrade() -> None:
    conn = op.get_bind()
    op.create_table(
        "fired_set",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("sha256"),
    )
    op.create_table(
        "fired_set_rule",
        sa.Column("set_id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("rule_id", sa.String(), nullable=False),
        sa.PrimaryKeyConstraint("rule_id", "set_id", name="pk_fired_set_rule"),
        sqlite_with_rowid=False,
    )
    with op.batch_alter_table("decision", schema=None) as batch_op:
        batch_op.add_column(sa.Column("fired_set", sa.Integer(), nullable=True))

    ids: dict[frozenset[str], int] = {}
    name_set = (
        sa.update(_decision)
        .where(_decision.c.decision_id == sa.bindparam("id"))
        .values(fired_set=sa.bindparam("set_id"))
    )
    # decision_rule is streamed while the same connection writes (a server-side cursor on
    # PostgreSQL): one batch of updates in memory at a time, however many decisions there are
    pending: list[dict[str, object]] = []
    for decision_id, rules in _fired(conn):
        pending.append({"id": decision_id, "set_id": _set_id(conn, ids, rules)})
        if len(pending) >= BATCH:
            conn.execute(name_set, pending)
            pending = []
    if pending:
        conn.execute(name_set, pending)
    unnamed = sa.select(sa.func.count()).select_from(_decision)
    if conn.execute(unnamed.where(_decision.c.fired_set.is_(None))).scalar_one():
        empty = _set_id(conn, ids, frozenset())  # decisions that fired no rule
        conn.execute(
            sa.update(_decision).where(_decision.c.fired_set.is_(None)).values(fired_set=empty)
        )

    with op.batch_alter_table("decision", schema=None) as batch_op:
        batch_op.alter_column("fired_set", existing_type=sa.Integer(), nullable=False)
        batch_op.create_index("ix_decision_fired_set", ["fired_set", "decision_id"], unique=False)
    op.drop_table("decision_rule")


def downgrade() -> None:
    op.create_table(
        "decision_rule",
        sa.Column("decision_id", sa.String(length=36), nullable=False),
        sa.Column("rule_id", sa.String(), nullable=False),
        sa.PrimaryKeyConstraint("rule_id", "decision_id", name="pk_decision_rule"),
        sqlite_with_rowid=False,
    )
    op.execute(
        "INSERT INTO decision_rule (decision_id, rule_id) "
        "SELECT d.decision_id, r.rule_id FROM decision d "
        "JOIN fired_set_rule r ON r.set_id = d.fired_set"
    )
    with op.batch_alter_table("decision", schema=None) as batch_op:
        batch_op.drop_index("ix_decision_fired_set")
        batch_op.drop_column("fired_set")
    op.drop_table("fired_set_rule")
    op.drop_table("fired_set")
