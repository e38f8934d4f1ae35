"""Secure by default on a fresh clone: the first start with no keys makes an admin key.

The key goes to a file only its owner can read (mode 0600); the log says where, never what.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import sqlalchemy as sa

from decision_service.access.keys import KeyRefused, any_key, create_key, new_key

FIRST_KEY_NAME = "admin"


def write_secret(path: Path, secret: str) -> Path:
    """Write `secret` to a new owner-only file next to `path` (rename it into place later)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(secret + "\n")
    os.chmod(tmp, 0o600)  # whatever the umask said
    return tmp


def ensure_first_key(engine: sa.Engine, path: Path) -> Path | None:
    """If no key exists at all, make an admin key and write it to `path`; return the path.

    Several workers may start at once: the name is a primary key, so exactly one insert wins
    and only the winner moves its file into place.
    """
    if any_key(engine):
        return None
    tmp: Path | None = None
    try:
        # The file is written before the key is stored: a key nobody can read is never made.
        key = new_key()
        tmp = write_secret(path, key)
        try:
            create_key(engine, FIRST_KEY_NAME, "admin", key=key)
        except KeyRefused:
            return None  # another worker (or replica) made it first
        os.replace(tmp, path)
        tmp = None
        return path
    finally:
        if tmp is not None:
            with contextlib.suppress(OSError):
                tmp.unlink()
