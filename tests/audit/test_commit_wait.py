"""The group commit waits for the requests it expects (writer.py, ``commit_wait_s``): as many
as were waiting for a commit at once during the last one, never longer than the cap, never for
a lone client, and never past a shutdown."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import pytest

from decision_service.audit import AuditStore, Keyring, verify
from decision_service.audit.testing import sample_decision, sample_request

LONG = 30.0  # a cap no test waits out: only the expected requests end the wait
DEADLINE = 10.0  # a test that would wait out LONG fails here instead


@pytest.fixture
async def open_store(database, keyring: Keyring) -> AsyncIterator[Callable]:
    opened: list[AuditStore] = []

    async def make(commit_wait_s: float) -> AuditStore:
        store = AuditStore.open(database.url, keyring=keyring, commit_wait_s=commit_wait_s)
        await store.start()
        opened.append(store)
        return store

    yield make
    for store in opened:
        await store.close()


def _append(store: AuditStore, i: int) -> asyncio.Task[None]:
    decision = sample_decision(application_id=f"APP-{i}")
    return asyncio.create_task(store.append(sample_request(f"APP-{i}"), decision))


async def _eight_at_once(store: AuditStore) -> None:
    """One commit during which 8 requests wait: the next batch expects 8."""
    await asyncio.wait_for(asyncio.gather(*(_append(store, i) for i in range(8))), DEADLINE)
    assert (store.stats.batches, store.stats.largest_batch, store.stats.waits) == (1, 8, 0)


async def test_a_batch_waits_for_as_many_as_were_waiting_during_the_last_commit(
    open_store, database
) -> None:
    store = await open_store(LONG)
    await _eight_at_once(store)

    first = [_append(store, 10 + i) for i in range(3)]
    await asyncio.sleep(0.5)  # without the wait, these three would be committed by now
    assert not any(t.done() for t in first)
    assert store.stats.batches == 1

    rest = [_append(store, 20 + i) for i in range(5)]
    await asyncio.wait_for(asyncio.gather(*first, *rest), DEADLINE)
    assert (store.stats.batches, store.stats.records) == (2, 16)  # the 8 in ONE commit
    assert (store.stats.waits, store.stats.waits_expired) == (1, 0)
    assert verify(store.reader).ok


async def test_a_wait_runs_out_and_commits_what_came(open_store) -> None:
    store = await open_store(0.05)
    await _eight_at_once(store)

    await asyncio.wait_for(_append(store, 99), DEADLINE)

    assert (store.stats.batches, store.stats.records) == (2, 9)
    assert (store.stats.waits, store.stats.waits_expired) == (1, 1)


async def test_a_lone_client_never_waits(open_store) -> None:
    store = await open_store(LONG)
    for i in range(5):
        await asyncio.wait_for(_append(store, i), DEADLINE)
    assert (store.stats.batches, store.stats.waits) == (5, 0)


async def test_no_wait_without_the_setting(open_store) -> None:
    store = await open_store(0.0)
    await _eight_at_once(store)
    await asyncio.wait_for(_append(store, 99), DEADLINE)
    assert (store.stats.batches, store.stats.waits) == (2, 0)


async def test_shutdown_does_not_wait_out_a_waiting_batch(open_store) -> None:
    store = await open_store(LONG)
    await _eight_at_once(store)
    waiting = _append(store, 99)
    await asyncio.sleep(0.05)
    assert not waiting.done()

    await asyncio.wait_for(store.close(), DEADLINE)

    await waiting  # committed, not dropped
    assert (store.stats.batches, store.stats.records) == (2, 9)
    assert verify(store.reader).records == 9
