"""The audit key: the secret that makes the hash chains keyed (HMAC-SHA256), kept out of the DB.

The key file (``DECISION_AUDIT_KEY_FILE``, default ``var/audit.key``) holds one key per line,
``<key id> <secret in hex>``, oldest first; ``#`` starts a comment. New records use the newest
key; verification picks the key by the id stored on each record, so after a rotation
(``decision-service audit rotate-key`` appends a key) old records keep verifying as long as
their key stays in the file. A key id is a fingerprint of its secret, so a line whose id does
not match its secret is refused.

The file is created on first use with mode 0600 (owner only), atomically: several workers
starting at once all end up with the same key.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import os
import secrets
import stat
from dataclasses import dataclass, field
from pathlib import Path

import structlog

log = structlog.get_logger("decision_service.audit.keys")

DEFAULT_KEY_FILE = Path("var/audit.key")
_KEY_BYTES = 32


class AuditKeyError(Exception):
    """The key file is unreadable or malformed, or a needed key is missing."""


def key_id_of(secret: bytes) -> str:
    """A short public fingerprint of a secret (reveals nothing usable about it)."""
    return "k" + hashlib.sha256(b"decision-service audit key id\0" + secret).hexdigest()[:15]


@dataclass(frozen=True)
class Keyring:
    """The audit keys by id; ``current`` signs new records."""

    keys: dict[str, bytes]
    current_id: str | None
    path: Path | None = None
    # HMAC state with the key already absorbed, copied per message: a fresh HMAC per record
    # cost ~40% more than the plain sha256 it replaces; a copy costs about the same.
    _prepared: dict[str, hmac.HMAC] = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self) -> None:
        for key_id, secret in self.keys.items():
            self._prepared[key_id] = hmac.new(secret, digestmod="sha256")

    @property
    def current(self) -> bytes:
        if self.current_id is None:
            raise AuditKeyError(f"no audit key in {self.path}")
        return self.keys[self.current_id]

    def get(self, key_id: str) -> bytes | None:
        return self.keys.get(key_id)

    def mac(self, message: bytes, key_id: str | None = None) -> str:
        """HMAC-SHA256 (hex) of ``message`` under ``key_id`` (default: the current key)."""
        if key_id is None:
            key_id = self.current_id
        if key_id not in self._prepared:
            raise AuditKeyError(f"no audit key {key_id} in {self.path}")
        h = self._prepared[key_id].copy()
        h.update(message)
        return h.hexdigest()

    def check(self, message: bytes, key_id: str, mac: str) -> bool | None:
        """True if ``mac`` is right, False if wrong, None if the key is unknown."""
        if key_id not in self._prepared:
            return None
        return hmac.compare_digest(self.mac(message, key_id), mac)

    @classmethod
    def generate(cls) -> Keyring:
        """A keyring with one fresh key, in memory only (tests, benchmarks)."""
        secret = secrets.token_bytes(_KEY_BYTES)
        key_id = key_id_of(secret)
        return cls({key_id: secret}, key_id)

    # -- the key file ------------------------------------------------------------------------

    @classmethod
    def load(cls, path: Path) -> Keyring:
        """The keys in ``path``; an empty keyring if the file does not exist."""
        try:
            text = path.read_text()
        except FileNotFoundError:
            return cls({}, None, path)
        except OSError as exc:
            raise AuditKeyError(f"cannot read audit key file {path}: {exc}") from exc
        _warn_if_exposed(path)
        keys: dict[str, bytes] = {}
        current: str | None = None
        for number, line in enumerate(text.splitlines(), 1):
            line = line.split("#", 1)[0].strip()
            if not line:
                continue
            parts = line.split()
            try:
                key_id, secret = parts[0], bytes.fromhex(parts[1])
            except (IndexError, ValueError) as exc:
                raise AuditKeyError(f"{path}:{number}: expected '<key id> <secret hex>'") from exc
            if len(parts) != 2 or len(secret) < 16 or key_id_of(secret) != key_id:
                raise AuditKeyError(f"{path}:{number}: key id does not match its secret")
            keys[key_id] = secret
            current = key_id
        return cls(keys, current, path)

    @classmethod
    def load_or_create(cls, path: Path) -> Keyring:
        """The keys in ``path``, creating the file with one new key (mode 0600) if absent."""
        ring = cls.load(path)
        if ring.current_id is not None:
            return ring
        if path.exists():
            ring = cls.load(path)  # another worker may have just created it: read it again
            if ring.current_id is not None:
                return ring
            raise AuditKeyError(f"audit key file {path} holds no key")
        secret = secrets.token_bytes(_KEY_BYTES)
        created = _write_new(path, _line(secret), replace=False)
        ring = cls.load(path)
        if created:
            log.warning(
                "audit_key_created",
                path=str(path),
                key_id=ring.current_id,
                hint="back this file up: without it the audit log cannot be verified",
            )
        return ring

    def rotate(self) -> Keyring:
        """Append a new key to the file (the old ones stay, to verify old records)."""
        if self.path is None:
            raise AuditKeyError("this keyring has no file")
        old = self.path.read_text() if self.path.exists() else ""
        if old and not old.endswith("\n"):
            old += "\n"
        _write_new(self.path, old + _line(secrets.token_bytes(_KEY_BYTES)), replace=True)
        return Keyring.load(self.path)


def _line(secret: bytes) -> str:
    return f"{key_id_of(secret)} {secret.hex()}\n"


def _write_new(path: Path, text: str, *, replace: bool) -> bool:
    """Write ``text`` to a 0600 temp file, then link it into place (atomic; never partial).

    ``replace=False``: only if ``path`` does not exist yet (returns False if another process
    created it first)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        if replace:
            os.replace(tmp, path)
            return True
        try:
            os.link(tmp, path)
        except FileExistsError:
            return False
        return True
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def _warn_if_exposed(path: Path) -> None:
    with contextlib.suppress(OSError):
        mode = path.stat().st_mode
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            log.warning(
                "audit_key_file_exposed",
                path=str(path),
                mode=oct(stat.S_IMODE(mode)),
                hint=f"chmod 600 {path}",
            )
