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

Extending the language: a new node is one entry in `_VALUE` or `_TRUTH` of expressions.py.
A decision table's hit policy is a step over the stage's hit matrix (`ColumnRules.hit_steps`),
applied after matching and before derivation, e.g. `first`: keep only the first hit row.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from decision_service.batch.columns import Col
from decision_service.batch.expressions import Env, truth, value
from decision_service.decision import FiredRule, Reason
from decision_service.rules.evaluation import Evaluation, fired_entry, lowest_cap, resolve
from decision_service.rules.language import Ruleset

OUTCOMES = ("approve", "refer", "decline")
OUTCOME_CODE = {o: i for i, o in enumerate(OUTCOMES)}


# -- the ruleset -------------------------------------------------------------------------------


@dataclass
class ColumnEvaluation:
    """The rules' results over n rows; `evaluation(i)` is row i as the row engines give it."""

    ruleset: Ruleset
    n: int
    hits: np.ndarray  # (rules, n) bool, rules in firing order
    env: Env  # facts + derived fields
    numbers: dict[tuple[int, str], Col]  # (rule index, compute field | "max_amount")
    max_amount: np.ndarray  # float64, NaN = no cap
    pattern: np.ndarray  # row -> index into `resolutions`
    resolutions: list[tuple[str, list[Reason]]]  # per distinct set of fired outcome rules
    outcome: np.ndarray = field(init=False)  # int8 codes into OUTCOMES

    def __post_init__(self) -> None:
        codes = np.array([OUTCOME_CODE[o] for o, _ in self.resolutions], dtype=np.int8)
        self.outcome = codes[self.pattern] if len(codes) else np.zeros(self.n, np.int8)

    def fired(self, i: int) -> list[FiredRule]:
        out = []
        for ri in np.flatnonzero(self.hits[:, i]):
            rule = self.ruleset.rules[ri]
            values = {f: self.env[f].py(i) if f in self.env else None for f in rule.reads}
            computed = None
            if rule.compute:
                computed = {f: self.numbers[(ri, f)].py(i) for f in rule.compute}
            cap = self.numbers[(ri, "max_amount")].py(i) if rule.max_amount is not None else None
            out.append(fired_entry(rule, values, computed, cap))
        return out

    def evaluation(self, i: int) -> Evaluation:
        outcome, reasons = self.resolutions[self.pattern[i]]
        derived = {}
        for name in self.ruleset.derived:
            v = self.env[name].py(i)
            if v is not None:
                derived[name] = v
        cap = self.max_amount[i]
        return Evaluation(
            outcome=outcome,  # type: ignore[arg-type]
            max_amount=None if cap != cap else self._lowest_cap(i),
            derived=derived,
            fired=self.fired(i),
            reasons=reasons,
        )

    def _lowest_cap(self, i: int) -> Any:
        """Row i's cap as the row path holds it (`min` keeps the first of equal int/float)."""
        caps = []
        for ri, rule in enumerate(self.ruleset.rules):
            if rule.max_amount is not None and self.hits[ri, i]:
                v = self.numbers[(ri, "max_amount")].py(i)
                if v is not None:
                    caps.append(v)
        return lowest_cap(caps)

    def derived_value(self, name: str) -> Col:
        return self.env[name]


class ColumnRules:
    """A ruleset compiled to column operations (built once, evaluated per chunk)."""

    def __init__(self, ruleset: Ruleset) -> None:
        self.ruleset = ruleset
        rules = ruleset.rules
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
        # Decision-table hit policies go here: (stage index, step over that stage's hits).
        self.hit_steps: list[tuple[int, Callable[[np.ndarray], np.ndarray]]] = []
        self.outcome_rules = [i for i, r in enumerate(rules) if r.outcome]
        self.cap_rules = [i for i, r in enumerate(rules) if r.max_amount is not None]
        self.derived_types = ruleset.derived

    def evaluate(self, facts: Env, n: int) -> ColumnEvaluation:
        rules = self.ruleset.rules
        env: Env = dict(facts)
        hits = np.zeros((len(rules), n), dtype=bool)
        numbers: dict[tuple[int, str], Col] = {}
        for si, members in enumerate(self.stage_rules):
            for i in members:
                hits[i] = self.conditions[i](env, False)
            for step_stage, step in self.hit_steps:
                if step_stage == si:
                    hits[members] = step(hits[members])
            for i in members:
                for key in [*rules[i].compute, *(["max_amount"] * bool(rules[i].max_amount))]:
                    numbers[(i, key)] = self.numbers[(i, key)](env)
            env.update(self._derive(members, hits, numbers, n))
        caps = [
            np.where(
                hits[i] & numbers[(i, "max_amount")].known,
                numbers[(i, "max_amount")].values,
                np.nan,
            )
            for i in self.cap_rules
        ]
        max_amount = lowest_cap(caps, np.fmin)
        if max_amount is None:
            max_amount = np.full(n, np.nan)
        pattern, resolutions = self._resolve(hits, n)

        return ColumnEvaluation(
            self.ruleset, n, hits, env, numbers, max_amount, pattern, resolutions
        )

    def _derive(
        self, members: list[int], hits: np.ndarray, numbers: dict[tuple[int, str], Col], n: int
    ) -> Env:
        """The fields this stage derives: the first fired rule (firing order) with a value."""
        out: Env = {}
        rules = self.ruleset.rules
        names = {f for i in members for f in (*rules[i].compute, *rules[i].set)}
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
            for i in members:
                rule = rules[i]
                if name in rule.compute:
                    c = numbers[(i, name)]
                    take = hits[i] & c.known & ~col.known
                    col.values = np.where(take, c.values, col.values)
                    col.ints = np.where(take, c.ints, col.ints)
                elif name in rule.set:
                    lit = rule.set[name]
                    take = hits[i] & ~col.known
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
            out[name] = col
        return out

    def _resolve(
        self, hits: np.ndarray, n: int
    ) -> tuple[np.ndarray, list[tuple[str, list[Reason]]]]:
        """Outcome and rule reasons per distinct set of fired outcome rules (shared `resolve`)."""
        rules = self.ruleset.rules
        sub = hits[self.outcome_rules].T  # (n, outcome rules)
        if sub.shape[1] == 0 or n == 0:
            return np.zeros(n, np.intp), [resolve(self.ruleset, [])]
        if sub.shape[1] <= 62:  # one integer per row: a fast 1-D unique
            weights = np.left_shift(np.int64(1), np.arange(sub.shape[1], dtype=np.int64))
            keys, pattern = np.unique(sub @ weights, return_inverse=True)
            members = [np.flatnonzero((int(k) >> np.arange(sub.shape[1])) & 1) for k in keys]
        else:
            packed, pattern = np.unique(np.packbits(sub, axis=1), axis=0, return_inverse=True)
            members = [np.flatnonzero(np.unpackbits(k)[: sub.shape[1]]) for k in packed]
        resolutions = []
        for bits in members:
            fired = [rules[self.outcome_rules[j]] for j in bits]
            resolutions.append(resolve(self.ruleset, fired))
        return pattern.reshape(-1), resolutions
