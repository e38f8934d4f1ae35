"""No decision leaves without its record: when the store cannot commit, appends fail, nothing
of the failed batch is stored, and once the store is back the chain continues intact."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import AsyncIterator

import pytest
import sqlalchemy as sa

from decision_service.audit import (
    AuditStore,
    AuditUnavailable,
    CommitOutcomeUnknown,
    make_engine,
    verify,
)
from decision_service.audit.testing import fail_head_updates, sample_decision, sample_request
from tests.audit.conftest import Database, admin_execute


def _stored_ids(engine: sa.Engine) -> set[str]:
    with engine.connect() as conn:
        return set(conn.execute(sa.text("SELECT decision_id FROM decision")).scalars())


async def _append_all(store: AuditStore, n: int) -> tuple[list[str], list[BaseException | None]]:
    decisions = [sample_decision() for _ in range(n)]
    results = await asyncio.gather(
        *(store.append(sample_request(), d) for d in decisions), return_exceptions=True
    )
    return [d.decision_id for d in decisions], results


async def _recovers(store: AuditStore, raw: sa.Engine, before: int) -> None:
    ids, results = await _append_all(store, 25)
    assert results == [None] * 25
    assert set(ids) <= _stored_ids(raw)
    report = verify(raw)
    assert report.ok, report.problems
    assert report.records == before + 25


async def test_store_broken_mid_run(store: AuditStore, raw: sa.Engine) -> None:
    ok_ids, _ = await _append_all(store, 40)

    with raw.begin() as conn:  # the table disappears under the running service
        conn.execute(sa.text("ALTER TABLE decision RENAME TO decision_away"))
    _, results = await _append_all(store, 30)
    assert all(isinstance(r, AuditUnavailable) for r in results)
    assert not store.healthy()
    assert not await store.ping()

    with raw.begin() as conn:
        conn.execute(sa.text("ALTER TABLE decision_away RENAME TO decision"))
    assert _stored_ids(raw) == set(ok_ids)  # none of the failed decisions is stored
    await _recovers(store, raw, before=40)
    assert store.healthy()


async def test_failure_inside_the_transaction_stores_nothing_of_the_batch(
    store: AuditStore, raw: sa.Engine
) -> None:
    await _append_all(store, 10)
    fail = fail_head_updates(store.engine)

    decisions = [sample_decision(rules=["DTI-REFER"]) for _ in range(15)]
    results = await asyncio.gather(
        *(store.append(sample_request(), d) for d in decisions), return_exceptions=True
    )
    assert all(isinstance(r, AuditUnavailable) for r in results)
    assert not {d.decision_id for d in decisions} & _stored_ids(raw)

    fail.clear()
    await _recovers(store, raw, before=10)


async def test_a_commit_reported_failed_that_did_land_is_found_and_answered(
    store: AuditStore, raw: sa.Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Connection lost after COMMIT reached the server: the writer looks (on a new connection)
    and finds the batch, so the appends succeed and the chain goes on from the stored head.
    (tests/test_deciding.py loses a real COMMIT answer on PostgreSQL through a proxy.)"""
    await _append_all(store, 5)
    real_write = store._write_batch

    def write_then_lose_the_reply(batch):
        real_write(batch)
        store._drop_connection()  # the connection is gone with the answer
        raise ConnectionError("connection lost while reading the COMMIT reply")

    monkeypatch.setattr(store, "_write_batch", write_then_lose_the_reply)
    ids, results = await _append_all(store, 5)
    assert results == [None] * 5  # they landed: recorded, and answered as such
    assert set(ids) <= _stored_ids(raw)
    monkeypatch.undo()
    await _recovers(store, raw, before=10)


