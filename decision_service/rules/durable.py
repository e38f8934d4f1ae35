"""The durable_rules engine, driven through its C module with every guard of RULES-ENGINE.md.

Guards (each has a test in tests/rules/test_durable_hazards.py):
- no `Host` (no timer threads): we assert, drain this session's actions and delete the session
  ourselves, under a lock, with `start_action_for_state` / `complete_and_start_action`;
- every session is deleted (`delete_state`) after each evaluation: no 1,024-session MemoryError;
- a lowest-priority catch-all rule per durable ruleset, so an action always runs (delete_state on
  a session where no action ran segfaults);
- a discriminator (`k == "app"`) on every pattern;
- floats are formatted by us (`1e-05` → `1.0e-05`; non-finite values are never sent);
- at most 25 rules per durable ruleset (error 303 / hangs with large rulesets), and at most
  MAX_PROPERTIES fact properties (error 302 beyond ~252);
- strict fact types (the schema's normalise) and only the fields each chunk's rules use;
- hits are de-duplicated by rule name (`$or` can fire a rule more than once);
- durable rule names are ASCII (`r<i>`), whatever our ids are: its messages escape the rest;
- no construct the engine cannot take: a `$or` of >= 512 alternatives hangs `assert_fact`
  (1,000 hang `create_ruleset`), nesting 15 deep is error 113. A condition wider than
  MAX_ALTERNATIVES, deeper than MAX_NESTING or with more than MAX_ATOMS comparisons is
  materialised whole: our code computes its (three-valued) truth before the assert and
  durable matches that boolean fact;
- versioned ruleset names; `delete_ruleset` when the engine is closed or garbage-collected.

Conditions are put into negation normal form (exact under three-valued logic) and compiled to
durable's operators; `in` becomes `$or` of equalities. Arithmetic, min/max and comparisons of two
non-literal operands are materialised as synthetic facts computed by our code before asserting;
durable still does the matching. The trace is recomputed from our AST (evaluation.run_stages).
"""

from __future__ import annotations

import contextlib
import itertools
import json
import math
import threading
import weakref
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import durable_rules_engine as dre

from decision_service.rules import expressions as ex
from decision_service.rules.compiled import _function, _Gen, compile_value
from decision_service.rules.evaluation import Evaluation, run_stages
from decision_service.rules.language import MAX_PRIORITY, Rule, Ruleset

CHUNK_SIZE = 25
# Largest condition handed to durable as is (measured limits: 511 alternatives, depth 14)
MAX_ALTERNATIVES = 64
MAX_NESTING = 8
MAX_ATOMS = 64
# Properties one fact may carry: error 302 at assert time above ~252 (measured); a chunk's
# rules are grouped so that the fields and synthetic facts they read stay within this.
MAX_PROPERTIES = 200
DISCRIMINATOR = ("k", "app")
CATCH_ALL = "zz_catch_all"
_ruleset_ids = itertools.count(1)
_CMP_OPS = {"<": "$lt", "<=": "$lte", ">": "$gt", ">=": "$gte", "!=": "$neq"}


class DurableEngineError(RuntimeError):
    pass


# ---------------------------------------------------------------------------------------------
# JSON that durable_rules' parser accepts


def format_float(x: float) -> str:
    """repr, with a '.' in every mantissa that has an exponent; non-finite is an error."""
    if not math.isfinite(x):
        raise ValueError(f"cannot send a non-finite number to durable_rules: {x!r}")
    r = repr(x)
    if "e" in r:
        mantissa, exponent = r.split("e")
        if "." not in mantissa:
            mantissa += ".0"
        r = mantissa + "e" + exponent
    return r


def to_json(obj: Any) -> str:
    if obj is True:
        return "true"
    if obj is False:
        return "false"
    if obj is None:
        return "null"
    if isinstance(obj, float):
        return format_float(obj)
    if isinstance(obj, int):
        return str(obj)
    if isinstance(obj, str):
        return json.dumps(obj)
    if isinstance(obj, dict):
        return "{" + ",".join(json.dumps(str(k)) + ":" + to_json(v) for k, v in obj.items()) + "}"
    if isinstance(obj, list | tuple):
        return "[" + ",".join(to_json(v) for v in obj) + "]"
    raise TypeError(f"cannot encode {type(obj).__name__}")


