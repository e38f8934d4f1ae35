"""The search behind static verification: atoms, terms, the grid of representative values,
and one exact search for a point where some atoms hold and some terms do not (see verify.py).
"""

from __future__ import annotations

import math
import operator
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from decision_service.rules import expressions as ex
from decision_service.rules.ruleset import Ruleset
from decision_service.rules.schema import FieldType

MISSING: Any = type("Missing", (), {"__repr__": lambda self: "missing"})()
MAX_TERMS = 256  # disjuncts per condition before we give up ("cannot decide")
BUDGET = 200_000  # search nodes per question


class Undecided(Exception):
    """The question is too large to decide exactly."""


# ---------------------------------------------------------------------------------------------
# Atoms and terms


@dataclass(frozen=True, eq=False)
class Atom:
    node: ex.Node
    fields: tuple[str, ...]
    simple: bool  # one field compared with constants

    def __post_init__(self) -> None:
        if self.simple:
            object.__setattr__(self, "true_on", _tester(self.node))

    def true_on(self, value: Any) -> bool:
        """Truth of a simple atom when its one field has `value` (MISSING: absent)."""
        facts = {} if value is MISSING else {self.fields[0]: value}
        return ex.truth(self.node, facts) is True

    def constants(self) -> list[Any]:
        return [lit.value for lit in _literals(self.node)]


_OPS = {
    "==": operator.eq,
    "!=": operator.ne,
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}


def _tester(n: ex.Node) -> Any:
    """A simple atom as a fast function of its field's value, same truth as `ex.truth`."""
    if isinstance(n, ex.Missing):
        negated = n.negated
        return lambda v: (v is MISSING) != negated
    if isinstance(n, ex.In):
        vals = tuple(lit.value for lit in n.values)
        negated = n.negated
        return lambda v: v is not MISSING and (any(v == x for x in vals) != negated)
    assert isinstance(n, ex.Cmp)
    if isinstance(n.right, ex.Lit):
        op, c = _OPS[n.op], n.right.value
    else:
        op, c = _OPS[ex.FLIP[n.op]], n.left.value  # type: ignore[union-attr]
    return lambda v: v is not MISSING and op(v, c)


def _literals(n: ex.Node) -> list[ex.Lit]:
    if isinstance(n, ex.Lit):
        return [n]
    if isinstance(n, ex.In):
        return [*_literals(n.operand), *n.values]
    if isinstance(n, ex.Cmp | ex.Arith):
        return [*_literals(n.left), *_literals(n.right)]
    if isinstance(n, ex.Neg | ex.Missing):
        return _literals(n.operand)
    if isinstance(n, ex.Call):
        return [x for a in n.args for x in _literals(a)]
    return []


def _is_simple(n: ex.Node) -> bool:
    if isinstance(n, ex.Missing):
        return isinstance(n.operand, ex.Field)
    if isinstance(n, ex.In):
        return isinstance(n.operand, ex.Field)
    if isinstance(n, ex.Cmp):
        return (isinstance(n.left, ex.Field) and isinstance(n.right, ex.Lit)) or (
            isinstance(n.right, ex.Field) and isinstance(n.left, ex.Lit)
        )
    return False


Term = tuple[Atom, ...]


def _dnf(n: ex.Node, atoms: dict[str, Atom]) -> list[Term]:
    if isinstance(n, ex.Or):
        out: list[Term] = []
        for i in n.items:
            out += _dnf(i, atoms)
            if len(out) > MAX_TERMS:
                raise Undecided("the condition has too many alternatives")
        return out
    if isinstance(n, ex.And):
        acc: list[Term] = [()]
        for i in n.items:
            acc = [a + b for a in acc for b in _dnf(i, atoms)]
            if len(acc) > MAX_TERMS:
                raise Undecided("the condition has too many alternatives")
        return acc
    key = ex.unparse(n)
    atom = atoms.get(key)
    if atom is None:
        atom = Atom(n, tuple(ex.fields_of(n)), _is_simple(n))
        atoms[key] = atom
    return [(atom,)]


def terms_of(node: ex.Node, atoms: dict[str, Atom]) -> list[Term]:
    """T(condition) as a disjunction of conjunctions of atoms (exact, three-valued)."""
    return _dnf(ex.to_nnf(node), atoms)


