"""Queries for auditors: one record, filtered pages (cursor pagination), streaming export.

All functions are synchronous over an engine (the CLI calls them directly; ``AuditStore`` wraps
them for the async API). Records are ordered by ``decision_id``: UUIDv7, so time order.
"""

from __future__ import annotations

import base64
import binascii
import csv
import io
from collections.abc import Iterator, Mapping
from datetime import datetime
from typing import Annotated, Any

import msgspec
import sqlalchemy as sa

from decision_service.audit.chain import canonical_time
from decision_service.audit.consistency import indexed_values
from decision_service.audit.records import expand, fired_rule_ids, parse_time, reason_codes
from decision_service.audit.tables import decision_table, fired_set_rule_table, ruleset_text_table
from decision_service.decision import Decision

DEFAULT_LIMIT = 100
MAX_LIMIT = 1000


class InvalidCursor(ValueError):
    """The pagination cursor was not one this service issued."""


# A filter value: printable, bounded. PostgreSQL refuses NUL in text (a 500 before this), and
# no id or version this service writes is longer or holds control characters.
FilterText = Annotated[
    str, msgspec.Meta(min_length=1, max_length=128, pattern=r"^[^\x00-\x1f\x7f]+$")
]
# Decision ids are UUIDv7 in canonical form; anything else cannot be one of ours.
DECISION_ID_PATTERN = r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"


class Filters(msgspec.Struct, frozen=True, kw_only=True):
    """The filters of ``GET /decisions`` and ``audit export`` (all optional, combined with AND).

    ``from_`` (``from`` in JSON / query strings) is inclusive, ``to`` exclusive. Build it with
    ``msgspec.convert`` from untrusted input so the constraints are checked.
    """

    from_: datetime | None = msgspec.field(default=None, name="from")
    to: datetime | None = None  # naive datetimes are taken as UTC
    application_id: FilterText | None = None
    outcome: FilterText | None = None
    rule: FilterText | None = None  # id of a rule that fired
    model_version: FilterText | None = None
    ruleset_version: FilterText | None = None


class StoredDecision(msgspec.Struct, frozen=True):
    """One audit record exactly as stored."""

    decision_id: str
    decided_at: str  # RFC 3339 UTC, microseconds
    application_id: str
    outcome: str
    pd: float
    risk_band: str | None
    approved_amount: float | None
    model_name: str
    model_version: str
    model_sha256: str
    ruleset_name: str
    ruleset_version: str
    ruleset_sha256: str
    engine: str
    code_version: str
    trace_id: str | None
    chain_id: str
    seq: int
    prev_hash: str
    record_hash: str
    request_json: str  # the application as received
    decision_json: str  # the decision as answered

    def decision(self) -> Decision:
        return msgspec.json.decode(self.decision_json, type=Decision)


class Page(msgspec.Struct, frozen=True):
    items: list[StoredDecision]
    next_cursor: str | None


class RulesetText(msgspec.Struct, frozen=True):
    sha256: str
    name: str
    version: str
    text: str
    first_seen: str


# -- cursors ------------------------------------------------------------------------------------


def encode_cursor(decision_id: str) -> str:
    return base64.urlsafe_b64encode(decision_id.encode()).rstrip(b"=").decode()


def decode_cursor(cursor: str) -> str:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        decision_id = raw.decode("ascii")
    except (binascii.Error, UnicodeDecodeError, ValueError) as exc:
        raise InvalidCursor(f"invalid cursor: {cursor!r}") from exc
    if not decision_id or len(decision_id) > 64 or not decision_id.isprintable():
        raise InvalidCursor(f"invalid cursor: {cursor!r}")
    return decision_id


# -- queries ------------------------------------------------------------------------------------


