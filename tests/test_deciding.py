# ruff: noqa: F811  (the audit fixtures are imported, then named as test arguments)
"""The deciding use case on a real store (SQLite and PostgreSQL), the shipped model and rules.

A loan system retries: with an Idempotency-Key it gets the decision already made, never a
second one, whichever worker answers and whatever happened to the commit's acknowledgement.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager

import msgspec
import pytest
import sqlalchemy as sa

from decision_service.audit import (
    AuditUnavailable,
    Claim,
    CommitOutcomeUnknown,
    InvalidIdempotencyKey,
    KeyTaken,
    make_engine,
    verify,
)
from decision_service.audit.idempotency import claim
from decision_service.deciding import Ask, IdempotencyConflict
from decision_service.scoring import application_type
from decision_service.scoring.card import load_card
from decision_service.service import Service, bootstrap
from decision_service.settings import load_settings
from tests.audit.conftest import (  # noqa: F401
    Database,
    database,
    postgres_available,
    postgres_database,
)
from tests.conftest import ROOT
from tests.pg_cut import CommitCutter


@asynccontextmanager
async def running(database_url: str, **settings: object) -> AsyncIterator[Service]:
    """A service built by the composition root, as `serve` builds it (no file watcher)."""
    service = bootstrap(
        load_settings(
            environ={},
            models_dir=ROOT / "models",
            rules_dir=ROOT / "rules",
            database_url=database_url,
            rules_watch=False,
            log_decisions=False,
            **settings,
        )
    )
    await service.start()
    try:
        yield service
    finally:
        await service.stop()


@pytest.fixture
def raw(database: Database) -> Iterator[sa.Engine]:
    engine = make_engine(database.url)
    yield engine
    engine.dispose()


def asks(service: Service, lines: list[bytes]) -> list[Ask]:
    decode = msgspec.json.Decoder(application_type(service.scorer.card)).decode
    return [Ask(decode(line), line) for line in lines]


def key_for(key: str, *lines: bytes) -> Claim:
    return claim(key, b"test", *lines)


def decision_ids(engine: sa.Engine) -> list[str]:
    with engine.connect() as conn:
        return list(conn.execute(sa.text("SELECT decision_id FROM decision")).scalars())


async def test_a_decision_is_answered_once_recorded(database, raw, application_lines) -> None:
    async with running(database.url) as service:
        decided = await service.deciding.decide_and_record(asks(service, application_lines[:1])[0])
    assert not decided.replayed
    assert decision_ids(raw) == [decided.decision.decision_id]
    assert verify(raw).ok


async def test_the_same_key_three_times_is_one_decision(database, raw, application_lines) -> None:
    line = application_lines[3]
    async with running(database.url) as service:
        answers = [
            await service.deciding.decide_and_record(
                asks(service, [line])[0], claim=key_for("loan-42", line)
            )
            for _ in range(3)
        ]
    assert [a.replayed for a in answers] == [False, True, True]
    assert {a.decision.decision_id for a in answers} == {answers[0].decision.decision_id}
    assert answers[2].decision == answers[0].decision  # exactly as first answered
    assert decision_ids(raw) == [answers[0].decision.decision_id]


async def test_the_same_key_with_another_request_is_refused(
    database, raw, application_lines
) -> None:
    first, other = application_lines[5], application_lines[6]
    async with running(database.url) as service:
        await service.deciding.decide_and_record(
            asks(service, [first])[0], claim=key_for("k-1", first)
        )
        with pytest.raises(IdempotencyConflict, match="k-1"):
            await service.deciding.decide_and_record(
                asks(service, [other])[0], claim=key_for("k-1", other)
            )
    assert len(decision_ids(raw)) == 1


async def test_concurrent_requests_with_one_key_make_one_decision(
    database, raw, application_lines
) -> None:
    """Two workers (two services, two writers, one database) and several requests in each."""
    line = application_lines[8]
    async with running(database.url) as one, running(database.url) as two:
        answers = await asyncio.gather(
            *(
                service.deciding.decide_and_record(
                    asks(service, [line])[0], claim=key_for("race", line)
                )
                for service in (one, two, one, two, one, two)
            )
        )
    ids = {a.decision.decision_id for a in answers}
    assert len(ids) == 1
    assert sum(not a.replayed for a in answers) == 1
    assert decision_ids(raw) == list(ids)
    assert verify(raw).ok


async def test_a_batch_is_one_commit_and_replays_in_order(database, raw, application_lines) -> None:
    lines = application_lines[10:17]
    async with running(database.url) as service:
        before = service.store.stats.batches
        decided = await service.deciding.decide_many_and_record(asks(service, lines))
        assert service.store.stats.batches == before + 1  # seven decisions, one commit
        batch_key = key_for("batch-1", *lines)
        first = await service.deciding.decide_many_and_record(asks(service, lines), claim=batch_key)
        again = await service.deciding.decide_many_and_record(asks(service, lines), claim=batch_key)
    assert [d.application_id for d in decided.decisions] == [
        msgspec.json.decode(line)["application_id"] for line in lines
    ]
    assert again.replayed and not first.replayed
    assert again.decisions == first.decisions
    stored = decision_ids(raw)
    assert len(stored) == 14
    assert {d.decision_id for d in decided.decisions + first.decisions} == set(stored)


async def test_a_request_commits_all_its_decisions_or_none(
    database, raw, application_lines
) -> None:
    line = application_lines[20]
    async with running(database.url) as service:
        taken = key_for("taken", line)
        await service.deciding.decide_and_record(asks(service, [line])[0], claim=taken)
        batch = asks(service, application_lines[21:26])
        decisions = [service.deciding.decide(a.app) for a in batch]
        with pytest.raises(KeyTaken):  # the request's last row fails: its five go with it
            await service.store.append_many(
                [(a.body, d) for a, d in zip(batch, decisions, strict=True)], claim=taken
            )
        follow = await service.deciding.decide_and_record(asks(service, [line])[0])
    assert not {d.decision_id for d in decisions} & set(decision_ids(raw))
    assert len(decision_ids(raw)) == 2 and follow.decision.decision_id in decision_ids(raw)
    assert verify(raw).ok


async def test_an_expired_key_decides_again_and_old_keys_are_purged(
    database, raw, application_lines
) -> None:
    line = application_lines[30]
    async with running(database.url, idempotency_ttl="1h") as service:
        first = await service.deciding.decide_and_record(
            asks(service, [line])[0], claim=key_for("old", line)
        )
        with raw.begin() as conn:  # two hours pass for these keys
            conn.execute(
                sa.text(
                    "INSERT INTO idempotency_key (key, request_sha256, decision_ids, created_at)"
                    " SELECT 'older', request_sha256, decision_ids, created_at"
                    " FROM idempotency_key WHERE key = 'old'"
                )
            )
            conn.execute(
                sa.text("UPDATE idempotency_key SET created_at = :t"), {"t": _hours_ago(conn, 2)}
            )
        service.store._keys._last_purge = 0.0  # the minute since the last purge has passed
        second = await service.deciding.decide_and_record(
            asks(service, [line])[0], claim=key_for("old", line)
        )
    assert not second.replayed
    assert second.decision.decision_id != first.decision.decision_id
    with raw.connect() as conn:
        keys = dict(conn.execute(sa.text("SELECT key, decision_ids FROM idempotency_key")).all())
    assert keys == {"old": second.decision.decision_id}  # 'older' was purged


def _hours_ago(conn: sa.Connection, hours: int):
    from datetime import UTC, datetime, timedelta

    now = datetime.now(UTC) - timedelta(hours=hours)
    return now.replace(tzinfo=None) if conn.dialect.name == "sqlite" else now


@pytest.mark.parametrize(
    "value",
    [b"", b"a" * 256, b"has space", "clé".encode(), b"semi;colon", b'"', b"tab\tkey"],
)
def test_malformed_keys_are_refused(value: bytes) -> None:
    with pytest.raises(InvalidIdempotencyKey):
        claim(value, b"body")


def test_keys_and_fingerprints() -> None:
    assert claim(b'"0193ab-key"', b"x").key == "0193ab-key"  # an RFC 8941 string
    assert claim(b"k", b"ab", b"c") != claim(b"k", b"a", b"bc")  # parts are delimited
    assert claim(b"k", b"a") == claim("k", b"a")


# -- lost commit acknowledgements, for real: a proxy drops the connection around COMMIT ------


@pytest.fixture
def cutter() -> Iterator[CommitCutter]:
    with CommitCutter() as proxy:
        yield proxy


@pytest.mark.postgres
async def test_a_commit_that_landed_without_its_answer_is_a_decision(
    postgres_database, cutter, application_lines
) -> None:
    raw = make_engine(postgres_database.url)
    line = application_lines[40]
    try:
        async with running(cutter.url(postgres_database.url)) as service:
            await service.deciding.decide_and_record(asks(service, application_lines[:1])[0])
            cutter.arm("after")  # the server commits; its answer never comes back
            decided = await service.deciding.decide_and_record(
                asks(service, [line])[0], claim=key_for("lost-ack", line)
            )
            assert cutter.cut.is_set()
            retry = await service.deciding.decide_and_record(
                asks(service, [line])[0], claim=key_for("lost-ack", line)
            )
            follow = await service.deciding.decide_and_record(asks(service, [line])[0])
        assert not decided.replayed and retry.replayed
        assert retry.decision.decision_id == decided.decision.decision_id
        stored = decision_ids(raw)
        assert stored.count(decided.decision.decision_id) == 1 and len(stored) == 3
        assert follow.decision.decision_id in stored
        assert verify(raw).ok  # the writer read its chain head back and went on
    finally:
        raw.dispose()


@pytest.mark.postgres
async def test_a_commit_that_never_arrived_is_no_decision(
    postgres_database, cutter, application_lines
) -> None:
    raw = make_engine(postgres_database.url)
    line = application_lines[41]
    try:
        async with running(cutter.url(postgres_database.url)) as service:
            await service.deciding.decide_and_record(asks(service, application_lines[:1])[0])
            cutter.arm("before")  # the connection dies instead of the COMMIT going out
            with pytest.raises(AuditUnavailable) as lost:
                await service.deciding.decide_and_record(
                    asks(service, [line])[0], claim=key_for("no-commit", line)
                )
            assert not isinstance(lost.value, CommitOutcomeUnknown)  # found out: not recorded
            retry = await service.deciding.decide_and_record(
                asks(service, [line])[0], claim=key_for("no-commit", line)
            )
        assert not retry.replayed  # decided now, for the first time
        assert len(decision_ids(raw)) == 2
        assert verify(raw).ok
    finally:
        raw.dispose()


@pytest.mark.postgres
async def test_an_unreachable_store_says_may_have_been_recorded(
    postgres_database, cutter, application_lines
) -> None:
    raw = make_engine(postgres_database.url)
    line = application_lines[42]
    try:
        async with running(cutter.url(postgres_database.url)) as service:
            await service.deciding.decide_and_record(asks(service, application_lines[:1])[0])
            cutter.arm("after")
            cutter.refuse_after_cut = True  # and the database is unreachable from then on
            with pytest.raises(CommitOutcomeUnknown) as unknown:
                await service.deciding.decide_and_record(
                    asks(service, [line])[0], claim=key_for("unknown", line)
                )
            cutter.refuse = False  # the store is back
            retry = await service.deciding.decide_and_record(
                asks(service, [line])[0], claim=key_for("unknown", line)
            )
        assert retry.replayed  # it had landed: the retry is answered, not decided again
        assert [retry.decision.decision_id] == unknown.value.decision_ids
        assert len(decision_ids(raw)) == 2
        assert verify(raw).ok
    finally:
        raw.dispose()


@pytest.mark.parametrize(
    ("value", "seconds"), [("90", 90), ("90s", 90), ("30m", 1800), ("2d", 172800)]
)
def test_the_key_window_is_a_setting(value: str, seconds: int) -> None:
    window = load_settings(environ={"DECISION_IDEMPOTENCY_TTL": value}).idempotency_window
    assert window.total_seconds() == seconds


@pytest.mark.parametrize("value", ["0", "1 day", "24 h", "-5m", "1w"])
def test_a_bad_key_window_is_refused_at_start(value: str) -> None:
    with pytest.raises(msgspec.ValidationError, match="idempotency_ttl"):
        load_settings(environ={"DECISION_IDEMPOTENCY_TTL": value})


async def test_the_live_model_comes_from_the_registry(database, raw, application_lines) -> None:
    """A promotion recorded in the registry's log decides the next decision (this process
    follows at once, others within a poll); the version refs follow the model, not only the
    ruleset; a rollback brings the first version back; readiness reads the registry."""
    cards = {v: load_card(ROOT / "models" / "underwriting" / v) for v in ("1.0.0", "1.1.0")}
    async with running(database.url) as service:
        ask = asks(service, application_lines[:1])[0]
        first = (await service.deciding.decide_and_record(ask)).decision
        assert first.trace.model.version == "1.0.0"
        assert (await service.readiness())["model"] is True
        await asyncio.to_thread(service.models.promote, "1.1.0", "test")
        second = (await service.deciding.decide_and_record(ask)).decision
        assert second.trace.model.version == "1.1.0"
        assert second.trace.model.sha256 == cards["1.1.0"].model_sha256
        assert second.trace.ruleset == first.trace.ruleset
        await asyncio.to_thread(service.models.rollback, "test")
        third = (await service.deciding.decide_and_record(ask)).decision
        assert third.trace.model == first.trace.model and third.pd == first.pd
    assert set(decision_ids(raw)) == {first.decision_id, second.decision_id, third.decision_id}
