"""Decision tables: the model and the hit-policy step (loaded by table_headers.py, table_rows.py).

A table's row becomes an ordinary `Rule` (id `TABLE/ROW`) whose condition is the conjunction of
its cells over the input columns, built from the same expression tree as `when:`. Every engine
(compiled, durable_rules, and the vectorized batch path) therefore only *matches* rows; the hit
policy is one pure step applied afterwards to the matched rows, here (`Table.select`,
`select_stage`, `apply_hit_policies`, `aggregate` with a `Fold`), so its semantics live in one
place (the batch path runs `select_stage` once per distinct pattern of matched rows and folds
`aggregate` over columns):

- `unique`: at most one row may match. Two or more is a policy bug: the static check reports any
  overlap with a witness; at run time the service never picks one silently — the matched rows
  appear in the trace with no effect, the table's own entry refers the application with reason
  code TBL-CONFLICT, the event is counted (`conflict_count`) and logged.
- `first`: the first matching row in row order fires; later matches are ignored.
- `priority`: the matching row with the most severe outcome fires (decline > refer > approve >
  none); ties go to the earlier row.
- `collect`: every matching row fires, like independent rules.
- `collect min|max|sum|count`: every matching row is in the trace; the one output column is
  aggregated over them and the table's own entry sets the result (min/max: missing when no row
  matched or no value is known; sum over known values, 0 when none; count: number of rows).
"""

from __future__ import annotations

import functools
import operator
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from decision_service.rules import expressions as ex
from decision_service.rules.ruleset import Rule
from decision_service.rules.schema import FieldType

HIT_POLICIES = ("unique", "first", "priority", "collect")
AGGREGATES = ("min", "max", "sum", "count")
CONFLICT_CODE = "TBL-CONFLICT"
SEVERITY = {None: 0, "approve": 1, "refer": 2, "decline": 3}  # hit policy `priority`


@dataclass(frozen=True, slots=True)
class Column:
    text: str
    node: ex.Node
    type: FieldType


@dataclass(frozen=True, slots=True)
class Output:
    kind: str  # outcome | reason | code | max_amount | set | compute
    field: str | None = None  # set / compute target

    @property
    def label(self) -> str:
        return self.kind if self.field is None else f"{self.kind} {self.field}"


@dataclass(frozen=True)
class Table:
    id: str
    description: str
    stage: int
    priority: int
    hit: str  # unique | first | priority | collect
    aggregate: str | None  # min | max | sum | count (collect only)
    complete: bool
    inputs: tuple[Column, ...]
    outputs: tuple[Output, ...]
    rows: tuple[Rule, ...]  # lowered rows, in row order
    cells: tuple[tuple[ex.Node | None, ...], ...]  # per row, per input: the cell test (None: -)
    line: int
    column: int
    conflict: Rule  # the table's own trace entry for a unique conflict
    rank: tuple[int, ...]  # per row: outcome severity (priority policy)

    @property
    def target(self) -> Output | None:
        """The aggregated output column (collect with an aggregate)."""
        return self.outputs[0] if self.aggregate else None

    def select(self, matched: list[int]) -> tuple[list[int], bool]:
        """Which of the matched row positions (ascending) fire, and whether it is a conflict.

        Pure over row positions so that every evaluator (row at a time or columnar) shares it.
        """
        if len(matched) <= 1 or self.hit == "collect":
            return matched, False
        if self.hit == "unique":
            return matched, True
        if self.hit == "first":
            return matched[:1], False
        rank = self.rank  # priority: most severe outcome, earliest row on ties
        best = max(matched, key=lambda p: (rank[p], -p))
        return [best], False


@dataclass(frozen=True)
class TableIndex:
    """What the evaluation loop needs: row id → (table, position); aggregate tables by stage."""

    rows: dict[str, tuple[Table, int]]
    aggregates: dict[int, tuple[Table, ...]]  # stage → tables with an aggregate


def index(tables: list[Table]) -> TableIndex:
    rows = {r.id: (t, i) for t in tables for i, r in enumerate(t.rows)}
    aggregates: dict[int, list[Table]] = {}
    for t in tables:
        if t.aggregate:
            aggregates.setdefault(t.stage, []).append(t)
    return TableIndex(rows, {s: tuple(ts) for s, ts in aggregates.items()})


# ---------------------------------------------------------------------------------------------
# The hit-policy step (shared by every engine through evaluation.run_stages)

_conflicts: dict[str, int] = {}
_conflicts_lock = threading.Lock()


def conflict_count(table_id: str | None = None) -> int:
    """Run-time conflicts of unique tables seen by this process (for metrics and tests)."""
    with _conflicts_lock:
        if table_id is not None:
            return _conflicts.get(table_id, 0)
        return sum(_conflicts.values())


def record_conflict(table: Table, rows: Sequence[Rule], times: int = 1) -> None:
    """Count and log a unique table's run-time conflict (`times` applications at once: batch)."""
    with _conflicts_lock:
        _conflicts[table.id] = _conflicts.get(table.id, 0) + times
    import structlog  # only on this rare path

    log = structlog.get_logger("decision_service.rules")
    extra = {"applications": times} if times != 1 else {}
    log.error(
        "unique decision table matched several rows; application referred",
        table=table.id,
        rows=[r.id for r in rows],
        code=CONFLICT_CODE,
        **extra,
    )


class Selection:
    """The outcome of the hit-policy step for one stage."""

    __slots__ = ("aggregated", "conflicts", "hits", "passive")

    def __init__(self) -> None:
        self.hits: list[Rule] = []  # rules and rows that fire, in firing order
        self.passive: dict[str, str] = {}  # row id → why it is traced without effect
        self.aggregated: dict[str, list[Rule]] = {}  # aggregate table id → its matched rows
        self.conflicts: list[tuple[Table, list[Rule]]] = []  # unique tables, matched rows


