"""The ruleset over columns: the same validated syntax tree, compiled to NumPy operations.

Why NumPy rather than Polars: the pipeline's other halves (LightGBM's matrix, the SHAP tables)
are NumPy already, NumPy is a dependency anyway, and three-valued logic needs explicit control
that Polars' null semantics would hide: a value is (values, known) and a condition is the pair
of masks (definitely true, definitely false) — exactly the compiled engine's T/F construction:
T(a and b) = T(a) & T(b), F(a and b) = F(a) | F(b), T(not a) = F(a); a comparison is true or
false only where both sides are known; arithmetic on a missing value, division by zero and
non-finite results are unknown. Python's int/float distinction is tracked per row (`ints`) so
a trace shows the very values the row path shows.

Stages run as in `run_stages`: a stage sees the facts plus the fields derived by earlier
stages; within a stage the first fired rule (firing order) with a known value derives a field.
What the fired rules *mean* (outcome, rule reasons, caps, trace entries) is not decided here:
`ColumnEvaluation` calls the shared functions of rules/evaluation.py, once per distinct set of
fired outcome rules, or per row when Decision objects are built.

Decision tables: their rows are rules, matched like any rule; the hit-policy step (rules/
tables.py, the row path's own) runs after matching and before derivation, once per distinct
pattern of matched rows (batch/tables.py). Its answer here: `hits` (in the trace), `passive`
(traced without effect), per stage the unique tables' conflict entries and the aggregates.

Extending the language: a new node is one entry in `_VALUE` or `_TRUTH` of expressions.py.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from decision_service.batch.columns import Col
from decision_service.batch.expressions import Env, truth, value
from decision_service.batch.tables import StageTables, TableStep, distinct_patterns
from decision_service.decision import OUTCOMES, FiredRule, Reason
from decision_service.rules.evaluation import (
    CapSource,
    Evaluation,
    aggregate_entry,
    fired_entry,
    lowest_cap,
    passive_entry,
    resolve,
    tightest_cap,
)
from decision_service.rules.ruleset import Rule, Ruleset
from decision_service.rules.tables import row_value

OUTCOME_CODE = {o: i for i, o in enumerate(OUTCOMES)}


# -- the ruleset -------------------------------------------------------------------------------


@dataclass
class ColumnEvaluation:
    """The rules' results over n rows; `evaluation(i)` is row i as the row engines give it."""

    compiled: ColumnRules
    n: int
    hits: np.ndarray  # (rules, n) bool: in the trace; rules in firing order
    passive: np.ndarray  # (rules, n) bool: in the trace without effect (table rows)
    env: Env  # facts + derived fields
    numbers: dict[tuple[int, str], Col]  # (rule index, compute field | "max_amount")
    tables: list[StageTables | None]  # per stage: the hit-policy step's result
    max_amount: np.ndarray  # float64, NaN = no cap
    cap_source: np.ndarray  # index into compiled.cap_sources of the cap that set it; -1 = none
    pattern: np.ndarray  # row -> index into `resolutions`
    resolutions: list[tuple[str, list[Reason]]]  # per distinct set of fired outcome rules
    outcome: np.ndarray = field(init=False)  # int8 codes into OUTCOMES

    def __post_init__(self) -> None:
        codes = np.array([OUTCOME_CODE[o] for o, _ in self.resolutions], dtype=np.int8)
        self.outcome = codes[self.pattern] if len(codes) else np.zeros(self.n, np.int8)

    @property
    def ruleset(self) -> Ruleset:
        return self.compiled.ruleset

    def _number(self, i: int) -> Any:
        position = self.compiled.position
        return lambda rule, key, env: self.numbers[(position[rule.id], key)].py(i)

    def _entry(self, ri: int, i: int) -> FiredRule:
        rule = self.ruleset.rules[ri]
        values = {f: self.env[f].py(i) if f in self.env else None for f in rule.reads}
        if self.passive[ri, i]:
            table = self.ruleset.table_index.rows[rule.id][0]
            if table.aggregate:
                value = row_value(table, rule, {}, self._number(i))
                return passive_entry(rule, values, True, value)
            return passive_entry(rule, values, False)
        computed = None
        if rule.compute:
            computed = {f: self.numbers[(ri, f)].py(i) for f in rule.compute}
        cap = self.numbers[(ri, "max_amount")].py(i) if rule.max_amount is not None else None
        return fired_entry(rule, values, computed, cap)

    def fired(self, i: int) -> list[FiredRule]:
        out = []
        rules, unique_rows = self.ruleset.rules, self.compiled.unique_rows
        for si, (lo, hi) in enumerate(self.compiled.stage_range):
            st = self.tables[si]
            emitted: set[str] = set()
            for ri in lo + np.flatnonzero(self.hits[lo:hi, i]):
                table = unique_rows.get(int(ri))
                if table is not None and table.id not in emitted and st is not None:
                    conflict = st.conflict.get(table.id)
                    if conflict is not None and conflict[i]:  # before its first traced row
                        emitted.add(table.id)
                        out.append(fired_entry(table.conflict, {}, None, None))
                out.append(self._entry(int(ri), i))
            if st is not None:
                for table, rows in st.aggregated(i):
                    result = st.results[table.id].py(i)
                    out.append(aggregate_entry(table, [rules[r] for r in rows], result))
        return out

    def evaluation(self, i: int) -> Evaluation:
        outcome, reasons = self.resolutions[self.pattern[i]]
        cap, capped_by = (None, None) if self.cap_source[i] < 0 else self._tightest_cap(i)
        return Evaluation(
            outcome=outcome,  # type: ignore[arg-type]
            max_amount=cap,
            derived={name: self.env[name].py(i) for name in self._derived_order(i)},
            fired=self.fired(i),
            reasons=reasons,
            capped_by=capped_by,
        )

    def _active(self, i: int, lo: int, hi: int) -> np.ndarray:
        return lo + np.flatnonzero(self.hits[lo:hi, i] & ~self.passive[lo:hi, i])

    def _derived_order(self, i: int) -> dict[str, None]:
        """Row i's derived fields in the row path's order: first writer in firing order, stage
        by stage, then the aggregates (in their trace order)."""
        rules, order = self.ruleset.rules, {}
        for si, (lo, hi) in enumerate(self.compiled.stage_range):
            for ri in self._active(i, lo, hi):
                rule = rules[ri]
                for f in rule.compute:
                    if f not in order and self.numbers[(int(ri), f)].known[i]:
                        order[f] = None
                for f in rule.set:
                    order.setdefault(f)
            st = self.tables[si]
            if st is not None:
                for table, _ in st.aggregated(i):
                    out = table.outputs[0]
                    if out.kind != "max_amount" and st.results[table.id].known[i]:
                        order.setdefault(out.field)  # type: ignore[arg-type]
        return order

    def _tightest_cap(self, i: int) -> tuple[Any, Reason | None]:
        """Row i's cap as the row path holds it (`min` keeps the first of equal int/float), and
        the reason of the rule that set it (the shared `tightest_cap`, on the trace order)."""
        caps: list[tuple[Any, CapSource]] = []
        rules = self.ruleset.rules
        for si, (lo, hi) in enumerate(self.compiled.stage_range):
            for ri in self._active(i, lo, hi):
                if rules[ri].max_amount is not None:
                    v = self.numbers[(int(ri), "max_amount")].py(i)
                    if v is not None:
                        caps.append((v, rules[ri]))
            st = self.tables[si]
            if st is not None:
                for table, _ in st.aggregated(i):
                    if table.outputs[0].kind == "max_amount":
                        v = st.results[table.id].py(i)
                        if v is not None:
                            caps.append((v, table))
        return tightest_cap(caps)

    def derived_value(self, name: str) -> Col:
        return self.env[name]

    def trace_ids(self) -> tuple[list[str], np.ndarray, np.ndarray]:
        """Every row's trace ids as columns: (names, (n, slots) index into names, (n, slots)
        present); row-major over `present` gives each row's `fired` ids in order."""
        names: list[str] = []
        index: list[np.ndarray] = []
        present: list[np.ndarray] = []
        n, rules = self.n, self.ruleset.rules
        for si, (lo, hi) in enumerate(self.compiled.stage_range):
            st = self.tables[si]
            for ri in range(lo, hi):
                table = self.compiled.conflict_before.get(ri)
                if table is not None and st is not None:
                    names.append(table.id)
                    index.append(np.full(n, len(names) - 1))
                    present.append(st.conflict.get(table.id, np.zeros(n, bool)))
                names.append(rules[ri].id)
                index.append(np.full(n, len(names) - 1))
                present.append(self.hits[ri])
            if st is not None and st.rank:
                base = len(names)
                tables = list(st.rank)
                names += tables
                slot = np.empty((n, len(tables)), np.intp)  # position → table, per row
                for j, tid in enumerate(tables):
                    slot[np.arange(n), st.rank[tid]] = base + j
                index += list(slot.T)
                present += [np.ones(n, bool)] * len(tables)
        if not names:
            return [], np.zeros((n, 0), np.intp), np.zeros((n, 0), bool)
        return names, np.stack(index, axis=1), np.stack(present, axis=1)