# ---------------------------------------------------------------------------------------------
# Rule → durable JSON


@dataclass(frozen=True)
class Synthetic:
    """A fact our code computes before asserting: value of `node`, or left - right."""

    name: str
    node: ex.Node
    minus: ex.Node | None = None  # when set, the fact is sign(node - minus) preserving

    def __post_init__(self) -> None:
        # Arithmetic runs as generated Python (the same generator as the compiled engine);
        # durable_rules still does all the matching.
        object.__setattr__(self, "_left", compile_value(self.node, self.name))
        minus = None if self.minus is None else compile_value(self.minus, self.name)
        object.__setattr__(self, "_right", minus)

    def compute(self, env: Mapping[str, Any]) -> Any:
        a = self._left(env)
        if self._right is None:
            return a
        b = self._right(env)
        if a is None or b is None:
            return None
        if isinstance(a, str | bool) or isinstance(b, str | bool):
            return a == b  # equality of two categories/booleans: materialised as a bool
        d = a - b
        if isinstance(d, float) and not math.isfinite(d):
            return math.copysign(1.0, d)
        return d


class SyntheticCondition:
    """A whole condition our code decides before the assert: true iff it is definitely true
    (three-valued, as the compiled engine); durable matches `name == true`."""

    def __init__(self, name: str, node: ex.Node) -> None:
        self.name = name
        self.node = node
        gen = _Gen()
        source = "\n".join(_function("value", [f"return {gen.true(node)}"], gen))
        namespace: dict[str, Any] = {"__builtins__": {"min": min, "max": max}}
        exec(compile(source, f"<condition {name}>", "exec"), namespace)  # from a validated AST
        self._fn = namespace["value"]

    def compute(self, env: Mapping[str, Any]) -> bool:
        return bool(self._fn(env))


def _shape(n: ex.Node) -> tuple[int, int, int]:
    """(depth, widest and/or/in, comparisons) of an NNF condition, iteratively."""
    depth = width = atoms = 0
    stack: list[tuple[ex.Node, int]] = [(n, 1)]
    while stack:
        node, d = stack.pop()
        depth = max(depth, d)
        if isinstance(node, ex.And | ex.Or):
            width = max(width, len(node.items))
            stack.extend((i, d + 1) for i in node.items)
        elif isinstance(node, ex.In):
            width = max(width, len(node.values))
            atoms += len(node.values)
        else:
            atoms += 1
    return depth, width, atoms


def _properties(rule: Rule) -> int:
    """Upper bound of the fact properties one rule needs (fields read + synthetic facts)."""
    node = ex.to_nnf(rule.when.node)
    if needs_materialising(node):
        return 1
    return len(ex.fields_of(node)) + _shape(node)[2]


def _groups(rules: list[Rule], chunk_size: int) -> list[list[Rule]]:
    """Consecutive groups of at most `chunk_size` rules needing at most MAX_PROPERTIES."""
    groups: list[list[Rule]] = []
    current: list[Rule] = []
    budget = 0
    for rule in rules:
        need = _properties(rule)
        if current and (len(current) == chunk_size or budget + need > MAX_PROPERTIES):
            groups.append(current)
            current, budget = [], 0
        current.append(rule)
        budget += need
    if current:
        groups.append(current)
    return groups


def needs_materialising(n: ex.Node) -> bool:
    depth, width, atoms = _shape(n)
    return depth > MAX_NESTING or width > MAX_ALTERNATIVES or atoms > MAX_ATOMS