_NOTHING: dict = {}
_NO_CONFLICTS: list = []  # shared, never appended to (a fresh Selection gets its own list)


def _unchanged(hits: list[Rule]) -> Selection:
    sel = Selection.__new__(Selection)
    sel.hits, sel.passive, sel.aggregated, sel.conflicts = hits, _NOTHING, _NOTHING, _NO_CONFLICTS
    return sel


def _unaffected(idx: TableIndex, stage: int, hits: list[Rule]) -> bool:
    """Whether no hit policy changes anything: the stage has no aggregate table and no table
    matched more than one row (every decision of the shipped policy)."""
    if stage in idx.aggregates:
        return False
    rows = idx.rows
    first: str | None = None  # the first table matched; a set only once a second one is
    seen: set[str] | None = None
    for r in hits:
        tp = rows.get(r.id)
        if tp is None:
            continue
        tid = tp[0].id
        if first is None:
            first = tid
            continue
        if seen is None:
            seen = {first}
        if tid in seen:
            return False
        seen.add(tid)
    return True


def apply_hit_policies(idx: TableIndex, stage: int, hits: list[Rule]) -> Selection | None:
    """Apply each table's hit policy to the rows an engine matched (hits in firing order);
    a unique table's conflict is counted and logged here, once per decision. None: nothing
    changes, the hits fire as they are (no Selection built on the hot path)."""
    if _unaffected(idx, stage, hits):
        return None
    sel = _select(idx, stage, hits)
    for table, rows in sel.conflicts:
        record_conflict(table, rows)
    return sel


def select_stage(idx: TableIndex, stage: int, hits: list[Rule]) -> Selection:
    """The hit-policy step itself, pure: what fires, what is traced without effect, what is
    aggregated. The vectorized batch path calls it once per distinct pattern of matched rows."""
    return _unchanged(hits) if _unaffected(idx, stage, hits) else _select(idx, stage, hits)


def _select(idx: TableIndex, stage: int, hits: list[Rule]) -> Selection:
    """`select_stage` where some hit policy has work (checked by the caller)."""
    rows = idx.rows
    sel = Selection()
    groups: dict[str, list[int]] = {}
    tables: dict[str, Table] = {}
    for r in hits:
        tp = rows.get(r.id)
        if tp is not None:
            groups.setdefault(tp[0].id, []).append(tp[1])
            tables[tp[0].id] = tp[0]
    if not groups and stage not in idx.aggregates:
        sel.hits = hits
        return sel
    keep: set[str] = set()
    conflicts: dict[str, Table] = {}
    for tid, positions in groups.items():
        t = tables[tid]
        positions.sort()
        chosen, conflict = t.select(positions)
        for p in chosen:
            keep.add(t.rows[p].id)
        if conflict:
            conflicts[tid] = t
            for p in chosen:
                sel.passive[t.rows[p].id] = "conflict"
            sel.conflicts.append((t, [t.rows[p] for p in chosen]))
        elif t.aggregate:
            sel.aggregated[tid] = [t.rows[p] for p in chosen]
            for p in chosen:
                sel.passive[t.rows[p].id] = "aggregated"
    emitted: set[str] = set()
    for r in hits:
        tp = rows.get(r.id)
        if tp is None:
            sel.hits.append(r)
            continue
        if r.id not in keep:
            continue
        tid = tp[0].id
        if tid in conflicts and tid not in emitted:
            emitted.add(tid)
            sel.hits.append(conflicts[tid].conflict)
        sel.hits.append(r)
    for t in idx.aggregates.get(stage, ()):
        sel.aggregated.setdefault(t.id, [])
    return sel


# The value of a rule's compute / max_amount expression (None = unknown): evaluation.Effects.
NumberEval = Callable[[Rule, str, dict[str, Any]], Any]


def row_value(table: Table, row: Rule, env: dict[str, Any], number: NumberEval) -> Any:
    """The value of an aggregate table's output column in one row (None: unknown)."""
    out = table.outputs[0]
    if out.kind == "set":
        return row.set.get(out.field or "")
    if out.kind == "compute":
        return number(row, out.field or "", env) if out.field in row.compute else None
    return number(row, "max_amount", env) if row.max_amount is not None else None


class Fold:
    """The arithmetic of `aggregate` on one representation of values; this one: Python values,
    None = unknown. The batch path passes one over columns (as `lowest_cap` takes `minimum`)."""

    @staticmethod
    def const(v: Any) -> Any:
        return v

    @staticmethod
    def add(acc: Any, v: Any) -> Any:
        """acc + v, or acc where v is unknown."""
        return acc if v is None else acc + v

    @staticmethod
    def pick(acc: Any, v: Any, better: Callable[[Any, Any], Any]) -> Any:
        """v where it is known and acc is not or v is strictly better (the first of equals
        stays, as with Python's min/max: it decides int vs float), else acc."""
        return acc if v is None or (acc is not None and not better(v, acc)) else v


def aggregate(table: Table, values: list[Any], fold: type[Fold] | Any = Fold) -> Any:
    """collect min|max|sum|count over the matched rows' values (unknown values are skipped):
    count: the number of rows; sum: 0 when no value is known; min/max: unknown then."""
    if table.aggregate == "count":
        return len(values)
    if table.aggregate == "sum":
        return functools.reduce(fold.add, values, fold.const(0))
    better = operator.lt if table.aggregate == "min" else operator.gt
    return functools.reduce(lambda acc, v: fold.pick(acc, v, better), values, fold.const(None))
