"""The compiled engine: each stage's conditions become one straight-line Python function.

The source is generated from our own validated AST (never from analyst text) and compiled
with `compile()`. Three-valued logic is compiled directly from its definition: for every
condition we generate "is definitely true" (T) and "is definitely false" (F) code:
T(a and b) = T(a) and T(b), F(a and b) = F(a) or F(b), T(not a) = F(a), and a comparison is
true/false only when both sides are known. A rule fires when T(condition) holds.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping
from typing import Any

from decision_service.rules import expressions as ex
from decision_service.rules.delta import Difference, Kept, plan
from decision_service.rules.evaluation import (
    Effects,
    Evaluation,
    Matcher,
    number_exprs,
    run_stages,
)
from decision_service.rules.ruleset import Rule, Ruleset


class _Gen:
    def __init__(self) -> None:
        self._tmp = itertools.count()
        self.fields: dict[str, None] = {}

    def tmp(self) -> str:
        return f"_t{next(self._tmp)}"

    def var(self, name: str) -> str:
        self.fields.setdefault(name)
        return f"v_{name}"

    # value expressions: evaluate to the value or None (unknown)
    def value(self, n: ex.Node) -> str:
        if isinstance(n, ex.Lit):
            return repr(n.value)
        if isinstance(n, ex.Field):
            return self.var(n.name)
        if isinstance(n, ex.Neg):
            g, a = self._operand(n.operand)
            return f"(None if {g} else -{a})" if g else f"(-{a})"
        if isinstance(n, ex.Arith):
            ga, a = self._operand(n.left)
            gb, b = self._operand(n.right)
            guards = [g for g in (ga, gb) if g]
            if n.op == "/" and not (isinstance(n.right, ex.Lit) and n.right.value != 0):
                guards.append(f"{b} == 0")
            r = self.tmp()
            # x - x == 0 is False for inf and nan: non-finite results are unknown
            result = f"({r} if ({r} := {a} {n.op} {b}) - {r} == 0 else None)"
            return f"(None if {' or '.join(guards)} else {result})" if guards else result
        if isinstance(n, ex.Call):
            args = [self._operand(a) for a in n.args]
            guards = [g for g, _ in args if g]
            call = f"{n.fn}({', '.join(e for _, e in args)})"
            return f"(None if {' or '.join(guards)} else {call})" if guards else call
        raise TypeError(repr(n))

    def _operand(self, n: ex.Node, *, known: bool = False) -> tuple[str, str]:
        """(guard, expression) for an operand: a literal or a field is read as it is, anything
        else once, into a temporary. The guard is true when the operand is unknown (`known`:
        when it is known), '' when it cannot be unknown (a literal)."""
        test = "is not None" if known else "is None"
        if isinstance(n, ex.Lit):
            return "", repr(n.value)
        if isinstance(n, ex.Field):
            v = self.var(n.name)
            return f"{v} {test}", v
        t = self.tmp()
        return f"({t} := {self.value(n)}) {test}", t

    def _known(self, n: ex.Node) -> tuple[str, str]:
        """(guard true when the operand is known, expression): a comparison's operand."""
        return self._operand(n, known=True)

    def _atom(self, n: ex.Node, negate: bool) -> str:
        if isinstance(n, ex.Cmp):
            op = ex.INVERSE[n.op] if negate else n.op
            ga, a = self._known(n.left)
            gb, b = self._known(n.right)
            parts = [g for g in (ga, gb) if g] + [f"{a} {op} {b}"]
            return "(" + " and ".join(parts) + ")"
        if isinstance(n, ex.In):
            g, a = self._known(n.operand)
            vals = "(" + "".join(repr(v.value) + ", " for v in n.values) + ")"
            op = "in" if n.negated == negate else "not in"
            return "(" + " and ".join([*([g] if g else []), f"{a} {op} {vals}"]) + ")"
        if isinstance(n, ex.Missing):
            v = self.value(n.operand)
            is_missing = n.negated == negate
            return f"({v} is {'' if is_missing else 'not '}None)"
        raise TypeError(repr(n))

    def true(self, n: ex.Node) -> str:
        if isinstance(n, ex.And):
            return "(" + " and ".join(self.true(i) for i in n.items) + ")"
        if isinstance(n, ex.Or):
            return "(" + " or ".join(self.true(i) for i in n.items) + ")"
        if isinstance(n, ex.Not):
            return self.false(n.operand)
        return self._atom(n, negate=False)

    def false(self, n: ex.Node) -> str:
        if isinstance(n, ex.And):
            return "(" + " or ".join(self.false(i) for i in n.items) + ")"
        if isinstance(n, ex.Or):
            return "(" + " and ".join(self.false(i) for i in n.items) + ")"
        if isinstance(n, ex.Not):
            return self.true(n.operand)
        return self._atom(n, negate=True)


