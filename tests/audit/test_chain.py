"""An auditor proves the log intact: any row edited, deleted or reordered in SQL is found and
named (chain, seq, decision id, what happened)."""

from __future__ import annotations

import asyncio

import pytest
import sqlalchemy as sa

from decision_service.audit import AuditStore, verify
from decision_service.audit.encoding import fired_set_key
from decision_service.audit.testing import edit_record, sample_decision, sample_request


@pytest.fixture
async def chain(store: AuditStore, raw: sa.Engine) -> dict[int, str]:
    """20 records over a few batches; seq → decision_id."""
    for size in (1, 7, 12):
        await asyncio.gather(
            *(
                store.append(sample_request(), sample_decision(rules=["DTI-REFER"]))
                for _ in range(size)
            )
        )
    with raw.connect() as conn:
        return dict(conn.execute(sa.text("SELECT seq, decision_id FROM decision")).all())


_SET_OF = "SELECT fired_set, 'KO-AGE' FROM decision WHERE decision_id = '{}'"


def _sql(raw: sa.Engine, *statements: str) -> None:
    with raw.begin() as conn:
        for statement in statements:
            conn.execute(sa.text(statement))


def _only_problem(raw: sa.Engine):
    report = verify(raw)
    assert not report.ok
    assert len(report.problems) == 1
    return report.problems[0]


async def test_an_untouched_log_verifies(store: AuditStore, chain: dict[int, str]) -> None:
    report = await store.verify()
    assert report.ok
    assert report.records == 20
    assert [(c.chain_id, c.last_seq, c.head_seq) for c in report.chains] == [
        (store.chain_id, 20, 20)
    ]


async def test_an_edited_pd_column_is_named(store: AuditStore, raw, chain) -> None:
    _sql(raw, "UPDATE decision SET pd = 0.01 WHERE seq = 7")
    problem = _only_problem(raw)
    assert (problem.chain_id, problem.seq, problem.decision_id) == (store.chain_id, 7, chain[7])
    assert problem.kind == "columns_disagree"
    assert "pd: column 0.01, decision JSON 0.0431" in problem.detail


async def test_an_edit_of_column_and_json_together_is_named(store: AuditStore, raw, chain) -> None:
    _sql(raw, "UPDATE decision SET pd = 0.01 WHERE seq = 7")
    edit_record(raw, decision=lambda text: text.replace("0.0431", "0.01"), seq=7)
    problem = _only_problem(raw)
    assert (problem.chain_id, problem.seq, problem.decision_id) == (store.chain_id, 7, chain[7])
    assert problem.kind == "edited"


async def test_an_edited_request_is_named(raw, chain) -> None:
    edit_record(raw, request=lambda text: text.replace("41", "14"), seq=3)
    problem = _only_problem(raw)
    assert (problem.seq, problem.decision_id, problem.kind) == (3, chain[3], "edited")


async def test_a_deleted_middle_record_is_named(raw, chain) -> None:
    _sql(raw, "DELETE FROM decision WHERE seq = 10")
    problem = _only_problem(raw)
    assert (problem.seq, problem.kind) == (10, "deleted")
    assert problem.decision_id == chain[11]  # the record found where seq 10 should be
    assert "seq 10" in problem.detail


async def test_deleted_first_records_are_named(raw, chain) -> None:
    _sql(raw, "DELETE FROM decision WHERE seq <= 2")
    problem = _only_problem(raw)
    assert (problem.seq, problem.kind, problem.decision_id) == (1, "deleted", chain[3])
    assert "seq 1..2" in problem.detail


async def test_two_swapped_records_are_named(raw, chain) -> None:
    _sql(
        raw,
        "UPDATE decision SET seq = -1 WHERE seq = 5",
        "UPDATE decision SET seq = 5 WHERE seq = 6",
        "UPDATE decision SET seq = 6 WHERE seq = -1",
    )
    problem = _only_problem(raw)
    assert (problem.seq, problem.kind, problem.decision_id) == (5, "reordered", chain[6])


async def test_a_deleted_last_record_is_named(store: AuditStore, raw, chain) -> None:
    _sql(raw, "DELETE FROM decision WHERE seq = 20")
    problem = _only_problem(raw)
    assert (problem.chain_id, problem.seq, problem.kind) == (store.chain_id, 20, "tail_deleted")


