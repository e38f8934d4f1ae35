"""Signed checkpoints of the chain heads, kept OUTSIDE the database.

A keyed chain cannot be edited without the key, but a database administrator can still cut
its newest records off and move the head row back. So every process periodically (and when it
stops) appends to a JSONL file (``DECISION_AUDIT_CHECKPOINT_FILE``) one line that says, under
the audit key, "in database D, chain C of log L had record seq N with hash H": only heads the
process wrote itself, never what it merely read from the database. ``audit verify`` then
requires each chain to still hold that record with that hash.

The first process started after the upgrade to keyed chains also writes an ``adopt`` line
that vouches for every chain of plain-hashed (pre-key) decisions as it finds them: from then
on a plain-hashed record no checkpoint vouches for is a forgery (chain.py, ``unanchored``).
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

import msgspec
import sqlalchemy as sa

from decision_service.audit.chain import Anchor, Problem
from decision_service.audit.keys import Keyring
from decision_service.audit.tables import decision_table

DEFAULT_CHECKPOINT_FILE = Path("var/checkpoints.jsonl")
CHECKPOINT_FORMAT = "audit-checkpoint-v1"


class Head(msgspec.Struct, frozen=True):
    log: str
    chain_id: str
    seq: int
    hash: str
    legacy_through: int = 0  # plain-hashed records this line vouches for: seq 1..legacy_through


class Checkpoint(msgspec.Struct, frozen=True, kw_only=True):
    format: str = CHECKPOINT_FORMAT
    kind: Literal["head", "adopt", "verified"]
    database: str
    at: str
    writer: str
    key_id: str
    heads: list[Head]
    mac: str = ""

    def message(self) -> bytes:
        return msgspec.json.encode(msgspec.structs.replace(self, mac=""))


_decoder = msgspec.json.Decoder(Checkpoint)


@dataclass
class CheckpointRead:
    """What a checkpoint file says about one database."""

    anchors: dict[tuple[str, str], Anchor] = field(default_factory=dict)
    adopted: bool = False  # an adopt line exists: unvouched plain-hashed records are forged
    verified: dict[tuple[str, str], Anchor] = field(default_factory=dict)  # last verify that passed
    lines: int = 0  # signed lines for this database
    other_databases: int = 0  # lines about other databases (ignored)
    problems: list[Problem] = field(default_factory=list)


class CheckpointFile:
    def __init__(self, path: Path) -> None:
        self.path = path

    @contextmanager
    def _locked(self) -> Iterator[int]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield fd
        finally:
            os.close(fd)  # releases the lock

    def write(
        self,
        keyring: Keyring,
        database: str,
        heads: Iterable[Head],
        *,
        kind: Literal["head", "adopt", "verified"] = "head",
        writer: str = "",
    ) -> Checkpoint:
        """Append one signed line (flushed to disk before returning)."""
        with self._locked() as fd:
            return self._write(fd, keyring, database, list(heads), kind, writer)

    def _write(
        self,
        fd: int,
        keyring: Keyring,
        database: str,
        heads: list[Head],
        kind: Literal["head", "adopt", "verified"],
        writer: str,
    ) -> Checkpoint:
        key_id = keyring.current_id
        assert key_id is not None
        line = Checkpoint(
            kind=kind,
            database=database,
            at=datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            writer=writer or f"pid:{os.getpid()}",
            key_id=key_id,
            heads=heads,
        )
        line = msgspec.structs.replace(line, mac=keyring.mac(line.message(), key_id))
        os.write(fd, msgspec.json.encode(line) + b"\n")
        os.fsync(fd)
        return line

    def adopt(self, engine: sa.Engine, keyring: Keyring, database: str) -> Checkpoint | None:
        """Vouch for this database's plain-hashed decision chains, once (the first start after
        the upgrade); later starts find the adopt line and do nothing."""
        with self._locked() as fd:
            if self._read(keyring, database).adopted:
                return None
            return self._write(fd, keyring, database, legacy_heads(engine), "adopt", "")

    def read(self, keyring: Keyring, database: str | None) -> CheckpointRead:
        if not self.path.exists():
            return CheckpointRead()
        with self._locked():
            return self._read(keyring, database)

    def _read(self, keyring: Keyring, database: str | None) -> CheckpointRead:
        found = CheckpointRead()
        try:
            text = self.path.read_bytes()
        except FileNotFoundError:
            return found
        for number, raw in enumerate(text.splitlines(), 1):
            if not raw.strip():
                continue
            try:
                line = _decoder.decode(raw)
                ok = keyring.check(line.message(), line.key_id, line.mac)
            except (msgspec.DecodeError, msgspec.ValidationError) as exc:
                found.problems.append(self._problem(number, f"unreadable checkpoint: {exc}"))
                continue
            if ok is None:
                found.problems.append(
                    self._problem(
                        number, f"signed with audit key {line.key_id}, not in the key file"
                    )
                )
                continue
            if not ok:
                found.problems.append(self._problem(number, "checkpoint MAC does not verify"))
                continue
            if line.database != database:
                found.other_databases += 1
                continue
            found.lines += 1
            found.adopted |= line.kind == "adopt"
            for head in line.heads:
                key = (head.log, head.chain_id)
                old = found.anchors.get(key)
                legacy = max(head.legacy_through, old.legacy_through if old else 0)
                if old is None or head.seq >= old.seq:
                    found.anchors[key] = Anchor(head.seq, head.hash, line.at, legacy)
                else:
                    found.anchors[key] = Anchor(old.seq, old.hash, old.at, legacy)
                if line.kind == "verified":
                    last = found.verified.get(key)
                    if last is None or head.seq >= last.seq:
                        found.verified[key] = Anchor(head.seq, head.hash, line.at, legacy)
        return found

    def _problem(self, number: int, detail: str) -> Problem:
        return Problem(
            str(self.path),
            number,
            None,
            "checkpoint_forged",
            f"line {number}: {detail}",
            log="checkpoints",
        )


def legacy_heads(engine: sa.Engine) -> list[Head]:
    """The head of every decision chain that holds only plain-hashed (pre-key) records."""
    d = decision_table.c
    stmt = (
        sa.select(d.chain_id, sa.func.max(d.seq).label("last"))
        .group_by(d.chain_id)
        .having(sa.func.count(d.key_id) == 0)
    )
    heads: list[Head] = []
    with engine.connect() as conn:
        for chain_id, last in conn.execute(stmt).all():
            last_hash = conn.execute(
                sa.select(d.record_hash).where(d.chain_id == chain_id, d.seq == last)
            ).scalar_one()
            heads.append(Head("decision", chain_id, last, last_hash, legacy_through=last))
    return heads
