"""What an engine returns, outcome resolution, and the stage loop both engines share."""

from __future__ import annotations

import functools
import math
import operator
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

import msgspec

from decision_service.decision import FiredRule, Outcome, Reason
from decision_service.rules.ruleset import Expr, Rule, Ruleset
from decision_service.rules.tables import (
    Table,
    aggregate,
    apply_hit_policies,
    row_value,
)

if TYPE_CHECKING:
    from decision_service.rules.delta import Kept

_SEVERITY = {"approve": 0, "refer": 1, "decline": 2}


class Evaluation(msgspec.Struct, frozen=True):
    outcome: Outcome
    max_amount: float | None  # the lowest cap of all fired rules; None if no rule capped
    derived: dict[str, Any]  # fields set/computed by rules
    fired: list[FiredRule]  # firing order: stage asc, priority desc, file order
    reasons: list[Reason]  # the fired rules that decided the outcome, in firing order
    # the rule (or aggregate table) whose cap is `max_amount`: the first in trace order of equals
    capped_by: Reason | None = None
    # evaluated without a trace (`trace=False`): the ids of `fired` only, and `fired` is empty
    fired_ids: list[str] | None = None

    def ids(self) -> list[str]:
        """The ids of the trace entries in firing order (with or without the trace)."""
        return [f.id for f in self.fired] if self.fired_ids is None else self.fired_ids


class Engine(Protocol):
    name: str
    ruleset: Ruleset

    def evaluate(
        self,
        facts: Mapping[str, Any],
        *,
        trace: bool = True,
        normalised: bool = False,
        keep: Kept | None = None,
    ) -> Evaluation:
        """`facts` as given (normalised by the ruleset's schema here), or `normalised` already
        by it (pipeline.evaluate_rules: the champion's facts reused): never written to.
        `keep`: what its challengers may reuse is kept there (run_stages)."""
        ...

    def evaluate_after(self, kept: Kept) -> Evaluation | None:
        """As a challenger: the evaluation without a trace on the champion's facts, derived
        from the champion's where exact (rules/delta.py); None: evaluate in full."""
        ...

    def close(self) -> None: ...


def resolve_outcome(outcomes: Sequence[str], default: str) -> str:
    """decline > refer > approve; `default` when no rule gave an outcome (None or "")."""
    best = None
    for o in outcomes:
        if o and (best is None or _SEVERITY[o] > _SEVERITY[best]):
            best = o
    return best if best is not None else default


# The pieces below are the policy's one definition of what fired rules mean. The row engines
# (run_stages) and the vectorized batch path (decision_service.batch) both call them: the batch
# path once per distinct set of fired rules, or per row when it builds Decision objects.


def resolve(ruleset: Ruleset, fired_rules: Sequence[Rule]) -> tuple[str, list[Reason]]:
    """The outcome of a set of fired rules (in firing order) and the rule reasons that cite it."""
    outcome = resolve_outcome([r.outcome for r in fired_rules], ruleset.default_outcome)
    reasons: list[Reason] = []
    for r in fired_rules:  # a loop, not a comprehension: this runs on every decision
        if r.outcome == outcome:
            reasons.append(Reason(r.code, "rule", r.reason or ""))
    return outcome, reasons


def lowest_cap(caps: Sequence[Any], minimum: Callable[[Any, Any], Any] = min) -> Any:
    """The tightest amount cap among the known caps of the fired rules (None when none capped).

    `minimum` is `min` on one decision's values, an element-wise minimum on columns."""
    return functools.reduce(minimum, caps) if caps else None


# What a reduced approval cites when the capping rule gives no `reason` of its own.
CAP_TEXT = "The amount requested exceeds the maximum our lending policy allows for this application"
CapSource = Rule | Table  # a rule (or table row) with `max_amount`, or a table aggregating one


def cap_reason(source: CapSource) -> Reason:
    """The reason a cap gives when it makes an approval smaller than the amount requested."""
    if isinstance(source, Table):
        return Reason(f"TBL-{source.id}", "rule", CAP_TEXT)
    return Reason(source.code, "rule", source.reason or CAP_TEXT)


def tightest_cap(caps: Sequence[tuple[Any, CapSource]]) -> tuple[Any, Reason | None]:
    """The lowest of the known caps (in trace order) and the reason of the first that set it."""
    if not caps:
        return None, None
    if len(caps) == 1:  # the usual case: one capping rule
        return caps[0][0], cap_reason(caps[0][1])
    cap = lowest_cap([c for c, _ in caps])
    return cap, cap_reason(next(s for c, s in caps if c == cap))


