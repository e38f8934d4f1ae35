"""A challenger that differs from the champion only in outcome rules: evaluated by difference.

The usual challenger moves a cut-off: a knock-out at pd > 0.25 instead of 0.30, a referral
rule added or dropped. When every rule in which the two rulesets differ only gives an outcome
(no `compute`, `set` or `max_amount`, not a table row), and the rules they share are the same
and in the same order, the challenger derives exactly the fields the champion derived, stage by
stage: a stage's derived fields come from shared rules and tables only, on the same facts (by
induction over the stages). So on the decision the champion has just evaluated:

- every shared rule fires for the challenger iff it fired for the champion;
- the challenger's own (changed or added) rules are matched on the champion's facts of their
  stage, by the same generated code as the compiled engine's (compiled.compile_matcher);
- the derived fields and the amount cap (and the rule that set it) are the champion's;
- the outcome and its reasons are resolved from the challenger's fired rules by the
  challenger's own `Effects.resolve` (evaluation.resolve): the one outcome resolution.

`Difference.evaluate` returns exactly what `run_stages` returns without a trace (tested on
every example application and on generated facts). It declines (None: evaluate in full) when
the champion's evaluation went through a hit-policy step (a table matched several rows, or
aggregated), where trace entries are not rules. Replay never uses it: it re-evaluates each
challenger in full and compares with the row.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from decision_service.rules.evaluation import Effects, Evaluation, Matcher
from decision_service.rules.ruleset import Rule, Ruleset


class Kept:
    """What the champion's evaluation leaves for its challengers (run_stages `keep`): the
    facts each stage saw, and whether any hit-policy step changed what fired."""

    __slots__ = ("envs", "plain", "result", "ruleset")

    def __init__(self) -> None:
        self.envs: list[Mapping[str, Any]] = []  # per stage: the facts it matched on
        self.plain = True  # every trace entry is a rule that took effect
        self.result: Evaluation | None = None
        self.ruleset: Ruleset | None = None


def _key(r: Rule) -> tuple[Any, ...]:
    """Everything about a rule that can change whether it fires and what it does (not its
    line): two rules with the same key behave the same on the same facts."""
    exprs = [(k, e.text, e.node) for k, e in r.compute.items()]
    cap = None if r.max_amount is None else (r.max_amount.text, r.max_amount.node)
    return (
        r.id, r.priority, r.stage, r.when.text, r.when.node, r.outcome, r.reason, r.code,
        repr(r.set), exprs, cap, repr(r.then), r.reads,
    )  # fmt: skip


def _table_key(t: Any) -> tuple[Any, ...]:
    return (
        t.id, t.stage, t.priority, t.hit, t.aggregate, t.outputs, t.rank,
        [_key(r) for r in t.rows], _key(t.conflict),
    )  # fmt: skip


def _outcome_only(r: Rule) -> bool:
    return not r.compute and not r.set and r.max_amount is None


class Difference:
    """A challenger against one champion: its shared rules, and a matcher per stage for the
    rules of its own (`plan` decides whether the difference is exact)."""

    __slots__ = ("dropped", "matchers", "order", "rules", "shared")

    def __init__(
        self,
        champion: Ruleset,
        shared: frozenset[str],
        rules: dict[str, Rule],
        matchers: list[Matcher | None],
    ) -> None:
        self.shared = shared  # ids of the rules both have, the same
        # the champion's rules the challenger changed or does not have
        self.dropped = frozenset(r.id for r in champion.rules if r.id not in shared)
        self.rules = rules  # the challenger's rules by id
        self.order = {rid: k for k, rid in enumerate(rules)}  # firing order
        self.matchers = matchers  # per stage: the challenger's own rules there (None: none)

    def evaluate(self, kept: Kept, effects: Effects) -> Evaluation | None:
        """The challenger's evaluation (without a trace) from the champion's (`kept` by the
        champion this was planned against: CompiledEngine.evaluate_after); None when it must
        be evaluated in full."""
        result = kept.result
        if result is None or not kept.plain:
            return None
        fired = result.ids()
        if not self.dropped.isdisjoint(fired):
            fired = [rid for rid in fired if rid not in self.dropped]
        own: list[str] = []
        for match, env in zip(self.matchers, kept.envs, strict=True):
            if match is not None:
                own += [r.id for r in match(env)]
        if own:  # into the challenger's firing order (shared rules keep theirs)
            fired = sorted(fired + own, key=self.order.__getitem__)
        outcome, reasons = effects.resolve_ids(fired, self.rules)
        return Evaluation(
            outcome=outcome,  # type: ignore[arg-type]
            max_amount=result.max_amount,
            derived=dict(result.derived),
            fired=[],
            reasons=reasons,
            capped_by=result.capped_by,
            fired_ids=fired,
        )


def plan(champion: Ruleset, challenger: Ruleset, compile_matcher: Any) -> Difference | None:
    """The difference of `challenger` from `champion`, or None when it is not exact: the
    rulesets differ in a rule that computes, sets or caps, in a table, in their stages, or in
    the order of the rules they share. `compile_matcher(ruleset, rules)` builds a stage's
    matcher for some of its rules (the compiled engine's code generator)."""
    if champion.stages != challenger.stages or champion.schema is not challenger.schema:
        return None
    if [_table_key(t) for t in champion.tables] != [_table_key(t) for t in challenger.tables]:
        return None
    theirs = {r.id: _key(r) for r in champion.rules}
    shared = frozenset(r.id for r in challenger.rules if theirs.get(r.id) == _key(r))
    differing = [r for r in (*champion.rules, *challenger.rules) if r.id not in shared]
    if not all(_outcome_only(r) for r in differing):
        return None
    if [r.id for r in champion.rules if r.id in shared] != [
        r.id for r in challenger.rules if r.id in shared
    ]:
        return None  # the first of two rules deriving one field could change
    matchers: list[Matcher | None] = []
    for stage in challenger.stages:
        own = [r for r in challenger.rules if r.stage == stage and r.id not in shared]
        matchers.append(compile_matcher(challenger, own) if own else None)
    return Difference(champion, shared, {r.id: r for r in challenger.rules}, matchers)