async def test_a_whole_deleted_chain_is_named(raw, chain) -> None:
    _sql(raw, "DELETE FROM decision")
    problem = _only_problem(raw)
    assert (problem.seq, problem.kind) == (1, "tail_deleted")
    assert "seq 1..20" in problem.detail


async def test_a_deleted_chain_head_is_named(raw, chain) -> None:
    _sql(raw, "DELETE FROM chain_head")
    assert _only_problem(raw).kind == "head_missing"


async def test_a_rewound_chain_head_is_named(raw, chain) -> None:
    _sql(raw, "UPDATE chain_head SET last_seq = 19")
    assert _only_problem(raw).kind == "head_mismatch"


async def test_the_chain_continues_after_verification(store: AuditStore, raw, chain) -> None:
    await store.append(sample_request(), sample_decision())
    report = verify(raw)
    assert report.ok
    assert report.records == 21


async def test_only_the_tampered_chain_is_reported(database, raw, chain, store) -> None:
    other = AuditStore.open(database.url)
    await other.start()
    try:
        await asyncio.gather(
            *(other.append(sample_request(), sample_decision()) for _ in range(10))
        )
    finally:
        await other.close()
    _sql(
        raw,
        f"UPDATE decision SET outcome = 'decline' WHERE chain_id = '{other.chain_id}' AND seq = 3",
    )
    report = verify(raw)
    assert [p.chain_id for p in report.problems] == [other.chain_id]
    assert {c.chain_id: c.ok for c in report.chains} == {
        store.chain_id: True,
        other.chain_id: False,
    }


async def test_a_rule_hidden_from_the_filter_is_named(store: AuditStore, raw, chain) -> None:
    # decision 8 pointed at a set without its rule (the empty set, stored with its true key)
    _sql(
        raw,
        f"INSERT INTO fired_set (id, sha256) VALUES (900, '{fired_set_key([])}')",
        f"UPDATE decision SET fired_set = 900 WHERE decision_id = '{chain[8]}'",
    )
    problem = _only_problem(raw)
    assert (problem.seq, problem.decision_id, problem.kind) == (8, chain[8], "rules_index")
    assert "missing ['DTI-REFER']" in problem.detail


async def test_a_rule_added_to_the_filter_is_named(raw, chain) -> None:
    # all 20 decisions share one set: the first of them is named
    _sql(raw, f"INSERT INTO fired_set_rule (set_id, rule_id) {_SET_OF.format(chain[2])}")
    problem = _only_problem(raw)
    assert (problem.seq, problem.decision_id, problem.kind) == (1, chain[1], "rules_index")
    assert "extra ['KO-AGE']" in problem.detail


async def test_a_rule_removed_from_a_set_is_named(raw, chain) -> None:
    _sql(raw, "DELETE FROM fired_set_rule WHERE rule_id = 'DTI-REFER'")
    problem = _only_problem(raw)
    assert (problem.seq, problem.kind) == (1, "rules_index")
    assert "missing ['DTI-REFER']" in problem.detail


async def test_a_decision_naming_no_set_is_named(raw, chain) -> None:
    _sql(raw, f"UPDATE decision SET fired_set = 999 WHERE decision_id = '{chain[5]}'")
    problem = _only_problem(raw)
    assert (problem.seq, problem.kind) == (5, "rules_index")
    assert "fired_set 999 does not exist" in problem.detail


@pytest.mark.parametrize("referenced", [True, False])
async def test_a_set_under_another_sets_key_is_named(raw, chain, referenced: bool) -> None:
    """A lying key would file the next decisions that fire KO-AGE under DTI-REFER's set."""
    statements = [f"UPDATE fired_set SET sha256 = '{fired_set_key(['KO-AGE'])}'"]
    if not referenced:  # a set no decision names yet: still named
        statements = [
            f"INSERT INTO fired_set (id, sha256) VALUES (900, '{fired_set_key(['KO-AGE'])}')",
            "INSERT INTO fired_set_rule (set_id, rule_id) VALUES (900, 'DTI-REFER')",
        ]
    _sql(raw, *statements)
    problem = _only_problem(raw)
    assert problem.kind == "rules_index" and "another set's key" in problem.detail
    assert (problem.log, problem.seq) == (("decision", 1) if referenced else ("fired_set", 900))
