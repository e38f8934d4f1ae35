"""What the store does besides writing decisions: who did what (``access_log``,
``change_log``), signed checkpoints of this process's chain heads, and verification.

A mixin of ``AuditStore`` (store.py), which owns the writer these methods read from.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import sqlalchemy as sa

from decision_service.audit import chain
from decision_service.audit.checkpoints import CheckpointFile, Head
from decision_service.audit.keys import Keyring
from decision_service.audit.logs import LogWriter
from decision_service.audit.verify import verify as verify_database
from decision_service.audit.verify_process import VerifyFailed, verify_in_child

log = logging.getLogger("decision_service.audit.store")


def _unavailable(message: str) -> Exception:
    from decision_service.audit.store import AuditUnavailable  # store.py imports this module

    return AuditUnavailable(message)


class AuditTrail:
    # set by AuditStore.__init__
    engine: sa.Engine
    reader: sa.Engine
    chain_id: str
    keyring: Keyring
    checkpoints: CheckpointFile | None
    checkpoint_interval_s: float
    logs: LogWriter
    database_id: str | None
    _seq: int
    _prev_hash: str
    _executor: Any
    _checkpointer: asyncio.Task[None] | None
    _checkpointed: list[Head]
    _verifying: dict[bool, asyncio.Future[chain.VerifyReport]]

    async def verify(self, *, incremental: bool = False) -> chain.VerifyReport:
        """Verify every chain in a niced child process (never against this process's GIL);
        one verify at a time per mode: callers arriving meanwhile share the running report.
        A verify that passes is signed into the checkpoint file (``verified``): an
        ``incremental`` verify walks each chain only from there on."""
        running = self._verifying.get(incremental)
        if running is None or running.done():
            running = self._verifying[incremental] = asyncio.ensure_future(
                self._verify_once(incremental)
            )
        return await asyncio.shield(running)

    async def _verify_once(self, incremental: bool) -> chain.VerifyReport:
        if self.keyring.path is None:  # an in-memory key cannot be handed to a child
            return await asyncio.to_thread(self.verify_sync, incremental=incremental)
        try:
            return await verify_in_child(
                self.reader.url.render_as_string(hide_password=False),
                self.keyring.path,
                None if self.checkpoints is None else self.checkpoints.path,
                incremental=incremental,
            )
        except VerifyFailed as exc:
            raise _unavailable(f"verification failed: {exc}") from exc

    def verify_sync(self, *, incremental: bool = False) -> chain.VerifyReport:
        return verify_database(self.reader, self.keyring, self.checkpoints, incremental=incremental)

    # -- who did what (access_log, change_log) and signed checkpoints -------------------------

    async def record_access(
        self, actor: str, route: str, filters: dict[str, Any], returned: int
    ) -> None:
        """Record a read of personal data (committed before returning; AuditUnavailable if not)."""
        await asyncio.to_thread(self.record_access_sync, actor, route, filters, returned)

    def record_access_sync(
        self, actor: str, route: str, filters: dict[str, Any], returned: int
    ) -> None:
        try:
            self.logs.record_access(actor, route, filters, returned)
        except sa.exc.SQLAlchemyError as exc:
            raise _unavailable(f"cannot record access: {exc}") from exc

    async def record_change(
        self, actor: str, action: str, subject: str, before: Any = None, after: Any = None
    ) -> None:
        """Record a change (rule reload, key created/revoked, model switch), committed."""
        await asyncio.to_thread(self.record_change_sync, actor, action, subject, before, after)

    def record_change_sync(
        self, actor: str, action: str, subject: str, before: Any = None, after: Any = None
    ) -> None:
        try:
            self.logs.record_change(actor, action, subject, before, after)
        except sa.exc.SQLAlchemyError as exc:
            raise _unavailable(f"cannot record change: {exc}") from exc

    async def _start_checkpoints(self) -> None:
        """Give the database its id, adopt pre-key chains once, start periodic checkpoints.
        A database that is down now is retried by the checkpoint loop (readiness says 503)."""
        try:
            await self._init_trail()
        except Exception as exc:
            log.error("audit trail not initialised yet: %s", exc)
        if self.checkpoints is not None:
            self._checkpointer = asyncio.create_task(self._checkpoint_loop())

    async def _init_trail(self) -> None:
        database_id = await asyncio.to_thread(self.logs.init_database)
        if self.checkpoints is not None:
            await asyncio.to_thread(self.checkpoints.adopt, self.engine, self.keyring, database_id)
        self.database_id = database_id

    async def _checkpoint_loop(self) -> None:
        while True:
            await asyncio.sleep(self.checkpoint_interval_s)
            try:
                await self.checkpoint()
            except Exception as exc:  # never stop checkpointing over one failure
                log.error("audit checkpoint failed: %s", exc)

    async def checkpoint(self) -> None:
        """Sign and append this process's chain heads, if any moved since the last time."""
        if self.checkpoints is None:
            return
        if self.database_id is None:
            await self._init_trail()
        assert self.database_id is not None
        if self._executor is not None:  # read the committed head on the writer thread
            seq, last = await asyncio.get_running_loop().run_in_executor(
                self._executor, lambda: (self._seq, self._prev_hash)
            )
        else:
            seq, last = self._seq, self._prev_hash
        heads = [Head("decision", self.chain_id, seq, last)] if seq else []
        heads += [Head(name, name, s, h) for name, (s, h) in sorted(self.logs.heads().items())]
        if not heads or heads == self._checkpointed:
            return
        await asyncio.to_thread(
            self.checkpoints.write,
            self.keyring,
            self.database_id,
            heads,
            writer=f"chain:{self.chain_id}",
        )
        self._checkpointed = heads

    async def _final_checkpoint(self) -> None:
        try:
            await self.checkpoint()
        except Exception as exc:
            log.error("audit checkpoint at shutdown failed: %s", exc)