STAGE_PART = 250  # rules per generated function in a big stage


def _ifs(rules: list[tuple[int, Rule]], gen: _Gen) -> list[str]:
    body: list[str] = []
    for i, rule in rules:
        body.append(f"if {gen.true(rule.when.node)}:")
        body.append(f"    hits.append(RULES[{i}])  # {rule.id}")
    return body


def _function(name: str, body: list[str], gen: _Gen, extra: str = "") -> list[str]:
    lines = [f"def {name}(f{', ' + extra if extra else ''}):"]
    if gen.fields:
        lines.append("    g = f.get")
    lines += [f"    v_{fname} = g({fname!r})" for fname in gen.fields]
    lines += ["    " + b for b in body]
    return lines


def _matcher(name: str, rules: list[tuple[int, Rule]]) -> list[str]:
    """`name(facts) -> [rules]`: the rules (position in RULES, rule) whose condition holds."""
    gen = _Gen()
    return _function(name, ["hits = []", *_ifs(rules, gen), "return hits"], gen)


def generate_source(ruleset: Ruleset) -> str:
    """Python source for a ruleset: `stage_<i>(facts) -> [rules]`, and `effect_<k>` per rule
    that computes, sets or caps (`effects_source`)."""
    out: list[str] = []
    for si, stage in enumerate(ruleset.stages):
        # not rules.index(): O(n²) at 10,000 rules
        indexed = [(i, r) for i, r in enumerate(ruleset.rules) if r.stage == stage]
        parts = [indexed[k : k + STAGE_PART] for k in range(0, len(indexed), STAGE_PART)]
        if len(parts) <= 1:
            out += _matcher(f"stage_{si}", indexed)
            out.append("")
            continue
        # a big stage: parts of STAGE_PART rules, each compiled on its own (CompiledEngine
        # compiles function by function: no single compile() holds the GIL for seconds)
        calls = [f"stage_{si}_p{k}(f, hits)" for k in range(len(parts))]
        out += [f"def stage_{si}(f):", "    hits = []", *("    " + c for c in calls)]
        out += ["    return hits", ""]
        for k, part in enumerate(parts):
            gen = _Gen()
            body = _ifs(part, gen)
            out += _function(f"stage_{si}_p{k}", body, gen, extra="hits")
            out.append("")
    out += effects_source(ruleset)
    return "\n".join(out)


def effects_source(ruleset: Ruleset) -> list[str]:
    """`effect_<k>(facts, new) -> values` for each rule k that computes, sets or caps: the
    rule's effect on a stage's `new` fields (evaluation.run_stages), the one definition both
    engines run. A computed field is added unless unknown (None) or already in `new` (an
    earlier rule of the stage won it), then each `set` field unless already in `new`; it
    returns the values of the rule's `number_exprs` (its computes, then its cap)."""
    out: list[str] = []
    for i, rule in enumerate(ruleset.rules):
        exprs = number_exprs(rule)
        if not exprs and not rule.set:
            continue
        gen = _Gen()
        body: list[str] = []
        for k, (key, e) in enumerate(exprs):
            body.append(f"c{k} = {gen.value(e.node)}")
            if key in rule.compute:
                body += [f"if c{k} is not None and {key!r} not in new:", f"    new[{key!r}] = c{k}"]
        for j, key in enumerate(rule.set):  # the values are the rule's own (SETS), not source
            body += [f"if {key!r} not in new:", f"    new[{key!r}] = SETS[{i}][{j}]"]
        body.append("return (" + "".join(f"c{k}, " for k in range(len(exprs))) + ")")
        out += _function(f"effect_{i}", body, gen, extra="new")
        out.append("")
    return out