# ---------------------------------------------------------------------------------------------
# The space of facts one stage sees


class Space:
    def __init__(self, ruleset: Ruleset, stage: int, *, lax: bool = False) -> None:
        """`lax`: every field may be missing (as in a file test's partial facts)."""
        schema = ruleset.schema
        self.types: dict[str, FieldType] = dict(schema.fields)
        self.may_miss: dict[str, bool] = {
            f: lax or (f in schema.optional and f not in _ALWAYS) for f in schema.fields
        }
        for f, t in ruleset.derived.items():
            if ruleset.derived_stage[f] < stage:
                self.types[f] = t
                self.may_miss[f] = not _always_set(ruleset, f)

    def grid(self, f: str, atoms: Iterable[Atom]) -> list[Any]:
        t = self.types[f]
        tail = [MISSING] if self.may_miss.get(f, True) else []
        if t.kind == "category":
            return [*t.values, *tail]
        if t.kind == "boolean":
            return [True, False, *tail]
        consts: set[float] = set()
        opaque = False
        for a in atoms:
            for c in a.constants():
                if isinstance(c, int | float) and not isinstance(c, bool):
                    consts.add(c)
            opaque = opaque or not a.simple
        if opaque:  # heuristic candidates for arithmetic: still checked for real
            consts |= {0, 1, -1, 2, 10, 100, 1000, 10_000, 1_000_000}
            consts |= {c + d for c in list(consts) for d in (-1, 1)}
        return [*_representatives(sorted(consts), t.integer), *tail]


_ALWAYS = {"pd"}  # model outputs: present whenever rules run


def _always_set(ruleset: Ruleset, fname: str) -> bool:
    """A derived field set in every row of an earlier complete table is never missing."""
    for t in ruleset.tables:
        if not t.complete or t.aggregate or t.stage != ruleset.derived_stage[fname]:
            continue
        if all(fname in r.set or fname in r.compute for r in t.rows):
            return True
    return False


def _representatives(consts: list[float], integer: bool) -> list[Any]:
    """One value in every cell of the partition of the line the constants make."""
    if not consts:
        return [0]
    out: list[Any] = []

    def below(c: float) -> Any:
        return math.ceil(c) - 1 if integer else c - max(1.0, abs(c))

    def above(c: float) -> Any:
        return math.floor(c) + 1 if integer else c + max(1.0, abs(c))

    out.append(below(consts[0]))
    for i, c in enumerate(consts):
        if not integer or float(c).is_integer():
            out.append(int(c) if integer else c)
        if i + 1 < len(consts):
            nxt = consts[i + 1]
            if integer:
                v = math.floor(c) + 1
                if v < nxt:
                    out.append(v)
            else:
                m = c / 2 + nxt / 2
                if c < m < nxt:
                    out.append(m)
    out.append(above(consts[-1]))
    return out


# ---------------------------------------------------------------------------------------------
# A quick, sound pre-filter: two terms whose bounds on some field are disjoint never meet


@dataclass
class Bound:
    present: bool = True
    missing: bool = True
    lo: float = -math.inf
    lo_open: bool = False
    hi: float = math.inf
    hi_open: bool = False
    values: frozenset | None = None  # allowed categories/booleans/numbers (None: any)

    def meet(self, o: Bound) -> bool:
        """Can both hold at once? (over-approximate: True when unsure)"""
        if self.missing and o.missing:
            return True
        if not (self.present and o.present):
            return False
        if self.values is not None and o.values is not None and not (self.values & o.values):
            return False
        lo, lo_open = max((self.lo, self.lo_open), (o.lo, o.lo_open))
        hi, hi_open = min((self.hi, not self.hi_open), (o.hi, not o.hi_open))
        hi_open = not hi_open
        return lo < hi or (lo == hi and not lo_open and not hi_open)


