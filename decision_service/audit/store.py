"""The audit store: group commit with per-request durability.

One writer per process. ``append`` queues a record and waits for its future; the writer task
takes everything queued, gives it the next seq numbers and hashes, and commits the whole batch
in ONE transaction on a dedicated thread, so the event loop keeps accepting requests (and the
next batch forms) while the commit runs. A batch commits as soon as the writer is free; nothing
waits on a timer. ``append`` returns only once its record is committed, and raises
``AuditUnavailable`` if that commit failed: then no record of the batch is stored, the chain
state goes back to the last committed record, and the next batch tries the database afresh.

One request may append several decisions (``append_many``, for POST /decide/batch): they are
one unit of the batch, committed together or not at all, with the request's idempotency key
(idempotency.py) in the same transaction.

A commit whose acknowledgement is lost (the connection died after COMMIT was sent) may have
landed. The writer does not guess: it fences the old session (PostgreSQL: ends its backend and
waits until it is gone, so it can no longer commit), then looks for the batch's records on a new
connection, and answers accordingly; if the store cannot be reached to find out, the appends
raise ``CommitOutcomeUnknown`` ("may have been recorded").
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import importlib.metadata
import logging
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
import uuid_utils

from decision_service.audit import chain, challenger_records, fencing, idempotency, queries
from decision_service.audit.checkpoints import CheckpointFile, Head
from decision_service.audit.engine import SQLiteSync, is_sqlite, make_engine
from decision_service.audit.keys import DEFAULT_KEY_FILE, Keyring
from decision_service.audit.logs import LogWriter
from decision_service.audit.records import record_columns
from decision_service.audit.tables import (
    chain_head_table,
    challenger_result_table,
    create_tables,
    decision_rule_table,
    decision_table,
    ruleset_text_table,
    writer_heartbeat_table,
)
from decision_service.audit.trail import AuditTrail
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


class CommitOutcomeUnknown(AuditUnavailable):
    """COMMIT was sent, its answer was lost, and the store could not be reached to find out
    whether it landed: the decisions may have been recorded (retry with the same key)."""

    def __init__(self, message: str, decision_ids: list[str]) -> None:
        super().__init__(message)
        self.decision_ids = decision_ids


@dataclass
class WriterStats:
    batches: int = 0  # committed transactions
    records: int = 0  # committed records
    failed_batches: int = 0
    failed_records: int = 0
    largest_batch: int = 0
    challenger_rows_refused: int = 0  # challenger_result rows the database refused (dropped)


@dataclass(slots=True)
class _Pending:
    """One request's records: committed together, or not at all."""

    records: list[tuple[dict[str, Any], list[str]]]  # (columns, fired rule ids)
    claim: idempotency.Claim | None
    future: asyncio.Future[None]
    challengers: list[dict[str, Any]] | None = None  # challenger_result rows (challengers)


def _records(batch: list[_Pending]) -> Iterator[tuple[dict[str, Any], list[str]]]:
    return (record for pending in batch for record in pending.records)


_STOP = object()


def default_code_version() -> str:
    try:
        return importlib.metadata.version("decision-service")
    except importlib.metadata.PackageNotFoundError:  # pragma: no cover - not installed
        return "unknown"


