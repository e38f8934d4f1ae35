"""``audit verify``: every chain of every log, against the audit key and the signed checkpoints.

Decisions (one chain per writer), ``access_log`` and ``change_log`` are walked record by record
(chain.py names the first broken record of each chain); the decision rule index and the
indexed columns are checked against each decision's JSON; every signed checkpoint of this
database must still hold (checkpoints.py).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import msgspec
import sqlalchemy as sa

from decision_service.audit import consistency
from decision_service.audit.chain import (
    DECISIONS,
    HASHED_COLUMNS,
    Anchor,
    ChainReport,
    ChainWalk,
    Problem,
    VerifyReport,
)
from decision_service.audit.checkpoints import CheckpointFile, CheckpointRead, Head
from decision_service.audit.encoding import CorruptRecord, fired_set_key, unpack
from decision_service.audit.keys import DEFAULT_KEY_FILE, Keyring
from decision_service.audit.logs import LOG_TABLES, database_id
from decision_service.audit.records import expand, fired_rule_ids
from decision_service.audit.tables import (
    chain_head_table,
    decision_table,
    fired_set_rule_table,
    fired_set_table,
    log_head_table,
)

# Decisions are also checked for one truth: indexed columns == decision JSON.
DECISION_SPEC = dataclasses.replace(DECISIONS, check_row=consistency.describe)


class SchemaBehind(Exception):
    """The database is not at the code's schema: verify it after `decision-service db upgrade`
    (which keeps every record and chain), or with the release that wrote it."""


def require_current_schema(engine: sa.Engine) -> None:
    from decision_service.audit import migrations  # Alembic: imported only when verifying

    status = migrations.status(engine)
    if status.state != "current":
        raise SchemaBehind(
            f"the audit database is {status.describe()}: run `decision-service db upgrade` "
            "first (it keeps every record and chain), then verify"
        )


def verify(
    engine: sa.Engine,
    keyring: Keyring | None = None,
    checkpoints: CheckpointFile | Path | None = None,
    *,
    incremental: bool = False,
    mark_verified: bool = False,
    batch: int = 1000,
) -> VerifyReport:
    """Walk every chain and name the first broken record of each.

    ``keyring``: the audit keys (default: ``var/audit.key``); ``checkpoints``: the signed
    checkpoint file to hold the database to (None: checkpoints are not checked).
    ``incremental``: walk each chain only from its last ``verified`` checkpoint on (records
    before it were checked then; an edit to them since shows only in a full verify; the rule
    index is checked in full mode only). ``mark_verified``: if everything holds, sign the heads
    just verified into the checkpoint file, as the next incremental verify's starting point."""
    require_current_schema(engine)
    if keyring is None:
        keyring = Keyring.load(DEFAULT_KEY_FILE)
    if isinstance(checkpoints, Path):
        checkpoints = CheckpointFile(checkpoints)
    database = database_id(engine)
    signed = checkpoints.read(keyring, database) if checkpoints else CheckpointRead()
    walks = _Walks(keyring, signed, signed.verified if incremental else {})

    d = decision_table.c
    columns = [d[n] for n in ("chain_id", "seq", "prev_hash", "record_hash", "key_id")]
    columns += [d[n] for n in HASHED_COLUMNS if n in d and n != "chain_id"]
    columns.append(d.record)  # request_json and decision_json, packed
    with engine.connect() as conn:
        if engine.dialect.name == "postgresql":  # heads, records and logs from one snapshot
            conn = conn.execution_options(isolation_level="REPEATABLE READ")
        heads = {r["chain_id"]: r for r in conn.execute(sa.select(chain_head_table)).mappings()}
        starts = {c: a.seq for (log, c), a in walks.starts.items() if log == "decision"}
        where = (
            [
                sa.or_(
                    d.chain_id.not_in(list(starts)),
                    *(sa.and_(d.chain_id == c, d.seq >= seq) for c, seq in starts.items()),
                )
            ]
            if starts
            else []
        )
        rows = conn.execution_options(yield_per=batch).execute(
            sa.select(*columns).where(*where).order_by(d.chain_id, d.seq)
        )
        unpacked = (expand(row, lenient=True) for row in rows.mappings())
        records = walks.run(DECISION_SPEC, unpacked, heads)
        for log, (spec, table) in LOG_TABLES.items():
            head = (
                conn.execute(sa.select(log_head_table).where(log_head_table.c.log == log))
                .mappings()
                .first()
            )
            start = walks.starts.get((log, log))
            rows = conn.execution_options(yield_per=batch).execute(
                sa.select(table, sa.literal(log).label("chain_id"))
                .where(table.c.seq >= (1 if start is None else start.seq))
                .order_by(table.c.seq)
            )
            walks.run(spec, rows.mappings(), {log: head} if head else {}, log_chain=log)
    index_problem = None if incremental else check_rules_index(engine, batch=batch)
    if index_problem is not None:
        walks.add_problem(index_problem)
    warnings = _warnings(walks, signed, checkpoints, database)
    problems = [*walks.problems, *signed.problems]
    if mark_verified and not problems and checkpoints and database and keyring.current_id:
        checkpoints.write(keyring, database, walks.verified_heads(), kind="verified")
    return VerifyReport(
        ok=not problems,
        records=records,
        chains=[r for r in walks.reports if r.log == "decision"],
        problems=problems,
        logs=[r for r in walks.reports if r.log != "decision"],
        checkpoints=signed.lines,
        warnings=warnings,
        mode="incremental" if incremental else "full",
    )