class _RuleCompiler:
    def __init__(self, types: Mapping[str, Any]) -> None:
        self.types = types
        self.synthetics: dict[str, Synthetic | SyntheticCondition] = {}
        self.direct: dict[str, None] = {}  # fields durable reads directly
        self._n = itertools.count()
        self._by_text: dict[str, str] = {}

    def _synthetic(self, node: ex.Node, minus: ex.Node | None = None) -> str:
        key = ex.unparse(node) + ("" if minus is None else " - " + ex.unparse(minus))
        name = self._by_text.get(key)
        if name is None:
            name = self._by_text[key] = f"s_{next(self._n)}"
            self.synthetics[name] = Synthetic(name, node, minus)
        return name

    def rule_condition(self, n: ex.Node) -> dict[str, Any]:
        """The durable condition of one rule's NNF condition (materialised when too big)."""
        if needs_materialising(n):
            key = "?" + ex.unparse(n)
            name = self._by_text.get(key)
            if name is None:
                name = self._by_text[key] = f"s_{next(self._n)}"
                self.synthetics[name] = SyntheticCondition(name, n)
            return {name: True}
        return self.condition(n)

    def condition(self, n: ex.Node) -> dict[str, Any]:
        if isinstance(n, ex.And):
            return {"$and": [self.condition(i) for i in n.items]}
        if isinstance(n, ex.Or):
            return {"$or": [self.condition(i) for i in n.items]}
        if isinstance(n, ex.Missing):
            assert isinstance(n.operand, ex.Field)
            self.direct.setdefault(n.operand.name)
            return {"$ex" if n.negated else "$nex": {n.operand.name: 1}}
        if isinstance(n, ex.In):
            name = self._operand(n.operand)
            if n.negated:
                return {"$and": [{"$neq": {name: v.value}} for v in n.values]}
            return {"$or": [{name: v.value} for v in n.values]}
        if isinstance(n, ex.Cmp):
            left, op, right = n.left, n.op, n.right
            if isinstance(left, ex.Lit):
                left, op, right = right, ex.FLIP[op], left
            if isinstance(right, ex.Lit):
                return self._cmp(self._operand(left), op, right.value)
            # two non-literal operands: compare (left - right) with 0, or (left == right) to true
            name = self._synthetic(left, right)
            if isinstance(left, ex.Field) and self.types[left.name].kind != "number":
                return self._cmp(name, op, True)  # op is == or != (type-checked)
            return self._cmp(name, op, 0)
        raise TypeError(f"not in negation normal form: {n!r}")

    def _operand(self, n: ex.Node) -> str:
        if isinstance(n, ex.Field):
            self.direct.setdefault(n.name)
            return n.name
        return self._synthetic(n)

    @staticmethod
    def _cmp(name: str, op: str, value: Any) -> dict[str, Any]:
        if op == "==":
            return {name: value}
        return {_CMP_OPS[op]: {name: value}}


@dataclass
class _Chunk:
    name: str
    handle: int
    rules: dict[str, Rule]  # durable rule name → our rule
    fields: tuple[str, ...]  # application/derived fields to send
    synthetics: tuple[Synthetic | SyntheticCondition, ...]


_live: set[int] = set()  # handles of durable rulesets not yet deleted


def live_ruleset_count() -> int:
    """How many durable rulesets this process holds (for tests and metrics)."""
    return len(_live)


def _delete_rulesets(handles: list[int]) -> None:
    while handles:
        h = handles.pop()
        _live.discard(h)
        with contextlib.suppress(Exception):  # interpreter shutdown
            dre.delete_ruleset(h)