def _where(filters: Filters | None) -> list[sa.ColumnElement[bool]]:
    if filters is None:
        return []
    t = decision_table.c
    clauses: list[sa.ColumnElement[bool]] = []
    if filters.from_ is not None:
        clauses.append(t.decided_at >= parse_time(filters.from_))
    if filters.to is not None:
        clauses.append(t.decided_at < parse_time(filters.to))
    for name in ("application_id", "outcome", "model_version", "ruleset_version"):
        value = getattr(filters, name)
        if value is not None:
            clauses.append(t[name] == value)
    if filters.rule is not None:  # the sets holding the rule, then their decisions
        r = fired_set_rule_table.c
        clauses.append(t.fired_set.in_(sa.select(r.set_id).where(r.rule_id == filters.rule)))
    return clauses


def _stored(row: Mapping[str, Any]) -> StoredDecision:
    values = expand(row)
    values["decided_at"] = canonical_time(values["decided_at"])
    return StoredDecision(**values)


_TEXTS = ("request_json", "decision_json")  # stored packed, in ``record``
_COLUMNS = [
    decision_table.c[name] for name in StoredDecision.__struct_fields__ if name not in _TEXTS
] + [decision_table.c.record]


def get(engine: sa.Engine, decision_id: str) -> StoredDecision | None:
    """The stored record of one decision, or None."""
    stmt = sa.select(*_COLUMNS).where(decision_table.c.decision_id == decision_id)
    with engine.connect() as conn:
        row = conn.execute(stmt).mappings().first()
    return None if row is None else _stored(row)


def count(engine: sa.Engine, filters: Filters | None = None) -> int:
    """How many decisions the filters select (e.g. a progress bar's total)."""
    stmt = sa.select(sa.func.count()).select_from(decision_table).where(*_where(filters))
    with engine.connect() as conn:
        return int(conn.execute(stmt).scalar_one())


def page(
    engine: sa.Engine,
    filters: Filters | None = None,
    *,
    limit: int = DEFAULT_LIMIT,
    cursor: str | None = None,
) -> Page:
    """Up to ``limit`` records after ``cursor`` in decision_id order, and the next cursor."""
    limit = max(1, min(int(limit), MAX_LIMIT))
    clauses = _where(filters)
    if cursor:
        clauses.append(decision_table.c.decision_id > decode_cursor(cursor))
    stmt = (
        sa.select(*_COLUMNS).where(*clauses).order_by(decision_table.c.decision_id).limit(limit + 1)
    )
    with engine.connect() as conn:
        rows = conn.execute(stmt).mappings().all()
    items = [_stored(row) for row in rows[:limit]]
    next_cursor = encode_cursor(items[-1].decision_id) if len(rows) > limit else None
    return Page(items, next_cursor)


def iter_records(
    engine: sa.Engine, filters: Filters | None = None, *, batch: int = 500
) -> Iterator[StoredDecision]:
    """Every matching record in decision_id order, streamed ``batch`` rows at a time."""
    stmt = sa.select(*_COLUMNS).where(*_where(filters)).order_by(decision_table.c.decision_id)
    with engine.connect() as conn:
        for row in conn.execution_options(yield_per=batch).execute(stmt).mappings():
            yield _stored(row)


def ruleset_text(engine: sa.Engine, sha256: str) -> RulesetText | None:
    """The text of the ruleset version with this sha256, as it was when first used."""
    stmt = sa.select(ruleset_text_table).where(ruleset_text_table.c.sha256 == sha256)
    with engine.connect() as conn:
        row = conn.execute(stmt).mappings().first()
    if row is None:
        return None
    values = dict(row)
    values["first_seen"] = canonical_time(values["first_seen"])
    return RulesetText(**values)


# -- export -------------------------------------------------------------------------------------


class _ExportLine(msgspec.Struct):
    decision_id: str
    chain_id: str
    seq: int
    record_hash: str
    code_version: str
    request: msgspec.Raw
    decision: msgspec.Raw


_encoder = msgspec.json.Encoder()