def fired_entry(
    rule: Rule, values: dict[str, Any], computed: dict[str, Any] | None, cap: Any
) -> FiredRule:
    """One trace entry: the rule, the values its condition saw, what it computed and capped."""
    # `rule.then` is shared by every trace of this rule unless this one adds to it
    then = dict(rule.then) if rule.compute or rule.max_amount is not None else rule.then
    if rule.compute:
        then["computed"] = computed
    if rule.max_amount is not None:
        then["cap"] = cap
    return FiredRule(rule.id, rule.priority, rule.when.text, values, then)


def passive_entry(
    rule: Rule, values: dict[str, Any], aggregated: bool, value: Any = None
) -> FiredRule:
    """A table row traced without effect: a row of a unique conflict, or an aggregated row
    (with the value it contributes)."""
    then = {**rule.then, "applied": False}
    if aggregated:
        then["value"] = value
    return FiredRule(rule.id, rule.priority, rule.when.text, values, then)


def aggregate_entry(table: Table, rows: Sequence[Rule], result: Any) -> FiredRule:
    """An aggregate table's own trace entry: its rows and the result it sets or caps."""
    out = table.outputs[0]
    entry: dict[str, Any] = {"aggregate": table.aggregate, "rows": [r.id for r in rows]}
    if out.kind == "max_amount":
        entry["cap"] = result
    else:
        entry["set"] = {out.field: result}
    when = f"collect {table.aggregate} of {len(rows)} matched rows"
    return FiredRule(table.id, table.priority, when, {}, entry)


def _clean(x: Any) -> Any:
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


_NONE: Mapping[str, Any] = {}  # shared, never written: a stage without passive/aggregated rows

# A stage's matcher returns the rules of the stage whose condition is True on `env`, in firing
# order (an engine has one per stage, in stage order).
Matcher = Callable[[Mapping[str, Any]], list[Rule]]
# A rule's effect (generated: compiled.effects_source): adds its fields to a stage's new ones
# on `env`, returns the values of its `number_exprs`.
EffectFn = Callable[[Mapping[str, Any], dict[str, Any]], tuple[Any, ...]]
_ID = operator.attrgetter("id")
RESOLVED_MAX = 4096  # distinct sets of fired rules whose resolution an engine keeps


def number_exprs(rule: Rule) -> list[tuple[str, Expr]]:
    """A rule's value expressions: its `compute` fields in order, then "max_amount"."""
    exprs = list(rule.compute.items())
    if rule.max_amount is not None:
        exprs.append(("max_amount", rule.max_amount))
    return exprs


class Effects:
    """What an engine's rules do when they fire: rule id → its `EffectFn` (none for a rule that
    computes, sets and caps nothing); and the outcome resolution of each distinct set of fired
    rules seen (pure in the set: at most RESOLVED_MAX kept). Called as a `tables.NumberEval`: one
    value of a rule (an aggregated table row)."""

    __slots__ = ("_positions", "_resolved", "functions", "ruleset")

    def __init__(self, ruleset: Ruleset, functions: Mapping[str, EffectFn]) -> None:
        self.ruleset = ruleset
        self.functions = functions
        self._positions = {
            r.id: {key: k for k, (key, _) in enumerate(number_exprs(r))} for r in ruleset.rules
        }
        self._resolved: dict[tuple[str, ...], tuple[str, list[Reason]]] = {}

    def __call__(self, rule: Rule, key: str, env: dict[str, Any]) -> Any:
        return self.functions[rule.id](env, {})[self._positions[rule.id][key]]

    def resolve(self, fired_rules: list[Rule]) -> tuple[str, list[Reason]]:
        """`resolve` on this engine's ruleset, once per distinct set of fired rules."""
        key = tuple(map(_ID, fired_rules))
        got = self._resolved.get(key)
        if got is None:
            got = self._keep(key, fired_rules)
        return got[0], list(got[1])  # the caller's own list: the kept one is never handed out

    def resolve_ids(self, ids: list[str], rules: Mapping[str, Rule]) -> tuple[str, list[Reason]]:
        """The same, from the fired rules' ids (`rules`: this ruleset's rules by id)."""
        key = tuple(ids)
        got = self._resolved.get(key)
        if got is None:
            got = self._keep(key, [rules[rid] for rid in ids])
        return got[0], list(got[1])

    def _keep(self, key: tuple[str, ...], fired_rules: list[Rule]) -> tuple[str, list[Reason]]:
        got = resolve(self.ruleset, fired_rules)
        if len(self._resolved) < RESOLVED_MAX:
            self._resolved[key] = got
        return got


