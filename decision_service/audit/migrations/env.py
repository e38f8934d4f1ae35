"""Alembic environment: always online, on the connection (and transaction) the caller opened.

decision_service.audit.migrations runs every command on one connection inside one transaction
(with a lock), so concurrent starts cannot both migrate. There is no alembic.ini.
"""

from __future__ import annotations

from alembic import context

from decision_service.audit.migrations.metadata import target_metadata
from decision_service.audit.migrations.rendering import render_item
from decision_service.audit.tables import TABLES

config = context.config
connection = config.attributes.get("connection")
if connection is None or context.is_offline_mode():
    raise RuntimeError("run migrations through decision_service.audit.migrations (online only)")

context.configure(
    connection=connection,
    target_metadata=target_metadata(TABLES),
    compare_type=True,
    render_as_batch=connection.dialect.name == "sqlite",  # SQLite alters by copying the table
    render_item=render_item,
    user_module_prefix="sa.",
)
with context.begin_transaction():
    context.run_migrations()
