"""Who did what: reads of personal data and changes are chained records that every process and
the CLI append to; checkpoints are signed periodically; verification runs in a child process,
one at a time."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime

import sqlalchemy as sa

from decision_service.audit import AuditStore, verify
from decision_service.audit.testing import edit_record, sample_decision, sample_request


async def test_access_and_change_records_hold_who_what_and_how_many(store: AuditStore, raw) -> None:
    since = datetime(2026, 11, 1, tzinfo=UTC)
    await store.record_access(
        "auditor-ann", "GET /decisions", {"from": since, "outcome": "refer", "rule": None}, 37
    )
    await store.record_change("admin-bob", "key.create", "decider-1", None, {"role": "decider"})
    with raw.connect() as conn:
        access = conn.execute(sa.text("SELECT * FROM access_log")).mappings().one()
        changes = conn.execute(sa.text("SELECT * FROM change_log ORDER BY seq")).mappings().all()
    assert (access["actor"], access["route"], access["returned"]) == (
        "auditor-ann",
        "GET /decisions",
        37,
    )
    assert json.loads(access["filters"]) == {"from": "2026-11-01T00:00:00Z", "outcome": "refer"}
    assert [c["action"] for c in changes] == ["audit.init", "key.create"]
    assert (changes[1]["actor"], changes[1]["subject"]) == ("admin-bob", "decider-1")
    assert changes[1]["before"] is None and json.loads(changes[1]["after"]) == {"role": "decider"}


async def test_several_processes_append_to_one_linear_log(database, store, keyring, raw) -> None:
    others = [AuditStore.open(database.url, keyring=keyring) for _ in range(2)]
    for other in others:
        await other.start()
    try:
        await asyncio.gather(
            *(
                s.record_access(f"auditor-{i}", "GET /decisions/{decision_id}", {}, 1)
                for i in range(10)
                for s in (store, *others)
            )
        )
    finally:
        for other in others:
            await other.close()
    with raw.connect() as conn:
        seqs = conn.execute(sa.text("SELECT seq FROM access_log ORDER BY seq")).scalars().all()
        inits = conn.execute(
            sa.text("SELECT count(*) FROM change_log WHERE action = 'audit.init'")
        ).scalar()
    assert seqs == list(range(1, 31)) and inits == 1
    report = verify(raw, keyring)
    assert report.ok, report.problems
    assert {(c.log, c.records) for c in report.logs} == {("access_log", 30), ("change_log", 1)}


async def test_heads_are_signed_periodically_and_at_close(
    database, keyring, checkpoints, raw
) -> None:
    store = AuditStore.open(
        database.url, keyring=keyring, checkpoints=checkpoints, checkpoint_interval_s=0.05
    )
    await store.start()
    try:
        await store.append(sample_request(), sample_decision())
        for _ in range(200):  # wait for the periodic checkpoint (no fixed sleep in the test)
            if '"seq":1' in checkpoints.path.read_text():
                break
            await asyncio.sleep(0.05)
        await store.append(sample_request(), sample_decision())
    finally:
        await store.close()
    lines = [json.loads(x) for x in checkpoints.path.read_text().splitlines()]
    assert lines[0]["kind"] == "adopt"
    decision_heads = [
        h["seq"] for x in lines for h in x["heads"] if h["chain_id"] == store.chain_id
    ]
    assert decision_heads[0] == 1 and decision_heads[-1] == 2  # periodic, then at close
    assert verify(raw, keyring, checkpoints).chains[0].checkpoint_seq == 2


async def test_verification_runs_in_a_child_and_concurrent_calls_share_it(
    store: AuditStore, raw, keyring
) -> None:
    await asyncio.gather(*(store.append(sample_request(), sample_decision()) for _ in range(5)))
    running = [asyncio.ensure_future(store.verify()) for _ in range(4)]
    await asyncio.sleep(0)
    assert store._verifying is not None  # one child for the four callers
    reports = await asyncio.gather(*running)
    assert all(r is reports[0] for r in reports)
    assert reports[0].ok and reports[0].records == 5
    # the child signed what it verified: the next verify holds the chain to it
    assert store.verify_sync().chains[0].checkpoint_seq == 5


async def test_an_incremental_verify_starts_at_the_last_verify_that_passed(
    store: AuditStore, raw, keyring, checkpoints
) -> None:
    await asyncio.gather(*(store.append(sample_request(), sample_decision()) for _ in range(10)))
    first = verify(raw, keyring, checkpoints, mark_verified=True)
    assert first.ok and first.mode == "full" and first.records == 10
    await asyncio.gather(*(store.append(sample_request(), sample_decision()) for _ in range(5)))
    again = verify(raw, keyring, checkpoints, incremental=True)
    assert again.ok, again.problems
    assert again.mode == "incremental"
    assert again.records == 6  # the verified head (seq 10) again, then seq 11..15
    edit_record(raw, request=lambda text: text + " ", seq=12)  # after the verified point: seen...
    (problem,) = verify(raw, keyring, checkpoints, incremental=True).problems
    assert (problem.seq, problem.kind) == (12, "edited")
    edit_record(raw, request=lambda text: text + " ", seq=3)  # ...one before it: full verify
    full = verify(raw, keyring, checkpoints)
    assert [(p.seq, p.kind) for p in full.problems] == [(3, "edited")]


async def test_an_incremental_verify_sees_a_tail_cut_below_its_start(
    store: AuditStore, raw, keyring, checkpoints
) -> None:
    await asyncio.gather(*(store.append(sample_request(), sample_decision()) for _ in range(8)))
    assert verify(raw, keyring, checkpoints, mark_verified=True).ok
    with raw.begin() as conn:
        conn.execute(sa.text("DELETE FROM decision WHERE seq > 5"))
        last = conn.execute(sa.text("SELECT record_hash FROM decision WHERE seq = 5")).scalar()
        conn.execute(sa.text("UPDATE chain_head SET last_seq = 5, last_hash = :h"), {"h": last})
    (problem,) = verify(raw, keyring, checkpoints, incremental=True).problems
    assert (problem.chain_id, problem.seq, problem.kind) == (store.chain_id, 8, "tail_deleted")
    (problem,) = verify(raw, keyring, checkpoints).problems  # the full walk says where it ends
    assert (problem.seq, problem.kind) == (6, "tail_deleted")
