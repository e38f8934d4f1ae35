"""The audit writer: group commit with per-request durability.

One writer per process. ``append`` queues a record and waits for its future; the writer task
takes everything queued, gives it the next seq numbers and hashes, and commits the whole batch
in ONE transaction on a dedicated thread, so the event loop keeps accepting requests (and the
next batch forms) while the commit runs. ``append`` returns only once its record is committed,
and raises
``AuditUnavailable`` if that commit failed: then no record of the batch is stored, the chain
state goes back to the last committed record, and the next batch tries the database afresh.

When the writer is free it takes what is queued; if fewer requests are queued than were waiting
for a commit at once during the last one, it waits for that many, at most ``commit_wait_s``
(``DECISION_AUDIT_COMMIT_WAIT_MS``), like PostgreSQL's ``commit_delay`` with
``commit_siblings``. Without it, 8 clients settle into two alternating commits of ~4 (each
request that arrives during a commit waits for the next), and every commit has a fixed cost (a
transaction, its fsync, the chain head, the hand-over to the event loop and back): measured, the
CPU per decision at 8 connections fell from 1.7x its cost at 64 to 1.2x. A lone client never
waits (one was waiting), and a wait ends as soon as the expected requests are queued.

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
import logging
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from decision_service.audit import chain, challenger_records, fencing, idempotency
from decision_service.audit.bulk import bulk_insert, driver_execute
from decision_service.audit.fired_sets import FiredSets
from decision_service.audit.keys import Keyring
from decision_service.audit.tables import (
    chain_head_table,
    challenger_result_table,
    decision_table,
    writer_heartbeat_table,
)

log = logging.getLogger("decision_service.audit.store")

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
    waits: int = 0  # batches that waited for more requests (commit_wait_s)
    waits_expired: int = 0  # ... and committed without all of them when the wait ran out
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


def _settle(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class GroupCommitWriter:
    """The writer half of ``AuditStore`` (store.py): the writer task, the batch transaction on
    the writer thread, and what happens when a commit fails or its answer is lost."""

    engine: sa.Engine
    reader: sa.Engine
    chain_id: str
    max_batch: int
    commit_wait_s: float  # longest a batch waits for the requests expected in it (0: never)
    keyring: Keyring
    stats: WriterStats
    on_commit: Callable[[int, float], None] | None
    _seq: int
    _prev_hash: str
    _resync: bool
    _healthy: bool
    _proven_at: float
    _queue: asyncio.Queue[Any] | None
    _committing: int  # requests in the commit under way
    _peak: int  # most requests waiting for a commit at once, during the last commit
    _need: int  # while a batch waits: how many more requests it waits for
    _topped: asyncio.Future[None] | None  # while a batch waits: set when they are queued
    _executor: ThreadPoolExecutor | None
    _conn: sa.Connection | None
    _keys: idempotency.KeyWriter
    _commit_sent: bool
    _backend: tuple[int, Any] | None
    _fired_sets: FiredSets

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

    def _enqueue(self, item: Any) -> None:
        """Queue a request's records (or _STOP) for the writer, on the event loop."""
        assert self._queue is not None
        self._queue.put_nowait(item)
        queued = self._queue.qsize()
        self._peak = max(self._peak, queued + self._committing)
        topped = self._topped
        if topped is not None and (queued >= self._need or item is _STOP):
            _settle(topped)

    def _take(self, item: Any, batch: list[_Pending]) -> bool:
        """Add ``item`` and what else is queued (up to max_batch) to ``batch``; whether a stop
        was among them."""
        assert self._queue is not None
        stopping = False
        while True:
            if item is _STOP:
                stopping = True
            else:
                batch.append(item)
            if len(batch) >= self.max_batch:
                return stopping
            try:
                item = self._queue.get_nowait()
            except asyncio.QueueEmpty:
                return stopping

    async def _run(self) -> None:
        assert self._queue is not None
        loop = asyncio.get_running_loop()
        stopping = False
        while not stopping:
            batch: list[_Pending] = []
            stopping = self._take(await self._queue.get(), batch)
            if batch and not stopping and len(batch) < min(self._peak, self.max_batch):
                stopping = await self._gather(loop, batch)
            if batch:
                self._committing = len(batch)
                self._peak = len(batch) + self._queue.qsize()
                try:
                    await self._commit(loop, batch)
                finally:
                    self._committing = 0

    async def _gather(self, loop: asyncio.AbstractEventLoop, batch: list[_Pending]) -> bool:
        """Wait, at most commit_wait_s, until as many requests are queued as were waiting at
        once during the last commit (the event loop decides them meanwhile), and take them;
        whether a stop was queued."""
        assert self._queue is not None
        if self.commit_wait_s <= 0:
            return False
        self._need = min(self._peak, self.max_batch) - len(batch)
        topped = self._topped = loop.create_future()
        timer = loop.call_later(self.commit_wait_s, _settle, topped)
        try:
            await topped
        finally:
            timer.cancel()
            self._topped = None
        self.stats.waits += 1
        if self._queue.qsize() < self._need:
            self.stats.waits_expired += 1
        if self._queue.empty():
            return False
        return self._take(self._queue.get_nowait(), batch)

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
            key_id = self.keyring.current_id
            records = list(_records(batch))
            set_ids, new_sets = self._fired_sets.ids(conn, [rules for _, rules in records])
            for (columns, _), set_id in zip(records, set_ids, strict=True):
                seq += 1
                row = columns.copy()
                row["fired_set"] = set_id
                row["chain_id"] = self.chain_id
                row["seq"] = seq
                row["prev_hash"] = prev_hash
                row["key_id"] = key_id
                row["record_hash"] = prev_hash = chain.record_mac(
                    self.keyring, self.chain_id, seq, prev_hash, row
                )
                rows.append(row)
            bulk_insert(conn, decision_table, rows)
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
                driver_execute(conn, _MOVE_HEAD, [{"head_chain_id": self.chain_id, **head}])
        # Committed: only now do the chain state and the known sets move forward.
        self._seq, self._prev_hash, self._resync = seq, prev_hash, False
        self._fired_sets.learn(new_sets)

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
