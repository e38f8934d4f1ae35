"""Each worker's view of the keys: a snapshot re-read every `refresh` seconds off the hot path.

A request costs one sha256 and one dict lookup; it never touches the database. A revoked key
disappears from every worker's snapshot within `refresh` seconds (0.5 s by default). "Last
used" is collected in a set and written by the same background thread at most every
`last_used` seconds, one UPDATE for all keys used meanwhile.

If the database cannot be read, the last snapshot keeps serving (logged): every decision needs
the database anyway, and failing closed here would turn a blip into an outage of reads too.
"""

from __future__ import annotations

import hashlib
import threading
import time
from datetime import UTC, datetime

import sqlalchemy as sa
import structlog

from decision_service.access.keys import active_keys, mark_used
from decision_service.access.principal import Principal

log = structlog.get_logger("decision_service.access")


class KeyCache:
    def __init__(
        self,
        reader: sa.Engine,
        writer: sa.Engine,
        *,
        refresh: float = 0.5,
        last_used: float = 60.0,
    ) -> None:
        self.reader, self.writer = reader, writer
        self.refresh_s, self.last_used_s = refresh, last_used
        self._by_hash: dict[str, Principal] = {}
        self._used: set[str] = set()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._failing = False

    def lookup(self, token: bytes) -> Principal | None:
        """The principal of a presented key, or None (unknown or revoked). Hot path."""
        principal = self._by_hash.get(hashlib.sha256(token).hexdigest())
        if principal is not None:
            self._used.add(principal.name)
        return principal

    def refresh(self) -> None:
        with self.reader.connect() as conn:
            keys = active_keys(conn)
            conn.rollback()
        current = self._by_hash
        # Keep the same Principal objects for unchanged keys (identity stays cheap to compare).
        fresh = {}
        for digest, (name, role) in keys.items():
            old = current.get(digest)
            fresh[digest] = old if old and old.role == role else Principal(name, role)
        self._by_hash = fresh  # one reference swap: readers see the old or the new dict

    def flush_used(self) -> None:
        used, self._used = self._used, set()
        try:
            mark_used(self.writer, used, datetime.now(UTC))
        except Exception:
            self._used |= used  # try again next time
            raise

    def start(self) -> None:
        """Load the keys now (so the first request is answered right), then keep refreshing."""
        self.refresh()
        self._thread = threading.Thread(target=self._run, name="key-cache", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None
        try:
            self.flush_used()
        except Exception as exc:
            log.warning("key_last_used_not_written", error=str(exc))

    def _run(self) -> None:
        next_flush = time.monotonic() + self.last_used_s
        while not self._stop.wait(self.refresh_s):
            try:
                self.refresh()
                if time.monotonic() >= next_flush:
                    next_flush = time.monotonic() + self.last_used_s
                    self.flush_used()
                if self._failing:
                    log.info("key_cache_recovered")
                self._failing = False
            except Exception as exc:
                if not self._failing:
                    log.warning("key_cache_refresh_failed", error=str(exc))
                self._failing = True