class _Walks:
    """Runs the walks of one verification and gathers their reports."""

    def __init__(
        self, keyring: Keyring, signed: CheckpointRead, starts: dict[tuple[str, str], Anchor]
    ) -> None:
        self.keyring = keyring
        self.signed = signed
        self.starts = starts
        self.heads: list[Head] = []  # the last record of every chain walked
        self.reports: list[ChainReport] = []
        self.problems: list[Problem] = []
        self.legacy = 0
        self.unanchored_keyed = 0

    def walk(self, spec: Any, chain_id: str) -> ChainWalk:
        return ChainWalk(
            spec,
            chain_id,
            self.keyring,
            self.signed.anchors.get((spec.log, chain_id)),
            legacy_needs_anchor=self.signed.adopted,
            start=self.starts.get((spec.log, chain_id)),
        )

    def run(
        self,
        spec: Any,
        rows: Iterable[Mapping[str, Any]],
        heads: Mapping[str, Mapping[str, Any]],
        *,
        log_chain: str | None = None,
    ) -> int:
        total = 0
        walk: ChainWalk | None = None
        seen: set[str] = set()
        for row in rows:
            total += 1
            if walk is None or row["chain_id"] != walk.chain_id:
                if walk is not None:
                    self._close(walk, heads)
                walk = self.walk(spec, row["chain_id"])
                seen.add(walk.chain_id)
            walk.check(row)
        if walk is not None:
            self._close(walk, heads)
        # chains whose records are all gone, but which a head row or a checkpoint remembers
        gone = {c for c, h in heads.items() if h["last_seq"] > 0}
        gone |= {c for (log, c) in self.signed.anchors if log == spec.log}
        if log_chain is not None:
            gone = {c for c in gone if c == log_chain}
        for chain_id in sorted(gone - seen):
            self._close(self.walk(spec, chain_id), heads)
        return total

    def _close(self, walk: ChainWalk, heads: Mapping[str, Mapping[str, Any]]) -> None:
        report = walk.finish(heads.get(walk.chain_id))
        self.reports.append(report)
        if walk.last_hash is not None:
            self.heads.append(Head(walk.spec.log, walk.chain_id, walk.last_seq, walk.last_hash))
        self.legacy += report.legacy_records
        if report.checkpoint_seq is None and report.records > report.legacy_records:
            self.unanchored_keyed += 1
        if walk.problem is not None:
            self.problems.append(walk.problem)

    def verified_heads(self) -> list[Head]:
        return self.heads

    def add_problem(self, problem: Problem) -> None:
        if any((p.log, p.chain_id) == (problem.log, problem.chain_id) for p in self.problems):
            return  # one problem per chain: the walk's comes first
        self.problems.append(problem)
        self.reports = [
            msgspec.structs.replace(r, ok=False)
            if (r.log, r.chain_id) == (problem.log, problem.chain_id)
            else r
            for r in self.reports
        ]


