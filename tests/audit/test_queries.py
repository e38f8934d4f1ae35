"""An auditor finds decisions by time, application, outcome, rule fired and versions, pages
through them with a cursor, and exports them as JSONL or CSV."""

from __future__ import annotations

import asyncio
import csv
from datetime import UTC, datetime, timedelta

import msgspec
import pytest
import sqlalchemy as sa

from decision_service.audit import (
    CSV_COLUMNS,
    AuditStore,
    Filters,
    InvalidCursor,
    export_csv,
    export_jsonl,
    page,
)
from decision_service.audit.queries import count
from decision_service.audit.testing import MODEL, RULESET, sample_decision, sample_request
from decision_service.decision import Decision, ModelRef, RulesetRef

BASE = datetime(2026, 11, 1, tzinfo=UTC)
MODEL_NEXT = ModelRef("underwriting", "1.1.0", "4e" * 32)
RULESET_NEXT = RulesetRef("risk-appetite", "2026.12.0", "b8" * 32, "durable_rules")


def _decision(i: int) -> Decision:
    rules = [r for r, hit in (("DTI-REFER", i % 5 == 0), ("PD-APPETITE", i % 7 == 0)) if hit]
    return sample_decision(
        application_id=f"APP-{i % 40:04d}",
        outcome=("approve", "refer", "decline")[i % 3],
        pd=round(0.01 + i / 1000, 6),
        rules=rules,
        model=MODEL if i < 150 else MODEL_NEXT,
        ruleset=RULESET if i % 2 else RULESET_NEXT,
        decided_at=BASE + timedelta(minutes=7 * i, microseconds=i),
    )


@pytest.fixture
async def decisions(store: AuditStore) -> list[Decision]:
    made = [_decision(i) for i in range(300)]
    for start in range(0, 300, 100):
        await asyncio.gather(
            *(store.append(sample_request(d.application_id), d) for d in made[start : start + 100])
        )
    return made


def _all_pages(engine: sa.Engine, filters: Filters, limit: int = 37) -> list[str]:
    ids: list[str] = []
    cursor = None
    for _ in range(100):
        result = page(engine, filters, limit=limit, cursor=cursor)
        assert len(result.items) <= limit
        ids += [item.decision_id for item in result.items]
        cursor = result.next_cursor
        if cursor is None:
            return ids
    raise AssertionError("pagination did not end")


def _fired(d: Decision) -> set[str]:
    return {r.id for r in d.trace.rules_fired}


CASES = {
    "everything": (Filters(), lambda d: True),
    "from": (Filters(from_=BASE + timedelta(hours=20)), lambda d: d.decided_at >= "2026-11-01T20"),
    "from-to": (
        Filters(from_=BASE + timedelta(hours=5), to=datetime(2026, 11, 1, 9)),
        lambda d: "2026-11-01T05" <= d.decided_at < "2026-11-01T09",
    ),
    "application": (Filters(application_id="APP-0007"), lambda d: d.application_id == "APP-0007"),
    "outcome": (Filters(outcome="decline"), lambda d: d.outcome == "decline"),
    "rule": (Filters(rule="DTI-REFER"), lambda d: "DTI-REFER" in _fired(d)),
    "model": (Filters(model_version="1.1.0"), lambda d: d.trace.model.version == "1.1.0"),
    "ruleset": (
        Filters(ruleset_version="2026.12.0"),
        lambda d: d.trace.ruleset.version == "2026.12.0",
    ),
    "combined": (
        Filters(outcome="refer", rule="PD-APPETITE", model_version="1.0.0"),
        lambda d: (
            d.outcome == "refer" and "PD-APPETITE" in _fired(d) and d.trace.model.version == "1.0.0"
        ),
    ),
    "nothing": (Filters(application_id="APP-none"), lambda d: False),
}


@pytest.mark.parametrize("case", CASES)
async def test_filters_and_cursor_pagination(
    case: str, store: AuditStore, decisions: list[Decision]
) -> None:
    filters, wanted = CASES[case]
    expected = sorted(d.decision_id for d in decisions if wanted(d))
    assert _all_pages(store.reader, filters) == expected
    first = await store.page(filters, limit=5)
    assert [i.decision_id for i in first.items] == expected[:5]
    assert count(store.reader, filters) == len(expected)


async def test_filters_decode_from_query_parameters(store: AuditStore, decisions) -> None:
    filters = msgspec.convert({"from": "2026-11-02T00:00:00Z", "outcome": "approve"}, Filters)
    result = await store.page(filters, limit=1000)
    assert result.next_cursor is None
    assert len(result.items) == sum(
        d.decided_at >= "2026-11-02" and d.outcome == "approve" for d in decisions
    )


async def test_a_foreign_cursor_is_rejected(store: AuditStore) -> None:
    with pytest.raises(InvalidCursor):
        await store.page(cursor="%%%not-base64")


async def test_jsonl_export_streams_every_matching_record(store: AuditStore, decisions) -> None:
    lines = list(export_jsonl(store.reader, Filters(rule="PD-APPETITE")))
    wanted = sorted(
        (d for d in decisions if "PD-APPETITE" in _fired(d)), key=lambda d: d.decision_id
    )
    assert len(lines) == len(wanted)
    for line, d in zip(lines, wanted, strict=True):
        assert line.endswith("\n") and line.count("\n") == 1
        record = msgspec.json.decode(line)
        assert record["decision_id"] == d.decision_id
        assert msgspec.convert(record["decision"], Decision) == d
        assert record["request"] == msgspec.json.decode(sample_request(d.application_id))
        assert record["chain_id"] == store.chain_id


async def test_csv_export_has_flat_columns_and_rules_fired(store: AuditStore, decisions) -> None:
    lines = list(export_csv(store.reader, Filters(outcome="refer")))
    rows = list(csv.DictReader(lines))
    wanted = sorted((d for d in decisions if d.outcome == "refer"), key=lambda d: d.decision_id)
    assert tuple(rows[0]) == CSV_COLUMNS
    assert [r["decision_id"] for r in rows] == [d.decision_id for d in wanted]
    for row, d in zip(rows, wanted, strict=True):
        assert row["rules_fired"] == ";".join(r.id for r in d.trace.rules_fired)
        assert float(row["pd"]) == d.pd
        assert row["decided_at"] == d.decided_at
        assert row["model_version"] == d.trace.model.version
        assert row["approved_amount"] == ""


async def test_export_of_nothing_is_just_the_header(store: AuditStore) -> None:
    assert list(store.export_csv()) == [",".join(CSV_COLUMNS) + "\n"]
    assert list(store.export_jsonl()) == []
