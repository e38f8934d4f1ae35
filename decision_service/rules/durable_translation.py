"""Our rules in durable_rules' terms: conditions put into negation normal form (exact under
three-valued logic) and compiled to durable's operators (`in` becomes `$or` of equalities);
arithmetic, min/max and comparisons of two non-literal operands materialised as synthetic facts
computed by our code before asserting (durable still does the matching); conditions too big for
durable materialised whole; rules grouped into chunks within durable's limits; and the JSON its
parser accepts. The engine that runs them is durable.py.
"""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from decision_service.rules import expressions as ex
from decision_service.rules.compiled import _function, _Gen, compile_value
from decision_service.rules.ruleset import Rule

# Largest condition handed to durable as is (measured limits: 511 alternatives, depth 14)
MAX_ALTERNATIVES = 64
MAX_NESTING = 8
MAX_ATOMS = 64
# Properties one fact may carry: error 302 at assert time above ~252 (measured); a chunk's
# rules are grouped so that the fields and synthetic facts they read stay within this.
MAX_PROPERTIES = 200
_CMP_OPS = {"<": "$lt", "<=": "$lte", ">": "$gt", ">=": "$gte", "!=": "$neq"}


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
