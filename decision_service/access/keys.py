"""API keys: made at random, shown once, stored only as a hash.

Why sha256 and not argon2/bcrypt: those slow hashes protect *low-entropy* secrets (passwords)
against guessing. A key here is 256 random bits, so guessing it from its hash is as hopeless
with sha256 as with argon2; a fast, unsalted hash also lets each request find its key by one
dict lookup (~1 µs) instead of ~50 ms of deliberate slowness per request.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime

import sqlalchemy as sa

from decision_service.access.principal import ROLES
from decision_service.access.tables import api_key_table

KEY_PREFIX = "dsk_"  # recognisable in a leaked-secret scan
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


class KeyRefused(ValueError):
    """A key operation refused: bad role or name, name taken, unknown key."""


def new_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def key_hash(key: str | bytes) -> str:
    return hashlib.sha256(key.encode() if isinstance(key, str) else key).hexdigest()


def _utc(value: datetime | None) -> datetime | None:
    """SQLite gives naive timestamps back; every one we write is UTC."""
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=UTC)


@dataclass(frozen=True)
class KeyInfo:
    name: str
    role: str
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None


def create_key(engine: sa.Engine, name: str, role: str, *, key: str | None = None) -> str:
    """Store a new key's hash under `name` and return the key (the only time it exists)."""
    if role not in ROLES:
        raise KeyRefused(f"unknown role {role!r}; roles: {', '.join(ROLES)}")
    if not _NAME.match(name):
        raise KeyRefused(f"bad name {name!r}: 1-64 of letters, digits, '.', '_', '-'")
    key = key or new_key()
    row = {"name": name, "role": role, "key_hash": key_hash(key), "created_at": datetime.now(UTC)}
    try:
        with engine.begin() as conn:
            conn.execute(sa.insert(api_key_table), [row])
    except sa.exc.IntegrityError as exc:
        raise KeyRefused(f"a key named {name!r} exists (names are never reused)") from exc
    return key


def revoke_key(engine: sa.Engine, name: str) -> KeyInfo:
    """Revoke by name (idempotent: revoking twice keeps the first time)."""
    t = api_key_table
    with engine.begin() as conn:
        conn.execute(
            sa.update(t)
            .where(t.c.name == name, t.c.revoked_at.is_(None))
            .values(revoked_at=datetime.now(UTC))
        )
    found = [k for k in list_keys(engine) if k.name == name]
    if not found:
        raise KeyRefused(f"no key named {name!r}")
    return found[0]


def list_keys(engine: sa.Engine) -> list[KeyInfo]:
    t = api_key_table
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(
                t.c.name, t.c.role, t.c.created_at, t.c.last_used_at, t.c.revoked_at
            ).order_by(t.c.created_at, t.c.name)
        ).all()
    return [
        KeyInfo(r.name, r.role, _utc(r.created_at), _utc(r.last_used_at), _utc(r.revoked_at))
        for r in rows
    ]


def active_keys(conn: sa.Connection) -> dict[str, tuple[str, str]]:
    """key hash → (name, role) of every key not revoked."""
    t = api_key_table
    rows = conn.execute(
        sa.select(t.c.key_hash, t.c.name, t.c.role).where(t.c.revoked_at.is_(None))
    ).all()
    return {r.key_hash: (r.name, r.role) for r in rows}


def mark_used(engine: sa.Engine, names: set[str], when: datetime) -> None:
    """One UPDATE for every key used since the last call (the hot path only adds to a set)."""
    if not names:
        return
    t = api_key_table
    with engine.begin() as conn:
        conn.execute(sa.update(t).where(t.c.name.in_(sorted(names))).values(last_used_at=when))


def any_key(engine: sa.Engine) -> bool:
    with engine.connect() as conn:
        return conn.execute(sa.select(api_key_table.c.name).limit(1)).first() is not None