class ColumnRules:
    """A ruleset compiled to column operations (built once, evaluated per chunk)."""

    def __init__(self, ruleset: Ruleset) -> None:
        self.ruleset = ruleset
        rules = ruleset.rules
        self.position = {r.id: i for i, r in enumerate(rules)}
        self.conditions = [truth(r.when.node) for r in rules]
        self.numbers = {
            (i, key): value(e.node)
            for i, r in enumerate(rules)
            for key, e in [
                *r.compute.items(),
                *([("max_amount", r.max_amount)] * bool(r.max_amount)),
            ]
        }
        self.stage_rules = [
            [i for i, r in enumerate(rules) if r.stage == s] for s in ruleset.stages
        ]
        # rules are in firing order, so a stage is a contiguous range
        self.stage_range = [(m[0], m[-1] + 1) if m else (0, 0) for m in self.stage_rules]
        self.tables = TableStep(ruleset)
        # A unique table's conflict entry goes just before its first traced row; its rows are
        # contiguous in firing order, so the slot before its first row orders it the same.
        unique = [t for t in ruleset.tables if t.hit == "unique"]
        self.conflict_before = {self.position[t.rows[0].id]: t for t in unique}
        self.unique_rows = {self.position[r.id]: t for t in unique for r in t.rows}
        # outcome slots in firing order: (rule, rule index | None for a conflict entry)
        self.outcome_slots: list[tuple[Rule, int | None]] = []
        for i, r in enumerate(rules):
            if i in self.conflict_before:
                self.outcome_slots.append((self.conflict_before[i].conflict, None))
            if r.outcome:
                self.outcome_slots.append((r, i))
        self.derived_types = ruleset.derived
        # what can cap an amount, in the order `_caps` stacks them: per stage, its rules with
        # `max_amount` (firing order), then its tables aggregating a `max_amount`
        self.stage_caps = [
            [t for t in self.tables.aggregates[si] if t.outputs[0].kind == "max_amount"]
            for si in range(len(ruleset.stages))
        ]
        self.cap_sources: list[CapSource] = []
        for si, (lo, hi) in enumerate(self.stage_range):
            self.cap_sources += [r for r in rules[lo:hi] if r.max_amount is not None]
            self.cap_sources += self.stage_caps[si]

    def evaluate(self, facts: Env, n: int) -> ColumnEvaluation:
        rules = self.ruleset.rules
        env: Env = dict(facts)
        hits = np.zeros((len(rules), n), dtype=bool)
        passive = np.zeros((len(rules), n), dtype=bool)
        numbers: dict[tuple[int, str], Col] = {}
        tables: list[StageTables | None] = []
        for si, members in enumerate(self.stage_rules):
            for i in members:
                hits[i] = self.conditions[i](env, False)
            for i in members:
                for key in [*rules[i].compute, *(["max_amount"] * bool(rules[i].max_amount))]:
                    numbers[(i, key)] = _rows(self.numbers[(i, key)](env), n)
            st = self.tables.apply(si, hits, passive, numbers, n)
            tables.append(st)
            active = hits[members] & ~passive[members] if st is not None else hits[members]
            env.update(self._derive(members, active, numbers, st, n))
        active = hits & ~passive
        caps = self._caps(active, numbers, tables, n)  # (max_amount, cap_source)
        resolved = self._resolve(active, tables, n)  # (pattern, resolutions)
        return ColumnEvaluation(self, n, hits, passive, env, numbers, tables, *caps, *resolved)

    def _caps(
        self,
        active: np.ndarray,
        numbers: dict[tuple[int, str], Col],
        tables: list[StageTables | None],
        n: int,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Per row the tightest cap (NaN: none) and which of `cap_sources` set it: the first in
        trace order among equal caps, as `tightest_cap` picks it on a row."""
        caps: list[np.ndarray] = []
        order: list[Any] = []  # per cap, its trace position (an aggregate's varies per row)
        slots = len(self.ruleset.tables) + 2
        for si, (lo, hi) in enumerate(self.stage_range):
            for i in range(lo, hi):
                if self.ruleset.rules[i].max_amount is not None:
                    col = numbers[(i, "max_amount")]
                    caps.append(np.where(active[i] & col.known, col.values, np.nan))
                    order.append(i * slots)
            st = tables[si]
            for table in self.stage_caps[si]:
                col = st.results[table.id]  # type: ignore[union-attr]
                caps.append(np.where(col.known, col.values, np.nan))
                order.append((hi - 1) * slots + 1 + st.rank[table.id])  # type: ignore[union-attr]
        if not caps:
            return np.full(n, np.nan), np.full(n, -1, np.int64)
        values = np.stack(caps)
        cap = lowest_cap(list(values), np.fmin)
        positions = np.stack([np.broadcast_to(p, n) for p in order])
        first = np.where(values == cap, positions, np.iinfo(np.int64).max).argmin(axis=0)
        return cap, np.where(np.isnan(cap), -1, first)

    def _derive(
        self,
        members: list[int],
        active: np.ndarray,
        numbers: dict[tuple[int, str], Col],
        st: StageTables | None,
        n: int,
    ) -> Env:
        """The fields this stage derives: the first fired rule (firing order) with a value,
        then the aggregates (in their trace order, which may differ per row). `active`: the
        members' rows of hits that take effect."""
        out: Env = {}
        rules = self.ruleset.rules
        writers: dict[str, list[str]] = {}  # field → aggregate tables deriving it
        for tid in st.results if st is not None else ():
            o = self.tables.tables[tid].outputs[0]
            if o.kind != "max_amount":
                writers.setdefault(o.field or "", []).append(tid)
        names = {f for i in members for f in (*rules[i].compute, *rules[i].set)} | set(writers)
        for name in names:
            ftype = self.derived_types[name]
            if ftype.kind == "category":
                col = Col(
                    "category", np.full(n, -1, np.int16), np.zeros(n, bool), False, ftype.values
                )
            elif ftype.kind == "boolean":
                col = Col("boolean", np.zeros(n, bool), np.zeros(n, bool))
            else:
                col = Col("number", np.zeros(n), np.zeros(n, bool), np.zeros(n, bool))
            for m, i in enumerate(members):
                rule = rules[i]
                if name in rule.compute:
                    c = numbers[(i, name)]
                    take = active[m] & c.known & ~col.known
                    col.values = np.where(take, c.values, col.values)
                    col.ints = np.where(take, c.ints, col.ints)
                elif name in rule.set:
                    lit = rule.set[name]
                    take = active[m] & ~col.known
                    if ftype.kind == "category":
                        col.values = np.where(take, ftype.values.index(lit), col.values).astype(
                            np.int16
                        )
                    else:
                        col.values = np.where(take, lit, col.values)
                        if ftype.kind == "number":
                            col.ints = np.where(take, type(lit) is int, col.ints)
                else:
                    continue
                col.known = col.known | take
            for position in range(len(st.rank) if st is not None and name in writers else 0):
                for tid in writers[name]:
                    c = st.results[tid]  # type: ignore[union-attr]
                    take = (st.rank[tid] == position) & c.known & ~col.known  # type: ignore[union-attr]
                    col.values = np.where(take, c.values, col.values)
                    col.ints = np.where(take, c.ints, col.ints)
                    col.known = col.known | take
            out[name] = col
        return out

    def _resolve(
        self, active: np.ndarray, tables: list[StageTables | None], n: int
    ) -> tuple[np.ndarray, list[tuple[str, list[Reason]]]]:
        """Outcome and rule reasons per distinct set of fired outcome rules (shared `resolve`);
        a unique table's conflict entry is one of them."""
        conflicts: dict[str, np.ndarray] = {}
        for st in tables:
            if st is not None:
                conflicts.update(st.conflict)
        none = np.zeros(n, bool)
        rows = [
            active[i] if i is not None else conflicts.get(rule.id, none)
            for rule, i in self.outcome_slots
        ]
        matrix = np.stack(rows) if rows else np.zeros((0, n), bool)
        pattern, members = distinct_patterns(matrix)
        resolutions = [
            resolve(self.ruleset, [self.outcome_slots[j][0] for j in bits]) for bits in members
        ]
        return pattern, resolutions


def _rows(col: Col, n: int) -> Col:
    """A value over n rows (an expression of literals only gives 0-d arrays)."""
    ints_ok = isinstance(col.ints, bool) or np.ndim(col.ints) == 1
    if np.ndim(col.values) == 1 and np.ndim(col.known) == 1 and ints_ok:
        return col
    ints = col.ints if isinstance(col.ints, bool) else np.broadcast_to(col.ints, n)
    return Col(
        col.kind, np.broadcast_to(col.values, n), np.broadcast_to(col.known, n), ints, col.vocab
    )
