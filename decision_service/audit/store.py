"""The audit store of one process: its lifecycle, appends, readiness and the async reads.

Records go through the group-commit writer (writer.py: one transaction per batch, commit before
answer, fencing when a COMMIT answer is lost); each record is encoded by records.py and
encoding.py; the sync queries live in queries.py; who read and changed what, checkpoints and
verification in trail.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.metadata
import logging
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any

import sqlalchemy as sa
import uuid_utils

from decision_service.audit import chain, idempotency, queries
from decision_service.audit.bulk import remember_ruleset
from decision_service.audit.checkpoints import CheckpointFile, Head
from decision_service.audit.engine import SQLiteSync, is_sqlite, make_engine
from decision_service.audit.fired_sets import FiredSets
from decision_service.audit.keys import DEFAULT_KEY_FILE, Keyring
from decision_service.audit.logs import LogWriter
from decision_service.audit.records import record_columns
from decision_service.audit.tables import create_tables, decision_table
from decision_service.audit.trail import AuditTrail
from decision_service.audit.writer import (
    _STOP,
    AuditUnavailable,
    CommitOutcomeUnknown,
    GroupCommitWriter,
    WriterStats,
    _Pending,
)
from decision_service.decision import Decision

__all__ = ["AuditStore", "AuditUnavailable", "CommitOutcomeUnknown", "WriterStats"]

log = logging.getLogger(__name__)

PROBE_IDLE_S = 5.0  # readiness proves writes with a heartbeat commit after this long idle
PROBE_TIMEOUT_S = 3.0  # a readiness check that takes longer counts as not ready


def default_code_version() -> str:
    try:
        return importlib.metadata.version("decision-service")
    except importlib.metadata.PackageNotFoundError:  # pragma: no cover - not installed
        return "unknown"


class AuditStore(GroupCommitWriter, AuditTrail):
    """The audit log of one process: appends (group commit), queries; who did what, signed
    checkpoints and verification come from ``AuditTrail`` (trail.py)."""

    def __init__(
        self,
        writer_engine: sa.Engine,
        reader_engine: sa.Engine | None = None,
        *,
        code_version: str | None = None,
        chain_id: str | None = None,
        max_batch: int = 1000,
        commit_wait_s: float = 0.0,
        idempotency_ttl: timedelta = timedelta(hours=24),
        keyring: Keyring | None = None,
        checkpoints: CheckpointFile | None = None,
        checkpoint_interval_s: float = 60.0,
    ) -> None:
        self.engine = writer_engine
        self.reader = reader_engine or writer_engine
        self.code_version = code_version or default_code_version()
        self.chain_id = chain_id or uuid_utils.uuid7().hex
        self.max_batch = max_batch
        self.commit_wait_s = commit_wait_s
        self._committing = self._peak = self._need = 0
        self._topped = None
        self.stats = WriterStats()
        # Told of each committed batch: (records, seconds to write and commit it); metrics.
        self.on_commit: Callable[[int, float], None] | None = None
        self._seq = 0  # last committed seq of this chain
        self._prev_hash = chain.GENESIS  # last committed record_hash
        self._resync = True  # read chain_head before the next batch (start, after a failure)
        self._healthy = False
        self._batches_seen, self._proven_at = 0, 0.0  # readiness: when writes last succeeded
        self._queue: asyncio.Queue[Any] | None = None
        self._task: asyncio.Task[None] | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._conn: sa.Connection | None = None  # used by the writer thread only
        self._closed = False
        self.idempotency_ttl = idempotency_ttl
        self._keys = idempotency.KeyWriter(idempotency_ttl)
        self._commit_sent = False  # the current batch's COMMIT went to the database
        self._backend: tuple[int, Any] | None = None  # PostgreSQL: (pid, backend_start)
        self._fired_sets = FiredSets()  # set of fired rules -> fired_set.id, once committed
        sa.event.listen(self.engine, "commit", self._on_commit)
        # The audit key (MACs) and the signed checkpoints outside the database.
        self.keyring = keyring or Keyring.load_or_create(DEFAULT_KEY_FILE)
        self.checkpoints = checkpoints
        self.checkpoint_interval_s = checkpoint_interval_s
        self.logs = LogWriter(self.engine, self.keyring)
        self.database_id: str | None = None
        self._checkpointer: asyncio.Task[None] | None = None
        self._checkpointed: list[Head] = []
        self._verifying: dict[bool, asyncio.Future[chain.VerifyReport]] = {}

    # -- lifecycle ---------------------------------------------------------------------------

    @classmethod
    def open(
        cls,
        database_url: str,
        *,
        code_version: str | None = None,
        create: bool = True,
        sqlite_synchronous: SQLiteSync = "FULL",
        busy_timeout_ms: int = 5000,
        max_batch: int = 1000,
        commit_wait_s: float = 0.0,
        idempotency_ttl: timedelta = timedelta(hours=24),
        keyring: Keyring | None = None,
        checkpoints: CheckpointFile | None = None,
        checkpoint_interval_s: float = 60.0,
    ) -> AuditStore:
        """Engines for ``database_url`` (tables created if ``create``); no writer yet.

        ``keyring``: the audit keys (default: ``var/audit.key``, created if absent);
        ``checkpoints``: where signed checkpoints go (default: none are written);
        ``commit_wait_s``: how long a batch may wait for the requests expected in it
        (writer.py; 0, the default here: it never waits)."""
        writer = make_engine(
            database_url,
            writer=True,
            sqlite_synchronous=sqlite_synchronous,
            busy_timeout_ms=busy_timeout_ms,
        )
        reader = make_engine(
            database_url, sqlite_synchronous=sqlite_synchronous, busy_timeout_ms=busy_timeout_ms
        )
        if create:
            create_tables(writer)
        return cls(
            writer,
            reader,
            code_version=code_version,
            max_batch=max_batch,
            commit_wait_s=commit_wait_s,
            idempotency_ttl=idempotency_ttl,
            keyring=keyring,
            checkpoints=checkpoints,
            checkpoint_interval_s=checkpoint_interval_s,
        )

    async def start(self) -> None:
        """Start the writer task (call from the event loop that will call ``append``)."""
        if self._task is not None:
            return
        self._queue = asyncio.Queue()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="audit-writer")
        self._task = asyncio.create_task(self._run(), name=f"audit-writer-{self.chain_id}")
        self._healthy = True
        await self._start_checkpoints()

    async def close(self) -> None:
        """Commit what is queued, stop the writer, release the connections."""
        self._closed = True
        if self._checkpointer is not None:
            self._checkpointer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._checkpointer
        if self._task is not None and self._queue is not None:
            self._enqueue(_STOP)
            await self._task
            self._task = None
        await self._final_checkpoint()
        if self._executor is not None:
            self._executor.submit(self._release_connection).result()
            self._executor.shutdown(wait=True)
            self._executor = None
        self._healthy = False
        self.engine.dispose()
        if self.reader is not self.engine:
            self.reader.dispose()

    async def __aenter__(self) -> AuditStore:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- writing -----------------------------------------------------------------------------

    async def append(
        self,
        request: bytes | str,
        decision: Decision,
        *,
        claim: idempotency.Claim | None = None,
        challengers: list[dict[str, Any]] | None = None,
    ) -> None:
        """Record one decision; returns once it is committed, else raises AuditUnavailable
        (``CommitOutcomeUnknown`` if it may have landed; ``KeyTaken`` if ``claim``'s key was
        committed by another request first)."""
        if self._closed or self._queue is None:
            raise AuditUnavailable("audit store is not running")
        record = record_columns(request, decision, self.code_version)
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._enqueue(_Pending([record], claim, future, challengers or None))
        await future

    async def append_many(
        self,
        items: Iterable[tuple[bytes | str, Decision]],
        *,
        claim: idempotency.Claim | None = None,
        challengers: list[dict[str, Any]] | None = None,
    ) -> None:
        """Record one request's decisions in ONE commit (all or none), like ``append``;
        ``challengers``: their challenger_result rows, in the same commit."""
        if self._closed or self._queue is None:
            raise AuditUnavailable("audit store is not running")
        records = [record_columns(req, d, self.code_version) for req, d in items]
        if not records:
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._enqueue(_Pending(records, claim, future, challengers or None))
        await future

    async def find_key(self, key: str) -> idempotency.Stored | None:
        """The unexpired record of an idempotency key (its request fingerprint and decisions)."""
        return await asyncio.to_thread(idempotency.lookup, self.reader, key, self.idempotency_ttl)

    def healthy(self) -> bool:
        """The writer runs and its last commit (a batch, or a readiness probe) succeeded."""
        return self._healthy and self._task is not None and not self._task.done()

    async def ping(self) -> bool:
        """Readiness: the audit tables can be read AND written.

        A read alone would say "ready" while every commit fails (disk full, read-only file or
        failover replica). Writes are known good while batches keep committing; when the last
        commit failed, or none happened for PROBE_IDLE_S, a probe commits one heartbeat row on
        the writer's own thread and connection (never a decision row, never the hot path).
        Not ready while it fails; ready again after the first commit that succeeds.
        """
        try:
            await asyncio.wait_for(asyncio.to_thread(self._ping), PROBE_TIMEOUT_S)
            if self._task is None or self._task.done():
                return False
            if self._writes_unproven():
                loop = asyncio.get_running_loop()
                probe = loop.run_in_executor(self._executor, self._probe)
                await asyncio.wait_for(probe, PROBE_TIMEOUT_S)
                self._healthy = True
        except Exception as exc:
            log.warning("audit store not ready: %s", str(exc).splitlines()[0] if str(exc) else exc)
            self._healthy = False
            return False
        return self.healthy()

    def _writes_unproven(self) -> bool:
        now = time.monotonic()
        if self._healthy and self.stats.batches != self._batches_seen:  # committed since
            self._batches_seen, self._proven_at = self.stats.batches, now
        return not self._healthy or now - self._proven_at >= PROBE_IDLE_S

    def _ping(self) -> None:
        with self.reader.connect() as conn:
            conn.execute(sa.select(decision_table.c.decision_id).limit(1)).all()
            conn.rollback()

    # -- rulesets ----------------------------------------------------------------------------

    def remember_ruleset(self, sha256: str, name: str, version: str, text: str) -> None:
        """Keep the text of a ruleset version (by sha256) for replay; no-op if already kept."""
        remember_ruleset(self.engine, sha256, name, version, text)

    def ruleset_text(self, sha256: str) -> queries.RulesetText | None:
        return queries.ruleset_text(self.reader, sha256)

    # -- reading (async wrappers for the API; the sync functions live in queries/chain) -------

    async def get(self, decision_id: str) -> queries.StoredDecision | None:
        return await asyncio.to_thread(queries.get, self.reader, decision_id)

    async def page(
        self,
        filters: queries.Filters | None = None,
        *,
        limit: int = queries.DEFAULT_LIMIT,
        cursor: str | None = None,
    ) -> queries.Page:
        return await asyncio.to_thread(
            queries.page, self.reader, filters, limit=limit, cursor=cursor
        )

    def export_jsonl(self, filters: queries.Filters | None = None) -> Iterator[str]:
        return queries.export_jsonl(self.reader, filters)

    def export_csv(self, filters: queries.Filters | None = None) -> Iterator[str]:
        return queries.export_csv(self.reader, filters)

    @property
    def is_sqlite(self) -> bool:
        return is_sqlite(self.engine)
