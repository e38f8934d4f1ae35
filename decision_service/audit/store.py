"""The audit store: group commit with per-request durability.

One writer per process. ``append`` queues a record and waits for its future; the writer task
takes everything queued, gives it the next seq numbers and hashes, and commits the whole batch
in ONE transaction on a dedicated thread, so the event loop keeps accepting requests (and the
next batch forms) while the commit runs. A batch commits as soon as the writer is free; nothing
waits on a timer. ``append`` returns only once its record is committed, and raises
``AuditUnavailable`` if that commit failed: then no record of the batch is stored, the chain
state goes back to the last committed record, and the next batch tries the database afresh.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import importlib.metadata
import logging
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
import uuid_utils

from decision_service.audit import chain, queries
from decision_service.audit.engine import SQLiteSync, is_sqlite, make_engine
from decision_service.audit.records import record_columns
from decision_service.audit.tables import (
    chain_head_table,
    create_tables,
    decision_rule_table,
    decision_table,
    ruleset_text_table,
    writer_heartbeat_table,
)
from decision_service.decision import Decision

log = logging.getLogger(__name__)

PROBE_IDLE_S = 5.0  # readiness proves writes with a heartbeat commit after this long idle
PROBE_TIMEOUT_S = 3.0  # a readiness check that takes longer counts as not ready


@functools.cache
def _insert_plan(
    dialect: sa.Dialect, table: sa.Table
) -> tuple[str, list[tuple[str, Callable[[Any], Any] | None]], bool]:
    compiled = sa.insert(table).compile(dialect=dialect)
    names = list(compiled.positiontup or []) if compiled.positional else list(compiled.params)
    columns = [(name, table.c[name].type.bind_processor(dialect)) for name in names]
    return str(compiled), columns, compiled.positional


def bulk_insert(conn: sa.Connection, table: sa.Table, rows: list[dict[str, Any]]) -> None:
    """executemany straight to the driver. SQLAlchemy's per-row parameter handling cost more
    than the insert itself (~55 µs of ~80 µs per record); the column types' own bind
    processors still run, so what is stored is exactly what `conn.execute(insert)` stores."""
    sql, columns, positional = _insert_plan(conn.dialect, table)
    if positional:
        params: list[Any] = [
            tuple(row[n] if p is None else p(row[n]) for n, p in columns) for row in rows
        ]
    else:
        params = [{n: row[n] if p is None else p(row[n]) for n, p in columns} for row in rows]
    conn.exec_driver_sql(sql, params)


# Built once: constructing the statement per batch cost more than executing it.
_MOVE_HEAD = (
    sa.update(chain_head_table)
    .where(chain_head_table.c.chain_id == sa.bindparam("head_chain_id"))
    .values(
        last_seq=sa.bindparam("last_seq"),
        last_hash=sa.bindparam("last_hash"),
        updated_at=sa.bindparam("updated_at"),
    )
)


class AuditUnavailable(Exception):
    """The audit store could not commit: the decision must not be returned (HTTP 503)."""


@dataclass
class WriterStats:
    batches: int = 0  # committed transactions
    records: int = 0  # committed records
    failed_batches: int = 0
    failed_records: int = 0
    largest_batch: int = 0


@dataclass(slots=True)
class _Pending:
    columns: dict[str, Any]
    rules: list[str]
    future: asyncio.Future[None]


_STOP = object()


def default_code_version() -> str:
    try:
        return importlib.metadata.version("decision-service")
    except importlib.metadata.PackageNotFoundError:  # pragma: no cover - not installed
        return "unknown"


class AuditStore:
    """The audit log of one process: appends (group commit), queries, verification."""

    def __init__(
        self,
        writer_engine: sa.Engine,
        reader_engine: sa.Engine | None = None,
        *,
        code_version: str | None = None,
        chain_id: str | None = None,
        max_batch: int = 1000,
    ) -> None:
        self.engine = writer_engine
        self.reader = reader_engine or writer_engine
        self.code_version = code_version or default_code_version()
        self.chain_id = chain_id or uuid_utils.uuid7().hex
        self.max_batch = max_batch
        self.stats = WriterStats()
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
    ) -> AuditStore:
        """Engines for ``database_url`` (tables created if ``create``); no writer yet."""
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
        return cls(writer, reader, code_version=code_version, max_batch=max_batch)

    async def start(self) -> None:
        """Start the writer task (call from the event loop that will call ``append``)."""
        if self._task is not None:
            return
        self._queue = asyncio.Queue()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="audit-writer")
        self._task = asyncio.create_task(self._run(), name=f"audit-writer-{self.chain_id}")
        self._healthy = True

    async def close(self) -> None:
        """Commit what is queued, stop the writer, release the connections."""
        self._closed = True
        if self._task is not None and self._queue is not None:
            self._queue.put_nowait(_STOP)
            await self._task
            self._task = None
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

    async def append(self, request: bytes | str, decision: Decision) -> None:
        """Record one decision; returns once it is committed, else raises AuditUnavailable."""
        if self._closed or self._queue is None:
            raise AuditUnavailable("audit store is not running")
        columns, rules = record_columns(request, decision, self.code_version)
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait(_Pending(columns, rules, future))
        await future

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

    def _probe(self) -> None:
        """Commit this writer's heartbeat (runs on the writer thread, between batches)."""
        try:
            conn = self._connection()
            now = datetime.now(UTC)
            hb = writer_heartbeat_table
            with conn.begin():
                mine = hb.c.chain_id == self.chain_id
                moved = conn.execute(sa.update(hb).where(mine).values(beat_at=now)).rowcount
                if not moved:
                    conn.execute(sa.insert(hb), [{"chain_id": self.chain_id, "beat_at": now}])
        except BaseException:
            self._drop_connection()
            raise
        self._proven_at = time.monotonic()

    async def _run(self) -> None:
        assert self._queue is not None
        loop = asyncio.get_running_loop()
        stopping = False
        while not stopping:
            item = await self._queue.get()
            batch: list[_Pending] = []
            while True:
                if item is _STOP:
                    stopping = True
                else:
                    batch.append(item)
                if len(batch) >= self.max_batch:
                    break
                try:
                    item = self._queue.get_nowait()
                except asyncio.QueueEmpty:
                    break
            if batch:
                await self._commit(loop, batch)

    async def _commit(self, loop: asyncio.AbstractEventLoop, batch: list[_Pending]) -> None:
        try:
            await loop.run_in_executor(self._executor, self._write_batch, batch)
        except sa.exc.IntegrityError:
            if len(batch) > 1:
                # One bad record (say, a duplicate decision_id) must not fail its neighbours:
                # the batch was rolled back, so commit each record on its own.
                for pending in batch:
                    await self._commit(loop, [pending])
                return
            self._fail(batch, "record rejected by the database (duplicate decision_id?)")
            return
        except Exception as exc:
            self._healthy = False
            self._fail(batch, str(exc))
            return
        self._healthy = True
        self.stats.batches += 1
        self.stats.records += len(batch)
        self.stats.largest_batch = max(self.stats.largest_batch, len(batch))
        for pending in batch:
            if not pending.future.done():
                pending.future.set_result(None)

    def _fail(self, batch: list[_Pending], why: str) -> None:
        self._resync = True
        self.stats.failed_batches += 1
        self.stats.failed_records += len(batch)
        log.error("audit commit failed for %d records: %s", len(batch), why)
        error = AuditUnavailable(f"audit store could not commit: {why}")
        for pending in batch:
            if not pending.future.done():
                pending.future.set_exception(error)

    def _connection(self) -> sa.Connection:
        """The writer thread's own connection, kept between batches (a pool checkout and
        return per batch cost ~150 µs); dropped after any failure, so the next batch starts
        on a fresh one."""
        if self._conn is None:
            self._conn = self.engine.connect()
        return self._conn

    def _drop_connection(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.invalidate()
            with contextlib.suppress(Exception):
                conn.close()

    def _release_connection(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()

    def _write_batch(self, batch: list[_Pending]) -> None:
        """One transaction for the whole batch (runs on the writer thread)."""
        try:
            self._write_batch_on(self._connection(), batch)
        except BaseException:
            self._drop_connection()
            raise

    def _write_batch_on(self, conn: sa.Connection, batch: list[_Pending]) -> None:
        with conn.begin():
            if self._resync:
                seq, prev_hash = self._read_head(conn)
            else:
                seq, prev_hash = self._seq, self._prev_hash
            first_seq = seq
            rows: list[dict[str, Any]] = []
            rule_rows: list[dict[str, str]] = []
            for pending in batch:
                seq += 1
                row = pending.columns.copy()
                row["chain_id"] = self.chain_id
                row["seq"] = seq
                row["prev_hash"] = prev_hash
                row["record_hash"] = prev_hash = chain.record_hash(
                    self.chain_id, seq, prev_hash, row
                )
                rows.append(row)
                decision_id = row["decision_id"]
                rule_rows.extend({"decision_id": decision_id, "rule_id": r} for r in pending.rules)
            bulk_insert(conn, decision_table, rows)
            if rule_rows:
                bulk_insert(conn, decision_rule_table, rule_rows)
            head = {"last_seq": seq, "last_hash": prev_hash, "updated_at": datetime.now(UTC)}
            if first_seq == 0:
                conn.execute(sa.insert(chain_head_table), [{"chain_id": self.chain_id, **head}])
            else:
                conn.execute(_MOVE_HEAD, {"head_chain_id": self.chain_id, **head})
        # Committed: only now does the chain state move forward.
        self._seq, self._prev_hash, self._resync = seq, prev_hash, False

    def _read_head(self, conn: sa.Connection) -> tuple[int, str]:
        """Where this chain stands in the database (a failed commit may still have landed)."""
        head = conn.execute(
            sa.select(chain_head_table.c.last_seq, chain_head_table.c.last_hash).where(
                chain_head_table.c.chain_id == self.chain_id
            )
        ).first()
        return (0, chain.GENESIS) if head is None else (head.last_seq, head.last_hash)

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

    async def verify(self) -> chain.VerifyReport:
        return await asyncio.to_thread(chain.verify, self.reader)

    def export_jsonl(self, filters: queries.Filters | None = None) -> Iterator[str]:
        return queries.export_jsonl(self.reader, filters)

    def export_csv(self, filters: queries.Filters | None = None) -> Iterator[str]:
        return queries.export_csv(self.reader, filters)

    @property
    def is_sqlite(self) -> bool:
        return is_sqlite(self.engine)


def remember_ruleset(engine: sa.Engine, sha256: str, name: str, version: str, text: str) -> None:
    """Insert a ruleset text if its sha256 is not stored yet (safe against a concurrent insert)."""
    table = ruleset_text_table
    row = {
        "sha256": sha256,
        "name": name,
        "version": version,
        "text": text,
        "first_seen": datetime.now(UTC),
    }
    with contextlib.suppress(sa.exc.IntegrityError), engine.begin() as conn:
        if conn.execute(sa.select(table.c.sha256).where(table.c.sha256 == sha256)).first():
            return
        conn.execute(sa.insert(table), [row])