def _warnings(
    walks: _Walks, signed: CheckpointRead, checkpoints: CheckpointFile | None, database: str | None
) -> list[str]:
    out: list[str] = []
    if checkpoints is None:
        out.append("signed checkpoints not checked: a deleted tail would not be seen")
    elif signed.lines == 0:
        out.append(
            f"no signed checkpoint for this database in {checkpoints.path}"
            + (
                f" (it holds {signed.other_databases} for other databases)"
                if signed.other_databases
                else ""
            )
            + ": a deleted tail would not be seen"
        )
    if database is None and walks.reports and any(r.records for r in walks.reports):
        out.append("change_log has no audit.init record: this database has no id")
    if walks.legacy and not signed.adopted:
        out.append(
            f"{walks.legacy} plain-hashed records from before the audit key are not anchored "
            "by a signed checkpoint yet: start the service once to anchor them"
        )
    if checkpoints is not None and walks.unanchored_keyed:
        out.append(
            f"{walks.unanchored_keyed} chains have no signed checkpoint yet (one is written "
            "every checkpoint interval and at shutdown)"
        )
    return out


def _fired_sets(engine: sa.Engine) -> tuple[dict[int, set[str]], set[int]]:
    """Every stored set's rules, and the sets whose key is not their rules' key."""
    fs, fr = fired_set_table.c, fired_set_rule_table.c
    with engine.connect() as conn:
        keys = dict(conn.execute(sa.select(fs.id, fs.sha256)).all())
        members: dict[int, set[str]] = {set_id: set() for set_id in keys}
        for set_id, rule_id in conn.execute(sa.select(fr.set_id, fr.rule_id)):
            members.setdefault(set_id, set()).add(rule_id)
        conn.rollback()
    return members, {s for s, rules in members.items() if keys.get(s) != fired_set_key(rules)}


def check_rules_index(engine: sa.Engine, *, batch: int = 1000) -> Problem | None:
    """The first record (in decision_id order) whose fired set is not its decision's fired
    rules: ``decision.fired_set`` names a set whose ``fired_set_rule`` rows differ, names no
    set, or names one whose key (``fired_set.sha256``) is not its rules' (writers would file
    other decisions under it); else a set no decision names whose key is not its rules'."""
    d = decision_table.c
    members, lying = _fired_sets(engine)
    named: set[int] = set()
    records = sa.select(d.decision_id, d.chain_id, d.seq, d.record, d.fired_set).order_by(
        d.decision_id
    )
    with engine.connect() as conn:
        for row in conn.execution_options(yield_per=batch).execute(records):
            named.add(row.fired_set)
            if row.fired_set not in members:  # a set committed since they were read?
                members, lying = _fired_sets(engine)
            try:
                fired = set(fired_rule_ids(unpack(row.record)[1]))
            except (msgspec.DecodeError, msgspec.ValidationError, CorruptRecord):
                continue  # unreadable record: the walk names it (columns_disagree)
            indexed = members.get(row.fired_set)
            if indexed == fired and row.fired_set not in lying:
                continue
            if indexed is None:
                detail = f"fired_set {row.fired_set} does not exist"
            elif indexed != fired:
                missing, extra = sorted(fired - indexed), sorted(indexed - fired)
                detail = f"missing {missing}, extra {extra}"
            else:
                detail = f"fired_set {row.fired_set} has another set's key"
            return Problem(
                row.chain_id,
                row.seq,
                row.decision_id,
                "rules_index",
                f"the decision's fired set differs from its fired rules: {detail}",
                record_id=row.decision_id,
            )
    for set_id in sorted(lying - named):  # no decision names it (yet): named as itself
        detail = f"fired_set {set_id} has another set's key (or rules)"
        return Problem(
            "fired_set", set_id, None, "rules_index", detail, log="fired_set", record_id=str(set_id)
        )
    return None
