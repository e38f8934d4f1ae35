"""Idempotency keys: a client's retry of the same request gets the decisions already made.

A key is claimed in the SAME transaction that records its decisions, so a key exists exactly
when its decisions do (a crash or a lost commit acknowledgement cannot separate them), and the
primary key decides between concurrent requests with the same key, whichever worker or replica
they reach. A key is kept for a window (``DECISION_IDEMPOTENCY_TTL``); after it, the key is
free again. Expired keys are deleted by the writer, at most once a minute, in a batch that
claims keys anyway (one indexed range delete), so a service that never sees the header never
touches the table.
"""

from __future__ import annotations

import hashlib
import re
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa

from decision_service.audit.encoding import unpack
from decision_service.audit.tables import decision_table, idempotency_key_table

HEADER = b"idempotency-key"
MAX_KEY_LENGTH = 255
# Visible ASCII that needs no quoting anywhere (UUIDs, ULIDs, base64/base64url, prefixes).
_KEY = re.compile(r"[A-Za-z0-9._~:+/=-]{1,255}")
PURGE_EVERY_S = 60.0


class InvalidIdempotencyKey(ValueError):
    """The header is not a usable key (empty, too long, characters outside the allowed set)."""


class KeyTaken(Exception):
    """Another request committed this key first (the unique constraint decided)."""


@dataclass(frozen=True, slots=True)
class Claim:
    """A key and the fingerprint of the request it was sent with."""

    key: str
    request_sha256: str


@dataclass(frozen=True, slots=True)
class Stored:
    """What a key recorded: the request's fingerprint and the decisions as answered."""

    request_sha256: str
    decisions_json: list[str]


def claim(value: bytes | str, *request: bytes, caller: str = "") -> Claim:
    """Validate a header value and fingerprint the request (e.g. route, query, body) with it.

    An RFC 8941 string (``"…"``, as the IETF draft writes it) is accepted as well as a bare token.
    ``caller`` (the API key's name) scopes the key: one loan system can neither replay nor
    block another's decisions by sending the same key.
    """
    key = value.decode("latin-1") if isinstance(value, bytes) else value
    if len(key) >= 2 and key[0] == key[-1] == '"':
        key = key[1:-1]
    if not _KEY.fullmatch(key):
        raise InvalidIdempotencyKey(
            f"Idempotency-Key must be 1 to {MAX_KEY_LENGTH} characters of "
            "A-Z a-z 0-9 and . _ ~ : + / = - (a UUID is a good key)"
        )
    digest = hashlib.sha256()
    for part in request:
        digest.update(len(part).to_bytes(8, "big"))  # unambiguous concatenation
        digest.update(part)
    return Claim(f"{caller}/{key}" if caller else key, digest.hexdigest())


def lookup(engine: sa.Engine, key: str, ttl: timedelta) -> Stored | None:
    """The unexpired record of ``key``, with its decisions as stored, or None."""
    table = idempotency_key_table
    with engine.connect() as conn:
        row = conn.execute(
            sa.select(table.c.request_sha256, table.c.decision_ids).where(
                table.c.key == key, table.c.created_at >= datetime.now(UTC) - ttl
            )
        ).first()
        if row is None:
            return None
        ids = row.decision_ids.split()
        found = {
            decision_id: unpack(record)[1]
            for decision_id, record in conn.execute(
                sa.select(decision_table.c.decision_id, decision_table.c.record).where(
                    decision_table.c.decision_id.in_(ids)
                )
            )
        }
        conn.rollback()
    if len(found) != len(ids):  # a key without its decisions: the log was edited
        raise LookupError(f"idempotency key {key!r} names decisions missing from the log")
    return Stored(row.request_sha256, [found[i] for i in ids])


class KeyWriter:
    """Writes claims inside the writer's batch transaction (writer thread only)."""

    def __init__(self, ttl: timedelta) -> None:
        self.ttl = ttl
        self._last_purge = 0.0

    def write(self, conn: sa.Connection, claims: list[tuple[Claim, list[str]]]) -> None:
        table = idempotency_key_table
        now = datetime.now(UTC)
        cutoff = now - self.ttl
        if time.monotonic() - self._last_purge >= PURGE_EVERY_S:
            conn.execute(sa.delete(table).where(table.c.created_at < cutoff))
            self._last_purge = time.monotonic()
        else:  # an expired key being reused must make room, purge or not
            conn.execute(
                sa.delete(table).where(
                    table.c.key.in_([c.key for c, _ in claims]), table.c.created_at < cutoff
                )
            )
        conn.execute(
            sa.insert(table),
            [
                {
                    "key": c.key,
                    "request_sha256": c.request_sha256,
                    "decision_ids": " ".join(ids),
                    "created_at": now,
                }
                for c, ids in claims
            ],
        )


def is_key_conflict(exc: sa.exc.IntegrityError) -> bool:
    """Did this integrity error come from the idempotency key's primary key?"""
    text = str(exc.orig)
    return "idempotency_key" in text
