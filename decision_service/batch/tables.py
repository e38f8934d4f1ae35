"""Decision tables over columns: the row path's own hit-policy step, once per distinct pattern.

Engines only *match* table rows; which matched rows fire, which are traced without effect, a
unique table's conflict entry and the aggregated rows are decided by rules/tables.py
(`select_stage`, the pure core of `apply_hit_policies`). Here that step runs once per distinct
pattern of matched table rows in a stage — a handful for a real policy — and its answer is
spread back over the rows that have the pattern. An aggregate is the same `aggregate` over the
same `row_value`s, folded over columns (`ColumnFold`) once per distinct set of aggregated rows.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from decision_service.batch.columns import Col
from decision_service.rules.ruleset import Rule, Ruleset
from decision_service.rules.tables import (
    Table,
    aggregate,
    record_conflict,
    row_value,
    select_stage,
)


def distinct_patterns(matrix: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
    """Rows of a (k, n) bool matrix grouped by column: each column's pattern index, and per
    pattern the indices of its True entries (ascending)."""
    k, n = matrix.shape
    if k == 0 or n == 0:
        return np.zeros(n, np.intp), [np.zeros(0, np.intp)]
    sub = matrix.T
    if k <= 16:  # one small integer per column: count them, no sort
        key = sub @ np.left_shift(np.int64(1), np.arange(k, dtype=np.int64))
        keys = np.flatnonzero(np.bincount(key, minlength=1 << k))
        lookup = np.zeros(1 << k, np.intp)
        lookup[keys] = np.arange(len(keys))
        pattern = lookup[key]
        members = [np.flatnonzero((int(key) >> np.arange(k)) & 1) for key in keys]
    elif k <= 62:  # one integer per column: a fast 1-D unique
        weights = np.left_shift(np.int64(1), np.arange(k, dtype=np.int64))
        keys, pattern = np.unique(sub @ weights, return_inverse=True)
        members = [np.flatnonzero((int(key) >> np.arange(k)) & 1) for key in keys]
    else:
        packed, pattern = np.unique(np.packbits(sub, axis=1), axis=0, return_inverse=True)
        members = [np.flatnonzero(np.unpackbits(key)[:k]) for key in packed]
    return pattern.reshape(-1), members


# -- aggregates over columns ------------------------------------------------------------------


def _lift(v: Any) -> Col:
    """A row value as a column: a Col as is, a literal (set output) or None broadcast."""
    if isinstance(v, Col):
        return v
    if v is None:
        return Col("number", np.float64(0), np.False_, False)
    return Col("number", np.float64(v), np.True_, type(v) is int)


class ColumnFold:
    """`tables.Fold` over columns: None/unknown is a row where `known` is False."""

    @staticmethod
    def const(v: Any) -> Col:
        return _lift(v)

    @staticmethod
    def add(acc: Col, v: Any) -> Col:
        v = _lift(v)
        with np.errstate(all="ignore"):
            total = acc.values + v.values
        values = np.where(v.known, total, acc.values)
        ints = np.where(v.known, np.logical_and(acc.ints, v.ints), acc.ints)
        return Col("number", values, acc.known, ints)

    @staticmethod
    def pick(acc: Col, v: Any, better: Callable[[Any, Any], Any]) -> Col:
        v = _lift(v)
        take = v.known & (~acc.known | better(v.values, acc.values))
        return Col(
            "number",
            np.where(take, v.values, acc.values),
            acc.known | v.known,
            np.where(take, v.ints, acc.ints),
        )


def take(col: Col, index: np.ndarray) -> Col:
    """The rows `index` of a column (0-d parts, from literals, stay as they are)."""

    def part(a: Any) -> Any:
        return a if isinstance(a, bool) or np.ndim(a) == 0 else a[index]

    return Col(col.kind, part(col.values), part(col.known), part(col.ints), col.vocab)


# -- the step ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class PatternSelection:
    """`select_stage`'s answer for one pattern of matched rows, by position in the stage."""

    kept: np.ndarray  # (table rows of the stage,) bool: the row is in the trace
    passive: np.ndarray  # (table rows of the stage,) bool: ... without effect
    conflicts: frozenset[str]  # unique tables that matched several rows
    aggregated: tuple[tuple[Table, tuple[int, ...]], ...]  # trace order; rows as rule indices


@dataclass
class StageTables:
    """The hit-policy step of one stage over n rows."""

    pattern: np.ndarray  # (n,) index into `selections`
    selections: list[PatternSelection]
    conflict: dict[str, np.ndarray]  # unique table id → rows where it conflicts
    results: dict[str, Col]  # aggregate table id → its result
    rank: dict[str, np.ndarray]  # aggregate table id → its position among the stage's entries

    def aggregated(self, i: int) -> tuple[tuple[Table, tuple[int, ...]], ...]:
        return self.selections[self.pattern[i]].aggregated


