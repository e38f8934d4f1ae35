"""How decisions are kept: packed byte for byte (encoding.py), and every filter of
GET /decisions served by an index on SQLite and PostgreSQL."""

from __future__ import annotations

import zlib
from datetime import UTC, datetime

import msgspec
import pytest
import sqlalchemy as sa

from decision_service.audit import AuditStore, Filters
from decision_service.audit.encoding import CorruptRecord, pack, unpack
from decision_service.audit.queries import _where
from decision_service.audit.tables import decision_table
from decision_service.audit.testing import sample_decision, sample_request


@pytest.mark.parametrize(
    ("request_json", "decision_json"),
    [
        (sample_request().decode(), '{"outcome":"approve"}'),
        ('{ "employer" : "Bäckerei Müller",\r\n\t"x": 1e3 }  ', '{"a":"\\u00e4 😀"}'),
        ("", ""),
        ("{}" * 20_000, "[" + "1," * 30_000 + "1]"),  # larger than the dictionary window
    ],
)
def test_a_packed_record_unpacks_to_the_same_bytes(request_json: str, decision_json: str) -> None:
    packed = pack(request_json, decision_json)
    assert unpack(packed) == (request_json, decision_json)
    assert unpack(memoryview(packed)) == (request_json, decision_json)


def test_a_typical_decision_packs_small() -> None:
    request = sample_request().decode()
    decision = sample_decision(outcome="refer", rules=["DTI-REFER", "LIMIT-BAND-C"])
    text = msgspec.json.encode(decision).decode()
    assert len(pack(request, text)) * 3 < len(request) + len(text)


@pytest.mark.parametrize(
    "bad",
    [
        b"",
        b"\x02" + pack("{}", "{}")[1:],  # a format this code does not know
        pack("{}", "{}")[:-3],  # truncated
        pack("{}", "{}") + b"x",  # trailing bytes
        b"\x01" + zlib.compress(b"\x00\x00\x00\x09{}"),  # a request longer than the record
    ],
)
def test_a_damaged_record_is_refused_not_guessed(bad: bytes) -> None:
    with pytest.raises(CorruptRecord):
        unpack(bad)


FILTERS = {
    "from": Filters(from_=datetime(2026, 1, 1, tzinfo=UTC)),
    "to": Filters(to=datetime(2026, 1, 1, tzinfo=UTC)),
    "application_id": Filters(application_id="APP-1"),
    "outcome": Filters(outcome="refer"),
    "rule": Filters(rule="DTI-REFER"),
    "model_version": Filters(model_version="1.0.0"),
    "ruleset_version": Filters(ruleset_version="2026.11.0"),
}


@pytest.mark.parametrize("name", list(FILTERS))
async def test_every_filter_is_served_by_an_index(store: AuditStore, raw, name: str) -> None:
    for i in range(3):
        await store.append(sample_request(), sample_decision(rules=["DTI-REFER"], pd=0.01 * i))
    stmt = sa.select(decision_table.c.decision_id).where(*_where(FILTERS[name]))
    with raw.connect() as conn:
        sql = str(stmt.compile(conn, compile_kwargs={"literal_binds": True}))
        if raw.dialect.name == "sqlite":
            plan = " ".join(r[-1] for r in conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {sql}"))
            assert "SEARCH decision " in plan, plan
            assert "SCAN decision" not in plan, plan
        else:
            conn.exec_driver_sql("SET enable_seqscan = off")  # tiny tables: ask for the index
            plan = " ".join(r[0] for r in conn.exec_driver_sql(f"EXPLAIN {sql}"))
            assert "Seq Scan" not in plan, plan
            assert "Index" in plan, plan