async def test_a_lost_commit_answer_the_store_cannot_resolve_may_have_been_recorded(
    store: AuditStore, raw: sa.Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The answer to COMMIT is lost and the log cannot be read to find out: "may have been
    recorded", naming the decisions; they did land, and the chain goes on."""
    await _append_all(store, 5)
    real_write = store._write_batch

    def write_lose_the_reply_and_the_store(batch):
        real_write(batch)
        store._drop_connection()
        with raw.begin() as conn:  # the log cannot be read any more
            conn.execute(sa.text("ALTER TABLE decision RENAME TO decision_away"))
        raise ConnectionError("connection lost while reading the COMMIT reply")

    monkeypatch.setattr(store, "_write_batch", write_lose_the_reply_and_the_store)
    ids, results = await _append_all(store, 5)
    monkeypatch.undo()
    assert all(isinstance(r, CommitOutcomeUnknown) for r in results)
    assert [r.decision_ids for r in results] == [[i] for i in ids]  # each its own
    assert "may have been recorded" in str(results[0])
    with raw.begin() as conn:
        conn.execute(sa.text("ALTER TABLE decision_away RENAME TO decision"))
    assert set(ids) <= _stored_ids(raw)
    await _recovers(store, raw, before=10)


async def test_one_bad_record_does_not_fail_its_batch(store: AuditStore, raw: sa.Engine) -> None:
    first = sample_decision()
    await store.append(sample_request(), first)
    batch = [sample_decision() for _ in range(10)]
    duplicate = sample_decision(decision_id=first.decision_id)  # a caller bug
    results = await asyncio.gather(
        *(store.append(sample_request(), d) for d in [*batch[:5], duplicate, *batch[5:]]),
        return_exceptions=True,
    )
    assert isinstance(results[5], AuditUnavailable)
    assert results[:5] + results[6:] == [None] * 10
    assert verify(raw).ok


async def test_sqlite_locked_by_another_process(sqlite_database: Database) -> None:
    database = sqlite_database
    raw = make_engine(database.url)
    store = AuditStore.open(database.url, busy_timeout_ms=200)
    await store.start()
    try:
        await _append_all(store, 10)
        locker = sqlite3.connect(database.name, isolation_level=None)
        locker.execute("BEGIN IMMEDIATE")  # another writer holds the lock for too long
        try:
            lost, results = await _append_all(store, 10)
            assert all(isinstance(r, AuditUnavailable) for r in results)
        finally:
            locker.execute("ROLLBACK")
            locker.close()
        assert not set(lost) & _stored_ids(raw)
        await _recovers(store, raw, before=10)
    finally:
        await store.close()
        raw.dispose()


@pytest.fixture
async def pg(postgres_database: Database) -> AsyncIterator[tuple[Database, AuditStore, sa.Engine]]:
    store = AuditStore.open(postgres_database.url)
    await store.start()
    raw = make_engine(postgres_database.url)
    try:
        yield postgres_database, store, raw
    finally:
        await store.close()
        raw.dispose()


def _terminate_connections(name: str) -> None:
    admin_execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
        f"WHERE datname = '{name}' AND pid <> pg_backend_pid()"
    )


@pytest.mark.postgres
async def test_postgres_goes_away_and_comes_back(pg) -> None:
    database, store, raw = pg
    await _append_all(store, 20)
    admin_execute(f'ALTER DATABASE "{database.name}" ALLOW_CONNECTIONS false')
    try:
        _terminate_connections(database.name)
        lost, results = await _append_all(store, 20)
        assert all(isinstance(r, AuditUnavailable) for r in results)
        assert not await store.ping()
    finally:
        admin_execute(f'ALTER DATABASE "{database.name}" ALLOW_CONNECTIONS true')
    assert not set(lost) & _stored_ids(raw)
    await _recovers(store, raw, before=20)


@pytest.mark.postgres
async def test_postgres_connection_killed_during_the_commit(pg) -> None:
    database, store, raw = pg
    await _append_all(store, 5)
    in_commit, release = threading.Event(), threading.Event()

    @sa.event.listens_for(store.engine, "commit")
    def _hold(_conn) -> None:  # rows are sent, COMMIT not yet
        if not release.is_set():
            in_commit.set()
            release.wait(10)

    decisions = [sample_decision() for _ in range(12)]
    tasks = [asyncio.create_task(store.append(sample_request(), d)) for d in decisions]
    await asyncio.to_thread(in_commit.wait, 10)
    _terminate_connections(database.name)  # the server kills the writer's session
    release.set()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert all(isinstance(r, AuditUnavailable) for r in results)
    assert not {d.decision_id for d in decisions} & _stored_ids(raw)
    await _recovers(store, raw, before=5)