class AuditStore(AuditTrail):
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
        idempotency_ttl: timedelta = timedelta(hours=24),
        keyring: Keyring | None = None,
        checkpoints: CheckpointFile | None = None,
        checkpoint_interval_s: float = 60.0,
    ) -> AuditStore:
        """Engines for ``database_url`` (tables created if ``create``); no writer yet.

        ``keyring``: the audit keys (default: ``var/audit.key``, created if absent);
        ``checkpoints``: where signed checkpoints go (default: none are written)."""
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
            self._queue.put_nowait(_STOP)
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
        self._queue.put_nowait(_Pending([record], claim, future, challengers or None))
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
        self._queue.put_nowait(_Pending(records, claim, future, challengers or None))
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
        started = time.perf_counter()
        try:
            await loop.run_in_executor(self._executor, self._write_batch, batch)
        except sa.exc.IntegrityError as exc:
            if len(batch) > 1:
                # One bad request (say, a duplicate decision_id, or a key another worker
                # committed first) must not fail its neighbours: the batch was rolled back, so
                # commit each request on its own.
                for pending in batch:
                    await self._commit(loop, [pending])
                return
            if batch[0].claim is not None and idempotency.is_key_conflict(exc):
                self._resync = True
                batch[0].future.set_exception(idempotency.KeyTaken(batch[0].claim.key))
                return
            self._fail(batch, "record rejected by the database (duplicate decision_id?)")
            return
        except Exception as exc:
            if not self._commit_sent:  # failed before COMMIT: rolled back, nothing landed
                self._healthy = False
                self._fail(batch, str(exc))
                return
            landed = await loop.run_in_executor(self._executor, self._resolve, batch)
            if landed is None:
                self._healthy = False
                self._fail(batch, f"{exc}; outcome unknown", unknown=True)
                return
            if not landed:
                self._healthy = False
                self._fail(batch, f"{exc}; the batch did not land")
                return
            log.warning("commit acknowledgement lost, but the batch landed: %s", exc)
            self._resync = True  # the chain state was not advanced: read it back
        self._healthy = True
        self.stats.batches += 1
        self.stats.records += sum(len(pending.records) for pending in batch)
        self.stats.largest_batch = max(self.stats.largest_batch, len(batch))
        if self.on_commit is not None:
            self.on_commit(
                sum(len(pending.records) for pending in batch), time.perf_counter() - started
            )
        for pending in batch:
            if not pending.future.done():
                pending.future.set_result(None)

    def _fail(self, batch: list[_Pending], why: str, *, unknown: bool = False) -> None:
        self._resync = True
        self.stats.failed_batches += 1
        self.stats.failed_records += sum(len(pending.records) for pending in batch)
        log.error("audit commit failed for %d requests: %s", len(batch), why)
        error = AuditUnavailable(f"audit store could not commit: {why}")
        for pending in batch:
            if not pending.future.done():
                pending.future.set_exception(
                    CommitOutcomeUnknown(  # each request hears of its own decisions only
                        "audit store lost the answer to COMMIT and cannot be reached to find "
                        f"out: the decisions may have been recorded ({why})",
                        [columns["decision_id"] for columns, _ in pending.records],
                    )
                    if unknown
                    else error
                )

    def _connection(self) -> sa.Connection:
        """The writer thread's own connection, kept between batches (a pool checkout and
        return per batch cost ~150 µs); dropped after any failure, so the next batch starts
        on a fresh one."""
        if self._conn is None:
            conn = self.engine.connect()
            self._backend = fencing.backend_of(conn)  # who to fence if a COMMIT answer is lost
            self._conn = conn
        return self._conn

    def _on_commit(self, conn: sa.Connection) -> None:
        if conn is self._conn:
            self._commit_sent = True

    def _resolve(self, batch: list[_Pending]) -> bool | None:
        """Did a batch whose COMMIT answer was lost land? None: the store cannot tell us.

        Runs on the writer thread, on a new connection. The old session is fenced first: while
        its backend lives it may still commit, so it is ended and waited for; then the batch's
        records are either there or never will be (one transaction: all or none).
        """
        records = list(_records(batch))
        ids = list({records[0][0]["decision_id"], records[-1][0]["decision_id"]})
        try:
            with self.reader.connect() as conn:
                if self._backend is not None and not fencing.end_backend(conn, *self._backend):
                    return None
                found = conn.execute(
                    sa.select(sa.func.count())
                    .select_from(decision_table)
                    .where(decision_table.c.decision_id.in_(ids))
                ).scalar_one()
                conn.rollback()
        except Exception as exc:
            log.error("cannot find out whether a batch landed: %s", exc)
            return None
        return found > 0

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
        self._commit_sent = False
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
            key_id = self.keyring.current_id
            for columns, rules in _records(batch):
                seq += 1
                row = columns.copy()
                row["chain_id"] = self.chain_id
                row["seq"] = seq
                row["prev_hash"] = prev_hash
                row["key_id"] = key_id
                row["record_hash"] = prev_hash = chain.record_mac(
                    self.keyring, self.chain_id, seq, prev_hash, row
                )
                rows.append(row)
                decision_id = row["decision_id"]
                rule_rows.extend({"decision_id": decision_id, "rule_id": r} for r in rules)
            bulk_insert(conn, decision_table, rows)
            if rule_rows:
                bulk_insert(conn, decision_rule_table, rule_rows)
            shadow_rows = [
                challenger_records.sign(self.keyring, key_id, row)
                for pending in batch
                if pending.challengers
                for row in pending.challengers
            ]
            if shadow_rows:  # challengers: in their decisions' commit, each row MAC'd
                self._write_challengers(conn, shadow_rows)
            self._write_claims(conn, batch)
            head = {"last_seq": seq, "last_hash": prev_hash, "updated_at": datetime.now(UTC)}
            if first_seq == 0:
                conn.execute(sa.insert(chain_head_table), [{"chain_id": self.chain_id, **head}])
            else:
                conn.execute(_MOVE_HEAD, {"head_chain_id": self.chain_id, **head})
        # Committed: only now does the chain state move forward.
        self._seq, self._prev_hash, self._resync = seq, prev_hash, False

    def _write_challengers(self, conn: sa.Connection, rows: list[dict[str, Any]]) -> None:
        """Challenger rows under a savepoint: if the database refuses them, the decisions are
        committed without them (a challenger never fails a decision); a lost connection is
        still the batch's failure."""
        try:
            with conn.begin_nested():
                bulk_insert(conn, challenger_result_table, rows)
        except sa.exc.DBAPIError as exc:
            if exc.connection_invalidated:
                raise
            self.stats.challenger_rows_refused += len(rows)
            log.error("challenger rows refused, decisions recorded without them: %s", exc)

    def _write_claims(self, conn: sa.Connection, batch: list[_Pending]) -> None:
        """Idempotency keys, in the transaction of their decisions (nothing without keys)."""
        claims = [
            (p.claim, [columns["decision_id"] for columns, _ in p.records])
            for p in batch
            if p.claim is not None
        ]
        if claims:
            self._keys.write(conn, claims)

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
