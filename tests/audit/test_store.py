"""An auditor finds every decision exactly as it was made, and it was stored before it left."""

from __future__ import annotations

import asyncio
import itertools
import random
import threading

import msgspec
import sqlalchemy as sa

from decision_service.audit import AuditStore, verify
from decision_service.audit.testing import sample_decision, sample_request


def _count(engine: sa.Engine, decision_id: str) -> int:
    with engine.connect() as conn:
        return conn.execute(
            sa.text("SELECT count(*) FROM decision WHERE decision_id = :id"), {"id": decision_id}
        ).scalar_one()


def _count_commits(engine: sa.Engine) -> list[int]:
    commits = [0]

    @sa.event.listens_for(engine, "commit")
    def _on_commit(_conn: sa.Connection) -> None:
        commits[0] += 1

    return commits


async def test_a_decision_reads_back_exactly_as_recorded(store: AuditStore) -> None:
    request = sample_request("APP-7", note="naïve € \n line")
    decision = sample_decision(application_id="APP-7", outcome="refer", rules=["DTI-REFER"])

    await store.append(request, decision)

    stored = await store.get(decision.decision_id)
    assert stored is not None
    assert stored.request_json.encode() == request  # byte for byte, whitespace included
    assert stored.decision_json.encode() == msgspec.json.encode(decision)
    assert stored.decision() == decision
    assert stored.decided_at == decision.decided_at
    assert (stored.outcome, stored.pd, stored.risk_band, stored.approved_amount) == (
        "refer",
        decision.pd,
        "B",
        None,
    )
    assert (stored.model_version, stored.model_sha256) == ("1.0.0", decision.trace.model.sha256)
    assert (stored.ruleset_version, stored.engine) == ("2026.11.0", "durable_rules")
    assert stored.code_version == "test+0000000"
    assert stored.trace_id == decision.trace_id
    assert (stored.chain_id, stored.seq) == (store.chain_id, 1)
    assert await store.get("01a2-not-there") is None


async def test_concurrent_appends_share_few_transactions_and_wait_for_their_commit(
    store: AuditStore, raw: sa.Engine
) -> None:
    commits = _count_commits(store.engine)
    rng = random.Random(4)
    not_visible: list[str] = []

    async def decide(i: int) -> None:
        await asyncio.sleep(rng.random() * 0.05)  # requests arrive over ~50 ms
        decision = sample_decision(application_id=f"APP-{i}")
        await store.append(sample_request(f"APP-{i}"), decision)
        # the moment append returns, another connection must see the record
        if _count(raw, decision.decision_id) != 1:
            not_visible.append(decision.decision_id)

    await asyncio.gather(*(decide(i) for i in range(500)))

    assert not_visible == []
    assert store.stats.records == 500
    assert store.stats.batches == commits[0]
    assert commits[0] <= 100, f"{commits[0]} transactions for 500 appends"
    assert verify(raw).ok


async def test_a_burst_lands_in_one_or_two_transactions(store: AuditStore) -> None:
    commits = _count_commits(store.engine)
    decisions = [sample_decision(application_id=f"APP-{i}") for i in range(500)]
    await asyncio.gather(*(store.append(sample_request(), d) for d in decisions))
    assert commits[0] <= 2
    assert store.stats.largest_batch >= 250


async def test_append_returns_only_after_its_commit(store: AuditStore, raw: sa.Engine) -> None:
    release = threading.Event()
    in_commit = threading.Event()

    @sa.event.listens_for(store.engine, "commit")
    def _hold_commit(_conn: sa.Connection) -> None:  # runs on the writer thread, before COMMIT
        in_commit.set()
        release.wait(10)

    decision = sample_decision()
    task = asyncio.create_task(store.append(sample_request(), decision))
    await asyncio.to_thread(in_commit.wait, 10)
    await asyncio.sleep(0.05)
    assert not task.done()
    assert _count(raw, decision.decision_id) == 0

    # the event loop keeps accepting appends while the commit runs: they form the next batch
    others = [sample_decision() for _ in range(20)]
    more = [asyncio.create_task(store.append(sample_request(), d)) for d in others]
    await asyncio.sleep(0.05)
    assert not any(t.done() for t in more)

    release.set()
    await task
    await asyncio.gather(*more)
    assert _count(raw, decision.decision_id) == 1
    assert store.stats.batches == 2


async def test_records_are_chained_in_commit_order(store: AuditStore, raw: sa.Engine) -> None:
    for _ in range(3):
        await asyncio.gather(*(store.append(sample_request(), sample_decision()) for _ in range(7)))
    with raw.connect() as conn:
        rows = conn.execute(
            sa.text("SELECT seq, prev_hash, record_hash FROM decision ORDER BY seq")
        ).all()
        head = conn.execute(sa.text("SELECT last_seq, last_hash FROM chain_head")).one()
    assert [r.seq for r in rows] == list(range(1, 22))
    assert all(b.prev_hash == a.record_hash for a, b in itertools.pairwise(rows))
    assert tuple(head) == (21, rows[-1].record_hash)


async def test_close_commits_what_is_queued(database) -> None:
    store = AuditStore.open(database.url)
    await store.start()
    decisions = [sample_decision() for _ in range(30)]
    tasks = [asyncio.create_task(store.append(sample_request(), d)) for d in decisions]
    await asyncio.sleep(0)
    await store.close()
    await asyncio.gather(*tasks)
    reopened = AuditStore.open(database.url)
    try:
        assert verify(reopened.reader).records == 30
    finally:
        await reopened.close()


async def test_several_writers_keep_separate_chains(database, raw: sa.Engine) -> None:
    stores = [AuditStore.open(database.url) for _ in range(3)]
    for s in stores:
        await s.start()
    try:
        await asyncio.gather(
            *(s.append(sample_request(), sample_decision()) for s in stores for _ in range(40))
        )
    finally:
        for s in stores:
            await s.close()
    report = verify(raw)
    assert report.ok
    assert sorted(c.records for c in report.chains) == [40, 40, 40]


async def test_rulesets_are_kept_by_sha256(store: AuditStore) -> None:
    text = "ruleset: risk-appetite\nversion: 2026.11.0\nrules: []\n"
    store.remember_ruleset("a7" * 32, "risk-appetite", "2026.11.0", text)
    store.remember_ruleset("a7" * 32, "risk-appetite", "2026.11.0", text)  # already kept: no-op
    kept = store.ruleset_text("a7" * 32)
    assert kept is not None
    assert (kept.name, kept.version, kept.text) == ("risk-appetite", "2026.11.0", text)
    assert store.ruleset_text("00" * 32) is None


async def test_health(store: AuditStore) -> None:
    assert store.healthy()
    assert await store.ping()
    await store.append(sample_request(), sample_decision())
    assert store.healthy()


async def test_workers_starting_together_all_get_the_tables(database) -> None:
    def open_store() -> AuditStore:
        return AuditStore.open(database.url)

    stores = await asyncio.gather(*(asyncio.to_thread(open_store) for _ in range(4)))
    for s in stores:
        await s.start()
        await s.append(sample_request(), sample_decision())
        await s.close()
    assert len(verify(stores[0].reader).chains) == 4
