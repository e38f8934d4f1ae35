"""A database administrator with full SQL access but not the audit key tries to rewrite history:
flip a decline into an approval and re-hash the chain with the project's own code, move the
head, cut the newest records off, edit who read or changed what. Each attempt is done as a DBA
would do it (raw SQL over a separate connection) and each is detected and named."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import sqlalchemy as sa

from decision_service.audit import AuditStore, CheckpointFile, Keyring, verify
from decision_service.audit.chain import GENESIS, record_hash, record_mac
from decision_service.audit.encoding import pack
from decision_service.audit.records import expand
from decision_service.audit.tables import chain_head_table, decision_table
from decision_service.audit.testing import sample_decision, sample_request


@pytest.fixture
async def chain(store: AuditStore, raw: sa.Engine) -> dict[int, str]:
    """20 declines over a few batches, an access and a change record, and a checkpoint of
    all of it; seq → decision_id."""
    for size in (1, 7, 12):
        await asyncio.gather(
            *(
                store.append(
                    sample_request(), sample_decision(outcome="decline", rules=["PD-APPETITE"])
                )
                for _ in range(size)
            )
        )
    await store.record_access("auditor-ann", "GET /decisions", {"outcome": "decline"}, 20)
    await store.record_change("admin-bob", "rules.reload", "risk-appetite", {"v": 1}, {"v": 2})
    await store.checkpoint()
    with raw.connect() as conn:
        return dict(conn.execute(sa.text("SELECT seq, decision_id FROM decision")).all())


def _sql(raw: sa.Engine, *statements: str) -> None:
    with raw.begin() as conn:
        for statement in statements:
            conn.execute(sa.text(statement))


def _only_problem(raw: sa.Engine, keyring: Keyring, checkpoints: CheckpointFile):
    report = verify(raw, keyring, checkpoints)
    assert not report.ok
    assert len(report.problems) == 1, report.problems
    return report.problems[0]


def _approve(row: dict[str, Any]) -> dict[str, Any]:
    """The edit the attacker wants: this decline becomes an approval, columns and JSON alike."""
    return {
        **row,
        "outcome": "approve",
        "decision_json": row["decision_json"].replace('"outcome":"decline"', '"outcome":"approve"'),
    }


def _rehash(
    raw: sa.Engine, chain_id: str, start: int, mac: Any, key_id: str | None, edit_seq: int
) -> None:
    """Edit record ``edit_seq``, then recompute every hash from ``start`` on with ``mac`` and
    move chain_head to the new last hash: the attack of the issue, with our own code."""
    t = decision_table
    with raw.begin() as conn:
        rows = [
            expand(r._mapping)
            for r in conn.execute(
                sa.select(t).where(t.c.chain_id == chain_id, t.c.seq >= start).order_by(t.c.seq)
            )
        ]
        prev = (
            GENESIS
            if start == 1
            else conn.execute(
                sa.select(t.c.record_hash).where(t.c.chain_id == chain_id, t.c.seq == start - 1)
            ).scalar_one()
        )
        for row in rows:
            if row["seq"] == edit_seq:
                row = _approve(row)
            row |= {"prev_hash": prev, "key_id": key_id}
            row["record_hash"] = prev = mac(chain_id, row["seq"], prev, row)
            conn.execute(
                sa.update(t)
                .where(t.c.decision_id == row["decision_id"])
                .values(
                    outcome=row["outcome"],
                    record=pack(row["request_json"], row["decision_json"]),
                    prev_hash=row["prev_hash"],
                    record_hash=row["record_hash"],
                    key_id=key_id,
                )
            )
        conn.execute(
            sa.update(chain_head_table)
            .where(chain_head_table.c.chain_id == chain_id)
            .values(last_hash=prev)
        )


async def test_the_untouched_log_verifies_against_key_and_checkpoint(
    store, raw, keyring, checkpoints, chain
) -> None:
    report = verify(raw, keyring, checkpoints)
    assert report.ok, report.problems
    assert report.records == 20 and report.warnings == []
    assert [(c.chain_id, c.last_seq, c.checkpoint_seq) for c in report.chains] == [
        (store.chain_id, 20, 20)
    ]
    assert {(c.log, c.last_seq, c.checkpoint_seq) for c in report.logs} == {
        ("access_log", 1, 1),
        ("change_log", 2, 2),  # audit.init, then the reload
    }


async def test_a_flip_rehashed_with_the_plain_hash_is_named(
    store, raw, keyring, checkpoints, chain
) -> None:
    _rehash(raw, store.chain_id, 7, record_hash, None, edit_seq=7)
    problem = _only_problem(raw, keyring, checkpoints)
    assert (problem.chain_id, problem.seq, problem.decision_id) == (store.chain_id, 7, chain[7])
    assert problem.kind == "downgraded"


async def test_a_whole_chain_rehashed_with_the_plain_hash_is_named(
    store, raw, keyring, checkpoints, chain
) -> None:
    _rehash(raw, store.chain_id, 1, record_hash, None, edit_seq=7)
    problem = _only_problem(raw, keyring, checkpoints)
    assert (problem.seq, problem.decision_id, problem.kind) == (1, chain[1], "unanchored")
    assert "re-hashed without the audit key" in problem.detail


@pytest.mark.parametrize("same_key_id", [True, False], ids=["real-key-id", "own-key-id"])
async def test_a_flip_rehashed_with_a_key_of_ones_own_is_named(
    store, raw, keyring, checkpoints, chain, same_key_id: bool
) -> None:
    forged = Keyring.generate()  # the attacker's own key (the real one is not in the database)
    key_id = keyring.current_id if same_key_id else forged.current_id
    forger = Keyring({key_id: forged.current}, key_id)

    def mac(chain_id, seq, prev, row):
        return record_mac(forger, chain_id, seq, prev, row)

    _rehash(raw, store.chain_id, 7, mac, key_id, edit_seq=7)
    problem = _only_problem(raw, keyring, checkpoints)
    assert (problem.seq, problem.decision_id) == (7, chain[7])
    assert problem.kind == ("edited" if same_key_id else "unknown_key")


async def test_an_edited_head_is_named(store, raw, keyring, checkpoints, chain) -> None:
    _sql(raw, f"UPDATE chain_head SET last_hash = '{'f' * 64}'")
    problem = _only_problem(raw, keyring, checkpoints)
    assert (problem.chain_id, problem.kind) == (store.chain_id, "head_mismatch")


async def test_a_deleted_tail_with_a_rewritten_head_is_caught_by_the_checkpoint(
    store, raw, keyring, checkpoints, chain
) -> None:
    with raw.begin() as conn:  # cut seq 18..20 and make the head agree with seq 17
        conn.execute(sa.text("DELETE FROM decision WHERE seq > 17"))
        last = conn.execute(sa.text("SELECT record_hash FROM decision WHERE seq = 17")).scalar()
        conn.execute(sa.text("UPDATE chain_head SET last_seq = 17, last_hash = :h"), {"h": last})
    assert verify(raw, keyring).ok  # without the checkpoint file, nothing shows...
    problem = _only_problem(raw, keyring, checkpoints)  # ...with it, the cut is named
    assert (problem.chain_id, problem.seq, problem.kind) == (store.chain_id, 18, "tail_deleted")
    assert "seq 18..20" in problem.detail and "signed checkpoint" in problem.detail


async def test_a_deleted_chain_is_caught_by_the_checkpoint(
    store, raw, keyring, checkpoints, chain
) -> None:
    _sql(
        raw,
        "DELETE FROM fired_set_rule",
        "DELETE FROM fired_set",
        "DELETE FROM decision",
        "DELETE FROM chain_head",
    )
    problem = _only_problem(raw, keyring, checkpoints)
    assert (problem.chain_id, problem.seq, problem.kind) == (store.chain_id, 1, "tail_deleted")


@pytest.mark.parametrize(
    ("log", "edit"),
    [
        ("access_log", "UPDATE access_log SET returned = 2 WHERE seq = 1"),
        ("access_log", "UPDATE access_log SET actor = 'someone-else' WHERE seq = 1"),
        ("change_log", "UPDATE change_log SET actor = 'file-watch' WHERE seq = 2"),
        ("change_log", "UPDATE change_log SET after = replace(after, '2', '1') WHERE seq = 2"),
    ],
)
async def test_an_edited_access_or_change_record_is_named(
    raw, keyring, checkpoints, chain, log: str, edit: str
) -> None:
    with raw.connect() as conn:
        seq = int(edit.rsplit("= ", 1)[1])
        record_id = conn.execute(sa.text(f"SELECT id FROM {log} WHERE seq = {seq}")).scalar()
    _sql(raw, edit)
    problem = _only_problem(raw, keyring, checkpoints)
    assert (problem.log, problem.chain_id, problem.seq) == (log, log, seq)
    assert (problem.record_id, problem.kind) == (record_id, "edited")


async def test_a_deleted_access_record_is_caught_by_the_checkpoint(
    raw, keyring, checkpoints, chain
) -> None:
    _sql(raw, "DELETE FROM access_log", "DELETE FROM log_head WHERE log = 'access_log'")
    problem = _only_problem(raw, keyring, checkpoints)
    assert (problem.log, problem.seq, problem.kind) == ("access_log", 1, "tail_deleted")


async def test_a_forged_checkpoint_line_is_named(raw, keyring, checkpoints, chain) -> None:
    lines = checkpoints.path.read_text().splitlines()
    checkpoints.path.write_text("\n".join([*lines, lines[-1].replace('"seq":20', '"seq":25')]))
    problem = _only_problem(raw, keyring, checkpoints)
    assert (problem.log, problem.kind) == ("checkpoints", "checkpoint_forged")
    assert problem.seq == len(lines) + 1


async def test_the_chain_goes_on_after_a_restart_and_a_key_rotation(
    database, raw, keyring, checkpoints, store, chain
) -> None:
    rotated = keyring.rotate()
    later = AuditStore.open(database.url, keyring=rotated, checkpoints=checkpoints)
    await later.start()
    try:
        await later.append(sample_request(), sample_decision())
        await later.record_access("auditor-ann", "GET /decisions/{decision_id}", {}, 1)
    finally:
        await later.close()
    assert rotated.current_id != keyring.current_id
    report = verify(raw, Keyring.load(keyring.path), checkpoints)
    assert report.ok, report.problems
    assert len(report.chains) == 2
    with raw.connect() as conn:
        used = set(conn.execute(sa.text("SELECT DISTINCT key_id FROM decision")).scalars())
    assert used == {keyring.current_id, rotated.current_id}
    assert not verify(raw, keyring, checkpoints).ok  # the old file alone lacks the new key