class TableStep:
    """The tables of a ruleset, compiled once: which rules are table rows, stage by stage."""

    def __init__(self, ruleset: Ruleset) -> None:
        self.index = ruleset.table_index
        self.rules = ruleset.rules
        self.stages = ruleset.stages
        self.position = {r.id: i for i, r in enumerate(ruleset.rules)}
        self.tables = {t.id: t for t in ruleset.tables}
        rows = self.index.rows if self.index is not None else {}
        self.stage_rows = [
            [i for i, r in enumerate(self.rules) if r.stage == s and r.id in rows]
            for s in self.stages
        ]
        aggs = self.index.aggregates if self.index is not None else {}
        self.aggregates: list[tuple[Table, ...]] = [aggs.get(s, ()) for s in self.stages]

    def apply(
        self,
        si: int,
        hits: np.ndarray,
        passive: np.ndarray,
        numbers: dict[tuple[int, str], Col],
        n: int,
    ) -> StageTables | None:
        """Apply the hit policies of stage `si` in place on `hits` (traced) and `passive`."""
        rows = self.stage_rows[si]
        if not rows:
            return None
        pattern, members = distinct_patterns(hits[rows])
        counts = np.bincount(pattern, minlength=len(members))
        selections = []
        for p, bits in enumerate(members):
            matched = [self.rules[rows[j]] for j in bits]
            sel = select_stage(self.index, self.stages[si], matched)
            for table, conflicting in sel.conflicts:  # counted per application, as row by row
                record_conflict(table, conflicting, int(counts[p]))
            selections.append(self._selection(sel, rows))
        kept = np.array([s.kept for s in selections]).T  # (rows, patterns)
        matched = np.zeros_like(kept)
        for p, bits in enumerate(members):
            matched[bits, p] = True
        if not np.array_equal(kept, matched):  # some rows matched but do not fire
            hits[rows] = kept[:, pattern]
        if any(s.passive.any() for s in selections):
            passive[rows] = np.array([s.passive for s in selections]).T[:, pattern]
        conflict = {}
        for tid in set().union(*(s.conflicts for s in selections)):
            conflict[tid] = np.array([tid in s.conflicts for s in selections])[pattern]
        results, rank = {}, {}
        for table in self.aggregates[si]:
            results[table.id] = self._aggregate(table, selections, pattern, numbers, n)
            position = [
                next(k for k, (t, _) in enumerate(s.aggregated) if t.id == table.id)
                for s in selections
            ]
            rank[table.id] = np.array(position, np.intp)[pattern]
        return StageTables(pattern, selections, conflict, results, rank)

    def _selection(self, sel: Any, rows: list[int]) -> PatternSelection:
        traced = {r.id for r in sel.hits}
        ids = [self.rules[i].id for i in rows]
        return PatternSelection(
            kept=np.array([rid in traced for rid in ids], bool),
            passive=np.array([rid in sel.passive for rid in ids], bool),
            conflicts=frozenset(t.id for t, _ in sel.conflicts),
            aggregated=tuple(
                (self.tables[tid], tuple(self.position[r.id] for r in rs))
                for tid, rs in sel.aggregated.items()
            ),
        )

    def _aggregate(
        self,
        table: Table,
        selections: list[PatternSelection],
        pattern: np.ndarray,
        numbers: dict[tuple[int, str], Col],
        n: int,
    ) -> Col:
        """The table's result per row: `aggregate` once per distinct set of aggregated rows."""
        groups: dict[tuple[int, ...], list[int]] = {}
        for p, s in enumerate(selections):
            rows = next(r for t, r in s.aggregated if t.id == table.id)
            groups.setdefault(rows, []).append(p)
        group_of = np.empty(len(selections), np.intp)
        for g, ps in enumerate(groups.values()):
            group_of[ps] = g
        row_group = group_of[pattern]
        out = Col("number", np.zeros(n), np.zeros(n, bool), np.zeros(n, bool))
        for g, rows in enumerate(groups):
            index = np.flatnonzero(row_group == g)
            if not len(index):
                continue

            def number(rule: Rule, key: str, env: Any, index: np.ndarray = index) -> Col:
                return take(numbers[(self.position[rule.id], key)], index)

            values = [row_value(table, self.rules[r], {}, number) for r in rows]
            result = _lift(aggregate(table, values, ColumnFold))
            shape = (len(index),)
            out.values[index] = np.broadcast_to(result.values, shape)
            out.known[index] = np.broadcast_to(result.known, shape)
            out.ints[index] = np.broadcast_to(result.ints, shape)  # type: ignore[index]
        return out
