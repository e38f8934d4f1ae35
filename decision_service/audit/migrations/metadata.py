"""The metadata migrations are compared against: exactly the audit tables (``TABLES``)."""

from __future__ import annotations

from collections.abc import Iterable

import sqlalchemy as sa


def target_metadata(tables: Iterable[sa.Table]) -> sa.MetaData:
    """A MetaData holding only ``tables`` (SQLModel's shared metadata may hold other tables)."""
    metadata = sa.MetaData()
    for table in tables:
        table.to_metadata(metadata)
    return metadata