def compile_effects(ruleset: Ruleset, source: str | None = None) -> Effects:
    """A ruleset's `Effects`, from `effects_source` (or from the blocks of `source` that
    define them: a compiled engine's whole source)."""
    namespace = _namespace(ruleset)
    label = f"<rules {ruleset.name} {ruleset.version}>"
    blocks = "\n".join(effects_source(ruleset)) if source is None else source
    for block in blocks.split("\n\n"):
        if block.startswith("def effect_"):
            exec(compile(block, label, "exec"), namespace)  # generated from a validated AST
    functions = {
        rule.id: namespace[f"effect_{i}"]
        for i, rule in enumerate(ruleset.rules)
        if f"effect_{i}" in namespace
    }
    return Effects(ruleset, functions)


def _namespace(ruleset: Ruleset) -> dict[str, Any]:
    return {
        "RULES": ruleset.rules,
        "SETS": tuple(tuple(r.set.values()) for r in ruleset.rules),
        "__builtins__": {"min": min, "max": max},
    }


def compile_matcher(ruleset: Ruleset, rules: list[Rule]) -> Matcher:
    """A matcher for some rules of one stage of `ruleset` (in its firing order): the rules a
    challenger has of its own (rules/delta.py), by the same generated code as a stage."""
    position = {id(r): i for i, r in enumerate(ruleset.rules)}
    namespace = _namespace(ruleset)
    source = "\n".join(_matcher("match", [(position[id(r)], r) for r in rules]))
    exec(compile(source, f"<rules {ruleset.name} {ruleset.version}>", "exec"), namespace)
    return namespace["match"]


def compile_value(node: ex.Node, label: str = "value") -> Callable[[Mapping[str, Any]], Any]:
    """One value expression as a Python function of the facts (None = unknown)."""
    gen = _Gen()
    source = "\n".join(_function("value", [f"return {gen.value(node)}"], gen))
    namespace: dict[str, Any] = {"__builtins__": {"min": min, "max": max}}
    exec(compile(source, f"<{label}>", "exec"), namespace)  # generated from a validated AST
    return namespace["value"]


class CompiledEngine:
    name = "compiled"

    def __init__(self, ruleset: Ruleset) -> None:
        self.ruleset = ruleset
        self.source = generate_source(ruleset)
        namespace = _namespace(ruleset)
        label = f"<rules {ruleset.name} {ruleset.version}>"
        for block in self.source.split("\n\n"):  # one function at a time (see STAGE_PART)
            if not block.startswith("def effect_"):  # those: compile_effects
                exec(compile(block, label, "exec"), namespace)  # generated from a validated AST
        self._matchers = [namespace[f"stage_{si}"] for si in range(len(ruleset.stages))]
        self._effects = compile_effects(ruleset, self.source)
        self._normalise = ruleset.schema.normaliser
        self._difference: tuple[Ruleset | None, Difference | None] = (None, None)

    def evaluate(
        self,
        facts: Mapping[str, Any],
        *,
        trace: bool = True,
        normalised: bool = False,
        keep: Kept | None = None,
    ) -> Evaluation:
        env = facts if normalised else self._normalise(facts)
        return run_stages(self.ruleset, env, self._matchers, self._effects, trace=trace, keep=keep)

    def evaluate_after(self, kept: Kept) -> Evaluation | None:
        """This ruleset (as a challenger, without a trace) on the facts of a champion's
        evaluation, from it when they differ only in outcome rules (rules/delta.py); None:
        evaluate in full."""
        champion, difference = self._difference
        if champion is not kept.ruleset:  # planned once per champion version
            champion = kept.ruleset
            difference = None if champion is None else plan(champion, self.ruleset, compile_matcher)
            self._difference = (champion, difference)
        return None if difference is None else difference.evaluate(kept, self._effects)

    def close(self) -> None:
        pass