class DurableEngine:
    name = "durable_rules"

    def __init__(self, ruleset: Ruleset, chunk_size: int = CHUNK_SIZE) -> None:
        if not 1 <= chunk_size <= CHUNK_SIZE:
            raise ValueError(f"chunk_size must be 1..{CHUNK_SIZE}")
        self.ruleset = ruleset
        self._schema = ruleset.schema
        self._lock = threading.Lock()
        self._sids = itertools.count(1)
        self._handles: list[int] = []
        self._finalizer = weakref.finalize(self, _delete_rulesets, self._handles)
        self._stages: list[list[_Chunk]] = []
        self.definitions: dict[str, dict[str, Any]] = {}  # durable JSON, for inspection
        self.closed = False
        self._order = {r.id: i for i, r in enumerate(ruleset.rules)}
        self._numbers = {
            (r.id, key): compile_value(e.node, f"{r.id}.{key}")
            for r in ruleset.rules
            for key, e in [*r.compute.items(), ("max_amount", r.max_amount)]
            if e is not None
        }
        tag = f"{ruleset.name}@{ruleset.version}#{next(_ruleset_ids)}"
        try:
            for si, stage in enumerate(ruleset.stages):
                rules = [r for r in ruleset.rules if r.stage == stage]
                chunks = [
                    self._chunk(f"{tag}/s{si}/c{ci}", group)
                    for ci, group in enumerate(_groups(rules, chunk_size))
                ]
                self._stages.append(chunks)
        except BaseException:
            self.close()
            raise

    def _chunk(self, name: str, rules: list[Rule]) -> _Chunk:
        compiler = _RuleCompiler({**self._schema.fields, **self.ruleset.derived})
        definition: dict[str, Any] = {}
        by_name: dict[str, Rule] = {}
        disc = {DISCRIMINATOR[0]: DISCRIMINATOR[1]}
        for i, rule in enumerate(rules):
            cond = compiler.rule_condition(ex.to_nnf(rule.when.node))
            rname = f"r{i}"
            by_name[rname] = rule
            definition[rname] = {
                "all": [{"m": {"$and": [disc, cond]}}],
                "pri": MAX_PRIORITY - rule.priority,
            }
        # lowest priority, matches every application: an action always runs
        definition[CATCH_ALL] = {"all": [{"m": disc}], "pri": MAX_PRIORITY + 1}
        synthetics = tuple(compiler.synthetics.values())
        used_directly = tuple(compiler.direct)
        if len(synthetics) + len(used_directly) > MAX_PROPERTIES:  # _groups keeps us below
            raise DurableEngineError(f"{name}: a fact would need over {MAX_PROPERTIES} properties")
        try:
            handle = dre.create_ruleset(name, to_json(definition))
        except dre.error as e:
            raise DurableEngineError(f"durable_rules rejected ruleset {name}: {e}") from e
        self._handles.append(handle)
        _live.add(handle)
        self.definitions[name] = definition
        return _Chunk(name, handle, by_name, used_directly, synthetics)

    def _run_chunk(self, chunk: _Chunk, env: Mapping[str, Any]) -> list[Rule]:
        sid = str(next(self._sids))
        parts = ['{"sid":"', sid, '","id":1,"k":"app"']
        for f in chunk.fields:
            v = env.get(f)
            if v is not None:
                parts.append(f',"{f}":{to_json(v)}')
        for s in chunk.synthetics:
            v = s.compute(env)
            if v is not None:
                parts.append(f',"{s.name}":{to_json(v)}')
        parts.append("}")
        fact = "".join(parts)
        h = chunk.handle
        hits: dict[str, None] = {}
        try:
            _code, state = dre.assert_fact(h, fact)
        except dre.error as e:
            # no action ran: deleting the session could crash the process; leave it
            raise DurableEngineError(f"durable_rules failed on {chunk.name}: {e}") from e
        try:
            result = dre.start_action_for_state(h, state)
            if result is None:
                raise DurableEngineError(f"no action ran on {chunk.name} (catch-all missing?)")
            message = result[1]
            while message:
                hits.setdefault(message[2 : message.index('"', 2)])
                message = dre.complete_and_start_action(h, state)
        finally:
            dre.delete_state(h, sid)
        hits.pop(CATCH_ALL, None)
        return [chunk.rules[n] for n in hits]

    def _match(self, si: int, env: dict[str, Any]) -> list[Rule]:
        found: list[Rule] = []
        for chunk in self._stages[si]:
            found += self._run_chunk(chunk, env)
        # de-duplicated already; firing order is ours (stage, priority desc, file order)
        order = self._order
        found.sort(key=lambda r: order[r.id])
        return found

    def _number(self, rule: Rule, key: str, env: dict[str, Any]) -> Any:
        return self._numbers[(rule.id, key)](env)

    def evaluate(self, facts: Mapping[str, Any]) -> Evaluation:
        facts = self._schema.normalise(facts)
        with self._lock:
            if self.closed:
                raise DurableEngineError("this ruleset version has been unloaded")
            return run_stages(self.ruleset, facts, self._match, self._number)

    def close(self) -> None:
        """Delete the durable rulesets (idempotent)."""
        with self._lock:
            self.closed = True
            self._finalizer()

    @property
    def ruleset_names(self) -> list[str]:
        return list(self.definitions)