def export_jsonl(
    engine: sa.Engine, filters: Filters | None = None, *, batch: int = 500
) -> Iterator[str]:
    """One JSON line (ending in a newline) per record: the request and decision as stored."""
    for record in iter_records(engine, filters, batch=batch):
        line = _ExportLine(
            decision_id=record.decision_id,
            chain_id=record.chain_id,
            seq=record.seq,
            record_hash=record.record_hash,
            code_version=record.code_version,
            # the request as received, only with its line breaks removed to stay one line
            request=msgspec.Raw(msgspec.json.format(record.request_json, indent=0)),
            decision=msgspec.Raw(record.decision_json),
        )
        yield _encoder.encode(line).decode() + "\n"


CSV_COLUMNS: tuple[str, ...] = (
    "decision_id",
    "decided_at",
    "application_id",
    "outcome",
    "approved_amount",
    "pd",
    "risk_band",
    "rules_fired",
    "reasons",
    "model_name",
    "model_version",
    "model_sha256",
    "ruleset_name",
    "ruleset_version",
    "ruleset_sha256",
    "engine",
    "code_version",
    "trace_id",
    "chain_id",
    "seq",
    "record_hash",
)


def export_csv(
    engine: sa.Engine, filters: Filters | None = None, *, batch: int = 500
) -> Iterator[str]:
    """A header line, then one CSV line per record (rules fired and reason codes joined by ';').

    One source, as the JSONL export: every field the decision JSON holds is read from it, not
    from the indexed columns (verify names a record whose columns disagree with its JSON);
    only what the decision does not hold (code version, chain position) is a column."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")

    def line(values: list[Any]) -> str:
        buffer.seek(0)
        buffer.truncate()
        writer.writerow(values)
        return buffer.getvalue()

    yield line(list(CSV_COLUMNS))
    for record in iter_records(engine, filters, batch=batch):
        values = indexed_values(record.decision_json)
        values["decided_at"] = canonical_time(values["decided_at"])
        values["rules_fired"] = ";".join(fired_rule_ids(record.decision_json))
        values["reasons"] = ";".join(reason_codes(record.decision_json))
        yield line(
            [
                _csv_value(values[name] if name in values else getattr(record, name))
                for name in CSV_COLUMNS
            ]
        )


def _csv_value(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, float):
        return repr(value)
    return value


# -- Parquet (for the data team) -----------------------------------------------------------------

PARQUET_BATCH = 10_000


def parquet_schema() -> Any:
    import pyarrow as pa

    fields = [
        ("decision_id", pa.string()),
        ("decided_at", pa.timestamp("us", tz="UTC")),
        ("application_id", pa.string()),
        ("outcome", pa.string()),
        ("approved_amount", pa.float64()),
        ("pd", pa.float64()),
        ("risk_band", pa.string()),
        ("rules_fired", pa.list_(pa.string())),
        ("reasons", pa.list_(pa.string())),
    ]
    fields += [(name, pa.string()) for name in CSV_COLUMNS[9:] if name not in ("seq",)]
    fields += [("seq", pa.int64()), ("request_json", pa.string()), ("decision_json", pa.string())]
    return pa.schema(fields)


def export_parquet(
    engine: sa.Engine, filters: Filters | None, sink: Any, *, batch: int = PARQUET_BATCH
) -> int:
    """Every matching record to a Parquet file (`sink`: path or binary file), written in row
    groups of `batch` records; the CSV export's columns plus the request and decision as
    stored. Returns the number of records."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = parquet_schema()
    rows: dict[str, list[Any]] = {name: [] for name in schema.names}
    total = 0
    with pq.ParquetWriter(sink, schema) as writer:

        def flush() -> None:
            writer.write_table(pa.table(rows, schema=schema))
            for values in rows.values():
                values.clear()

        for record in iter_records(engine, filters, batch=min(batch, 1000)):
            for name in schema.names:
                if name == "rules_fired":
                    rows[name].append(fired_rule_ids(record.decision_json))
                elif name == "reasons":
                    rows[name].append(reason_codes(record.decision_json))
                elif name == "decided_at":
                    rows[name].append(parse_time(record.decided_at))
                else:
                    rows[name].append(getattr(record, name))
            total += 1
            if len(rows["decision_id"]) >= batch:
                flush()
        if rows["decision_id"] or total == 0:
            flush()
    return total