def bounds_of(term: Term) -> dict[str, Bound]:
    out: dict[str, Bound] = {}
    for a in term:
        if not a.simple:
            for f in a.fields:
                out.setdefault(f, Bound()).missing = False
            continue
        b = out.setdefault(a.fields[0], Bound())
        n = a.node
        if isinstance(n, ex.Missing):
            if n.negated:
                b.missing = False
            else:
                b.present = False
            continue
        b.missing = False
        if isinstance(n, ex.In):
            if not n.negated:
                vals = frozenset(lit.value for lit in n.values)
                b.values = vals if b.values is None else b.values & vals
            continue
        assert isinstance(n, ex.Cmp)
        op, lit = (n.op, n.right) if isinstance(n.right, ex.Lit) else (ex.FLIP[n.op], n.left)
        v = lit.value
        if op == "==":
            b.values = frozenset([v]) if b.values is None else b.values & {v}
        elif op != "!=" and isinstance(v, int | float) and not isinstance(v, bool):
            if op in {">", ">="} and (v, op == ">") > (b.lo, b.lo_open):
                b.lo, b.lo_open = v, op == ">"
            if op in {"<", "<="} and (v, op == "<") < (b.hi, not b.hi_open):
                b.hi, b.hi_open = v, op == "<"
    return out


def may_meet(a: dict[str, Bound], b: dict[str, Bound]) -> bool:
    for f, x in a.items():
        y = b.get(f)
        if y is not None and not x.meet(y):
            return False
    return True


# ---------------------------------------------------------------------------------------------
# The one search: a point where every `must` atom is true and no `avoid` term is


@dataclass
class Result:
    point: dict[str, Any] | None
    decided: bool  # False: nothing found, but opaque atoms or the budget leave it open


def find(space: Space, must: Iterable[Atom], avoid: list[Term], budget: int = BUDGET) -> Result:
    must = list(must)
    opaque_must = [a for a in must if not a.simple]
    by_field: dict[str, list[Atom]] = {}
    for a in must:
        if a.simple:
            by_field.setdefault(a.fields[0], []).append(a)
    uncertain = bool(opaque_must) or any(not a.simple for t in avoid for a in t)
    involved: dict[str, list[Atom]] = {}
    for a in [*must, *(x for t in avoid for x in t)]:
        for f in a.fields:
            involved.setdefault(f, []).append(a)
    # most constrained fields first: they prune the most
    fields = sorted(involved, key=lambda f: (-len(by_field.get(f, ())), -len(involved[f]), f))
    grids = {f: space.grid(f, involved[f]) for f in fields}
    avoid_simple = [
        ({f: [a for a in t if a.simple and a.fields[0] == f] for f in fields}, t) for t in avoid
    ]
    remaining0 = [sum(1 for a in t if a.simple) for t in avoid]
    has_opaque = [any(not a.simple for a in t) for t in avoid]
    point: dict[str, Any] = {}
    steps = [0]

    def facts() -> dict[str, Any]:
        return {k: v for k, v in point.items() if v is not MISSING}

    def rec(i: int, alive: list[int], remaining: list[int]) -> dict[str, Any] | None:
        steps[0] += 1
        if steps[0] > budget:
            raise Undecided("search too large")
        if i == len(fields):
            fs = facts()
            if any(ex.truth(a.node, fs) is not True for a in opaque_must):
                return None
            for k in alive:
                if has_opaque[k] and all(ex.truth(a.node, fs) is True for a in avoid[k]):
                    return None
            return dict(point)
        f = fields[i]
        for v in grids[f]:
            if any(not a.true_on(v) for a in by_field.get(f, ())):
                continue
            point[f] = v
            nxt_alive: list[int] = []
            nxt_rem = remaining
            covered = False
            for k in alive:
                atoms_f = avoid_simple[k][0][f]
                if atoms_f:
                    if not all(a.true_on(v) for a in atoms_f):
                        continue  # this avoid term is false here
                    if nxt_rem is remaining:
                        nxt_rem = list(remaining)
                    nxt_rem[k] -= len(atoms_f)
                if nxt_rem[k] == 0 and not has_opaque[k]:
                    covered = True
                    break
                nxt_alive.append(k)
            if covered:
                continue
            found = rec(i + 1, nxt_alive, nxt_rem)
            if found is not None:
                return found
        point.pop(f, None)
        return None

    if any(r == 0 and not h for r, h in zip(remaining0, has_opaque, strict=True)):
        return Result(None, True)  # an always-true avoid term covers everything
    try:
        found = rec(0, list(range(len(avoid))), remaining0)
    except Undecided:
        return Result(None, False)
    return Result(found, found is not None or not uncertain)
