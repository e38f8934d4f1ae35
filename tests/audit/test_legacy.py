"""A database made before the audit key (plain sha256 chains, no key_id column) keeps
verifying after the upgrade; the first start signs its chain heads into the checkpoint file
(``adopt``), and from then on a plain-hashed record nobody vouched for is named."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from decision_service.audit import (
    AuditStore,
    CheckpointFile,
    Keyring,
    create_tables,
    make_engine,
    verify,
)
from decision_service.audit.chain import GENESIS, record_hash
from decision_service.audit.fired_sets import resolve
from decision_service.audit.migrations import runner
from decision_service.audit.records import record_columns
from decision_service.audit.tables import chain_head_table, decision_table
from decision_service.audit.testing import sample_decision, sample_request

OLD_TABLES = ("decision", "decision_rule", "ruleset_text", "chain_head")
OLD_RULES = sa.table("decision_rule", sa.column("decision_id"), sa.column("rule_id"))


def _old_schema(engine: sa.Engine) -> None:
    """The schema of the release before the audit key (0.1.0): no key_id, no access/change
    logs, request and decision as JSON text."""
    with engine.begin() as conn:
        runner._release_metadata().create_all(conn)


def _write_plain_chain(
    engine: sa.Engine, chain_id: str, n: int, *, start: int = 1, prev: str = GENESIS
) -> str:
    """Records as the old writer made them: sha256 of the canonical record, no key; in the
    schema the database has (texts before the upgrade, packed after)."""
    stored = {c["name"] for c in sa.inspect(engine).get_columns("decision")}
    names = sorted(stored - {"key_id"})
    table = sa.table("decision", *(sa.column(name) for name in names))
    with engine.begin() as conn:
        for seq in range(start, start + n):
            row, rules = record_columns(
                sample_request(), sample_decision(rules=["DTI-REFER"]), "0.9.0"
            )
            row |= {"chain_id": chain_id, "seq": seq, "prev_hash": prev}
            row["record_hash"] = prev = record_hash(chain_id, seq, prev, row)
            if "fired_set" in stored:  # upgraded: the decision names its set of rules
                row["fired_set"] = resolve(conn, [frozenset(rules)])[frozenset(rules)]
            conn.execute(sa.insert(table).values({name: row[name] for name in names}))
            if "fired_set" not in stored:
                conn.execute(
                    sa.insert(OLD_RULES),
                    [{"decision_id": row["decision_id"], "rule_id": r} for r in rules],
                )
        head = {"last_seq": start + n - 1, "last_hash": prev, "updated_at": row["decided_at"]}
        if start == 1:
            conn.execute(sa.insert(chain_head_table).values(chain_id=chain_id, **head))
        else:
            conn.execute(
                sa.update(chain_head_table)
                .where(chain_head_table.c.chain_id == chain_id)
                .values(**head)
            )
    return prev


@pytest.fixture
def legacy(database) -> sa.Engine:
    engine = make_engine(database.url)
    _old_schema(engine)
    _write_plain_chain(engine, "a" * 32, 6)
    _write_plain_chain(engine, "b" * 32, 4)
    yield engine
    engine.dispose()


async def _upgrade_and_decide(database, keyring: Keyring, checkpoints: CheckpointFile) -> str:
    store = AuditStore.open(database.url, keyring=keyring, checkpoints=checkpoints)
    await store.start()
    try:
        await store.append(sample_request(), sample_decision())
    finally:
        await store.close()
    return store.chain_id


async def test_an_old_database_verifies_before_and_after_the_upgrade(
    database, legacy, keyring, checkpoints
) -> None:
    create_tables(legacy)  # the schema upgrade (`db upgrade`), before the service starts
    before = verify(legacy, keyring, checkpoints)  # not anchored yet...
    assert before.ok and before.records == 10
    assert any("not anchored" in w for w in before.warnings)  # ...and says so
    new_chain = await _upgrade_and_decide(database, keyring, checkpoints)
    report = verify(legacy, keyring, checkpoints)
    assert report.ok, report.problems
    assert report.warnings == []
    by_chain = {c.chain_id: (c.records, c.legacy_records, c.checkpoint_seq) for c in report.chains}
    assert by_chain == {"a" * 32: (6, 6, 6), "b" * 32: (4, 4, 4), new_chain: (1, 0, 1)}


async def test_a_plain_chain_made_up_after_the_upgrade_is_named(
    database, legacy, keyring, checkpoints
) -> None:
    await _upgrade_and_decide(database, keyring, checkpoints)
    _write_plain_chain(legacy, "c" * 32, 3)  # a DBA invents decisions with the old hash code
    report = verify(legacy, keyring, checkpoints)
    assert [(p.chain_id, p.seq, p.kind) for p in report.problems] == [("c" * 32, 1, "unanchored")]


async def test_plain_records_appended_to_an_old_chain_are_named(
    database, legacy, keyring, checkpoints
) -> None:
    await _upgrade_and_decide(database, keyring, checkpoints)
    with legacy.connect() as conn:
        last = conn.execute(
            sa.text(f"SELECT record_hash FROM decision WHERE chain_id = '{'b' * 32}' AND seq = 4")
        ).scalar_one()
    _write_plain_chain(legacy, "b" * 32, 2, start=5, prev=last)
    report = verify(legacy, keyring, checkpoints)
    assert [(p.chain_id, p.seq, p.kind) for p in report.problems] == [("b" * 32, 5, "unanchored")]


async def test_an_old_chain_rehashed_after_the_upgrade_is_named(
    database, legacy, keyring, checkpoints
) -> None:
    await _upgrade_and_decide(database, keyring, checkpoints)
    # rewrite chain a from scratch (other decisions, correct plain hashes, head moved)
    with legacy.begin() as conn:
        conn.execute(sa.delete(decision_table).where(decision_table.c.chain_id == "a" * 32))
        conn.execute(sa.delete(chain_head_table).where(chain_head_table.c.chain_id == "a" * 32))
    _write_plain_chain(legacy, "a" * 32, 6)
    report = verify(legacy, keyring, checkpoints)
    assert [(p.chain_id, p.seq, p.kind) for p in report.problems] == [
        ("a" * 32, 6, "checkpoint_mismatch")
    ]
