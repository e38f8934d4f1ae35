"""The hash chain: how a record's hash is computed, and how the whole log is verified.

Each writer process appends to its own chain (``chain_id``). Record ``seq`` n carries the hash
of record n-1 (``prev_hash``; the first carries ``GENESIS``) and its own ``record_hash``: the
sha256 of a canonical JSON array of the format tag, chain id, seq, prev hash and every stored
column in a fixed order (including the request and decision JSON exactly as stored).
``chain_head`` keeps each chain's last seq and hash, so deleting the newest records shows too.

What verification names:

- ``edited``: the stored columns no longer hash to ``record_hash``;
- ``deleted``: a gap in ``seq`` (records missing in the middle or at the start);
- ``reordered``: ``prev_hash`` is not the previous record's hash (rows swapped or re-linked);
- ``tail_deleted``: ``chain_head`` counts more records than the chain holds;
- ``head_mismatch`` / ``head_missing``: the head disagrees with the last record, or is gone;
- ``rules_index``: the ``decision_rule`` rows of a record (what the "rule fired" filter reads)
  disagree with the rules in its hashed decision JSON.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any, Literal

import msgspec
import sqlalchemy as sa

from decision_service.audit.records import fired_rule_ids
from decision_service.audit.tables import chain_head_table, decision_rule_table, decision_table

FORMAT = "audit-v1"
GENESIS = "0" * 64

# Every stored column that goes into the hash, in this order (chain_id, seq, prev_hash first).
HASHED_COLUMNS: tuple[str, ...] = (
    "decision_id",
    "decided_at",
    "application_id",
    "outcome",
    "pd",
    "risk_band",
    "approved_amount",
    "model_name",
    "model_version",
    "model_sha256",
    "ruleset_name",
    "ruleset_version",
    "ruleset_sha256",
    "engine",
    "code_version",
    "trace_id",
    "request_json",
    "decision_json",
)

ProblemKind = Literal[
    "edited",
    "deleted",
    "reordered",
    "tail_deleted",
    "head_mismatch",
    "head_missing",
    "rules_index",
]


def canonical_time(value: datetime) -> str:
    """RFC 3339 UTC with microseconds: how a timestamp enters the hash."""
    value = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    return value.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def record_hash(chain_id: str, seq: int, prev_hash: str, row: Mapping[str, Any]) -> str:
    """sha256 (hex) of the canonical encoding of one record."""
    values: list[Any] = [FORMAT, chain_id, seq, prev_hash]
    for name in HASHED_COLUMNS:
        value = row[name]
        values.append(canonical_time(value) if isinstance(value, datetime) else value)
    return hashlib.sha256(msgspec.json.encode(values)).hexdigest()


class Problem(msgspec.Struct, frozen=True):
    """The first broken record of one chain."""

    chain_id: str
    seq: int  # the seq where the chain breaks (expected seq for a gap)
    decision_id: str | None  # the stored record found there (None if nothing is left)
    kind: ProblemKind
    detail: str


class ChainReport(msgspec.Struct, frozen=True):
    chain_id: str
    records: int
    last_seq: int  # highest seq found (0 if none)
    head_seq: int | None  # what chain_head says (None if the head row is missing)
    ok: bool


class VerifyReport(msgspec.Struct, frozen=True):
    ok: bool
    records: int
    chains: list[ChainReport]
    problems: list[Problem]  # at most one per chain: its first broken record

    @property
    def first_problem(self) -> Problem | None:
        return self.problems[0] if self.problems else None


class _ChainWalk:
    """Checks one chain record by record, in seq order; stops at the first problem."""

    def __init__(self, chain_id: str) -> None:
        self.chain_id = chain_id
        self.expected_seq = 1
        self.prev_hash = GENESIS
        self.records = 0
        self.last_seq = 0
        self.last_hash: str | None = None
        self.problem: Problem | None = None

    def check(self, row: Mapping[str, Any]) -> None:
        self.records += 1
        seq = row["seq"]
        self.last_seq = seq
        self.last_hash = row["record_hash"]
        if self.problem is not None:
            return
        decision_id = row["decision_id"]
        if seq != self.expected_seq:
            first, last = self.expected_seq, seq - 1
            missing = f"seq {first}" if first == last else f"seq {first}..{last}"
            self.problem = self._problem(
                first, decision_id, "deleted", f"{missing} missing before seq {seq}: deleted"
            )
        elif row["prev_hash"] != self.prev_hash:
            self.problem = self._problem(
                seq,
                decision_id,
                "reordered",
                "prev_hash is not the hash of the previous record: reordered or re-linked",
            )
        elif record_hash(self.chain_id, seq, row["prev_hash"], row) != row["record_hash"]:
            self.problem = self._problem(
                seq, decision_id, "edited", "stored columns do not match record_hash: edited"
            )
        self.expected_seq = seq + 1
        self.prev_hash = row["record_hash"]

    def finish(self, head: Mapping[str, Any] | None) -> ChainReport:
        head_seq = None if head is None else head["last_seq"]
        if self.problem is None:
            self.problem = self._check_head(head)
        return ChainReport(
            self.chain_id, self.records, self.last_seq, head_seq, ok=self.problem is None
        )

    def _check_head(self, head: Mapping[str, Any] | None) -> Problem | None:
        if head is None:
            return self._problem(
                self.last_seq, None, "head_missing", "chain_head row missing for this chain"
            )
        head_seq, head_hash = head["last_seq"], head["last_hash"]
        if head_seq > self.last_seq:
            first = self.last_seq + 1
            missing = f"seq {first}" if first == head_seq else f"seq {first}..{head_seq}"
            return self._problem(
                first, None, "tail_deleted", f"{missing} missing at the end of the chain: deleted"
            )
        if head_seq < self.last_seq or head_hash != self.last_hash:
            return self._problem(
                self.last_seq,
                None,
                "head_mismatch",
                f"chain_head (seq {head_seq}) does not match the last record (seq {self.last_seq})",
            )
        return None

    def _problem(
        self, seq: int, decision_id: str | None, kind: ProblemKind, detail: str
    ) -> Problem:
        return Problem(self.chain_id, seq, decision_id, kind, detail)


def verify_rows(
    rows: Iterable[Mapping[str, Any]], heads: Mapping[str, Mapping[str, Any]]
) -> VerifyReport:
    """Verify records given in (chain_id, seq) order against the chain heads."""
    reports: list[ChainReport] = []
    problems: list[Problem] = []
    total = 0
    walk: _ChainWalk | None = None
    seen: set[str] = set()

    def close(w: _ChainWalk) -> None:
        reports.append(w.finish(heads.get(w.chain_id)))
        if w.problem is not None:
            problems.append(w.problem)

    for row in rows:
        total += 1
        if walk is None or row["chain_id"] != walk.chain_id:
            if walk is not None:
                close(walk)
            walk = _ChainWalk(row["chain_id"])
            seen.add(walk.chain_id)
        walk.check(row)
    if walk is not None:
        close(walk)
    for chain_id, head in heads.items():  # heads whose records are all gone
        if chain_id not in seen and head["last_seq"] > 0:
            close(_ChainWalk(chain_id))
    return VerifyReport(ok=not problems, records=total, chains=reports, problems=problems)


def verify(engine: sa.Engine, *, batch: int = 1000) -> VerifyReport:
    """Walk every chain in seq order and name the first broken record of each."""
    columns = [decision_table.c[name] for name in ("chain_id", "seq", "prev_hash", "record_hash")]
    columns += [decision_table.c[name] for name in HASHED_COLUMNS]
    stmt = sa.select(*columns).order_by(decision_table.c.chain_id, decision_table.c.seq)
    with engine.connect() as conn:
        heads = {
            row["chain_id"]: row
            for row in conn.execute(sa.select(chain_head_table)).mappings().all()
        }
        result = conn.execution_options(yield_per=batch).execute(stmt).mappings()
        report = verify_rows(result, heads)
    index_problem = check_rules_index(engine, batch=batch)
    if index_problem is None or any(p.chain_id == index_problem.chain_id for p in report.problems):
        return report
    chains = [
        msgspec.structs.replace(c, ok=False) if c.chain_id == index_problem.chain_id else c
        for c in report.chains
    ]
    return VerifyReport(False, report.records, chains, [*report.problems, index_problem])


def check_rules_index(engine: sa.Engine, *, batch: int = 1000) -> Problem | None:
    """The first record whose ``decision_rule`` rows differ from its decision's fired rules."""
    d, r = decision_table.c, decision_rule_table.c

    def bytewise(column: sa.ColumnElement[str]) -> sa.ColumnElement[str]:
        # the merge below compares ids in Python: make the database order them the same way
        return column.collate("C") if engine.dialect.name == "postgresql" else column

    records = sa.select(d.decision_id, d.chain_id, d.seq, d.decision_json).order_by(
        bytewise(d.decision_id)
    )
    rules = sa.select(r.decision_id, r.rule_id).order_by(bytewise(r.decision_id))
    with engine.connect() as conn_d, engine.connect() as conn_r:
        rule_rows = iter(conn_r.execution_options(yield_per=batch).execute(rules))
        pending = next(rule_rows, None)
        for row in conn_d.execution_options(yield_per=batch).execute(records):
            indexed: set[str] = set()
            while pending is not None and pending.decision_id <= row.decision_id:
                if pending.decision_id == row.decision_id:
                    indexed.add(pending.rule_id)
                pending = next(rule_rows, None)
            fired = set(fired_rule_ids(row.decision_json))
            if indexed != fired:
                missing, extra = sorted(fired - indexed), sorted(indexed - fired)
                return Problem(
                    row.chain_id,
                    row.seq,
                    row.decision_id,
                    "rules_index",
                    f"decision_rule rows differ from the decision: missing {missing}, "
                    f"extra {extra}",
                )
    return None