def run_stages(
    ruleset: Ruleset,
    facts: Mapping[str, Any],
    matchers: Sequence[Matcher],
    effects: Effects,
    *,
    trace: bool = True,
    keep: Kept | None = None,
) -> Evaluation:
    """Evaluate stage by stage: later stages see the fields derived by earlier ones.

    Within a stage, when two fired rules derive the same field, the first in firing order
    (highest priority) wins (each rule's `EffectFn` adds only fields not yet in `new`; the
    hit-policy step decides first which table rows take effect). Expressions in `compute` /
    `max_amount` see the facts as they were at the start of the stage. `facts` (normalised)
    is never written to: a stage after one that derived fields sees a new dict (so that the
    facts a champion's rules saw can be a challenger's, pipeline.RuleFacts).

    `trace=False` (a challenger: its row keeps rule ids) builds no trace entries, only their
    ids (`Evaluation.fired_ids`): everything else is the same evaluation.

    `keep` (a champion with challengers): the facts each stage saw and whether a hit-policy
    step changed what fired are kept there, with the result (rules/delta.py).
    """
    env = facts
    derived: dict[str, Any] = {}
    fired: list[Any] = []  # FiredRule entries, or their ids without a trace
    fired_rules: list[Rule] = []
    caps: list[tuple[Any, CapSource]] = []  # in trace order
    tables = ruleset.table_index
    functions = effects.functions
    last = len(matchers) - 1
    for si, (stage, match) in enumerate(zip(ruleset.stages, matchers, strict=True)):
        if keep is not None:
            keep.envs.append(env)
        hits = match(env)
        new: dict[str, Any] = {}
        passive: Mapping[str, str] = _NONE
        aggregated: Mapping[str, list[Rule]] = _NONE
        if tables is not None:  # decision tables: the hit-policy step (rules/tables.py)
            sel = apply_hit_policies(tables, stage, hits)
            if sel is not None:
                hits, passive, aggregated = sel.hits, sel.passive, sel.aggregated
                if keep is not None:
                    keep.plain = False
        for rule in hits:
            rid = rule.id
            if rid in passive:
                # traced without effect: a row of a unique conflict, or an aggregated row
                if not trace:
                    fired.append(rid)
                    continue
                values = {f: env.get(f) for f in rule.reads}
                if passive[rid] == "aggregated":
                    t = tables.rows[rid][0]  # type: ignore[union-attr]
                    value = row_value(t, rule, env, effects)
                    fired.append(passive_entry(rule, values, True, value))
                else:
                    fired.append(passive_entry(rule, values, False))
                continue
            computed: dict[str, Any] | None = None
            cap = None
            effect = functions.get(rid)
            if effect is not None:
                vals = effect(env, new)  # the computes' values, then the cap's
                if rule.max_amount is not None:
                    cap = vals[-1]
                    if cap is not None:
                        caps.append((cap, rule))
                if trace and rule.compute:
                    computed = dict(zip(rule.compute, vals, strict=False))
            if trace:
                fired.append(fired_entry(rule, {f: env.get(f) for f in rule.reads}, computed, cap))
            else:
                fired.append(rid)
            fired_rules.append(rule)
        if aggregated:
            for tid, rows in aggregated.items():
                table = next(t for t in ruleset.tables if t.id == tid)
                result = aggregate(table, [row_value(table, r, env, effects) for r in rows])
                out = table.outputs[0]
                if out.kind == "max_amount":
                    if result is not None:
                        caps.append((result, table))
                elif result is not None and out.field not in new:
                    new[out.field] = result  # type: ignore[index]
                fired.append(aggregate_entry(table, rows, result) if trace else table.id)
        if new:
            derived.update(new)
            if si < last:  # no stage after the last: nothing reads env
                env = {**env, **new}
    outcome, reasons = effects.resolve(fired_rules)
    max_amount, capped_by = tightest_cap(caps)
    result = Evaluation(
        outcome=outcome,  # type: ignore[arg-type]
        max_amount=max_amount,
        derived=derived,
        fired=fired if trace else [],
        reasons=reasons,
        capped_by=capped_by,
        fired_ids=None if trace else fired,
    )
    if keep is not None:
        keep.result, keep.ruleset = result, ruleset
    return result
