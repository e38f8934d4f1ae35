"""The `api_key` table: on the audit store's SQLModel metadata, so every worker and replica
sees the same keys (created with the audit tables: see audit/tables.py `TABLES`).

Only a hash of each key is stored. Names are primary keys and never reused, so a name in an
access or change log always means one key, even after it is revoked.
"""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlmodel import Field, SQLModel


class ApiKeyRow(SQLModel, table=True):
    __tablename__ = "api_key"

    name: str = Field(primary_key=True, max_length=64)
    role: str = Field(max_length=16)
    key_hash: str = Field(max_length=64, unique=True)  # sha256 hex of the whole key
    created_at: datetime = Field(sa_type=sa.DateTime(timezone=True))
    last_used_at: datetime | None = Field(default=None, sa_type=sa.DateTime(timezone=True))
    revoked_at: datetime | None = Field(default=None, sa_type=sa.DateTime(timezone=True))


api_key_table: sa.Table = ApiKeyRow.__table__  # type: ignore[assignment]
