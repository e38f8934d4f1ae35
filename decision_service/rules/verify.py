"""Static verification of a ruleset: interval and category reasoning over the fact schema.

Every condition (a rule's `when`, a table row's cells) is put in negation normal form (exact
under three-valued logic) and expanded to a disjunction of conjunctions of atoms. An atom that
compares one field with constants (`x < c`, `x in [..]`, `x == "a"`, `x is missing`) is *simple*:
its truth is constant between consecutive constants of that field. So for every question we
build, per field, one representative value for each cell of the partition its constants make
(each constant, a value strictly between neighbours — an integer for integer fields, none if
there is none —, one below and one above, `missing` where the field may be missing, every
category code, true/false) and search that finite grid: the answers are exact.

Atoms over several fields or with arithmetic (`age + term / 12 > 75`, `amount > price`) are
*opaque*: they are evaluated for real on candidate points, so any problem found is real, but a
search that finds nothing involving them says "cannot decide" instead of guessing.

Each finding carries a witness: the facts, as the stage sees them (input fields plus fields
derived by earlier stages), on which the problem shows. Findings of the real engines
(`tests/rules/test_verify.py`) reproduce every witness.

Domain: input fields are present unless the model card allows them missing; model outputs
(pd) are always present; a derived field may be missing unless an earlier-stage `complete`
table sets it in every row; a derived category takes only the values rules and tables set.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from decision_service.rules import expressions as ex
from decision_service.rules.ruleset import Rule, Ruleset
from decision_service.rules.verify_search import (
    MISSING,
    Atom,
    Bound,
    Space,
    Term,
    Undecided,
    bounds_of,
    find,
    may_meet,
    terms_of,
)

__all__ = ["MISSING", "Finding", "Space", "static_errors", "terms_of", "verify"]


@dataclass(frozen=True)
class Finding:
    severity: str  # error | warning
    kind: str  # overlap | gap | never | preempted | always | undecided | conflict-test
    file: str
    line: int
    column: int
    id: str
    message: str
    stage: int
    witness: dict[str, Any] | None = None  # field → value or MISSING; None: no witness
    rows: tuple[str, ...] = ()  # rule/row ids involved (for tests and tools)

    def facts(self) -> dict[str, Any]:
        """The witness as facts an engine can evaluate (missing fields left out)."""
        return {k: v for k, v in (self.witness or {}).items() if v is not MISSING}

    def __str__(self) -> str:
        if self.witness is None:
            w = "none"
        else:
            w = "{" + ", ".join(f"{k}: {_show(v)}" for k, v in self.witness.items()) + "}"
        where = f"{self.file}:{self.line}:{self.column}"
        return f"{where}: {self.id}: {self.severity}: {self.message}; witness: {w}"


def _show(v: Any) -> str:
    if v is MISSING:
        return "missing"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return f'"{v}"'
    return repr(v)


# ---------------------------------------------------------------------------------------------
# The checks


class _Checker:
    def __init__(self, ruleset: Ruleset) -> None:
        self.rs = ruleset
        self.lines = ruleset.source.splitlines()
        self.atoms: dict[str, Atom] = {}
        self.spaces: dict[int, Space] = {}
        self.terms: dict[str, list[Term] | None] = {}
        self.out: list[Finding] = []
        self.dead: set[str] = set()
        self._bounds: dict[int, tuple[Term, dict[str, Bound]]] = {}

    def space(self, stage: int) -> Space:
        if stage not in self.spaces:
            self.spaces[stage] = Space(self.rs, stage)
        return self.spaces[stage]

    def col(self, line: int) -> int:
        text = self.lines[line - 1] if 0 < line <= len(self.lines) else ""
        return len(text) - len(text.lstrip(" -")) + 1

    def report(self, severity, kind, rule_or_line, rid, message, stage, witness=None, rows=()):
        line = rule_or_line if isinstance(rule_or_line, int) else rule_or_line.line
        col = self.col(line)
        self.out.append(
            Finding(
                severity, kind, self.rs.file, line, col, rid, message, stage, witness, tuple(rows)
            )
        )

    def terms_for(self, rule: Rule) -> list[Term] | None:
        if rule.id not in self.terms:
            try:
                self.terms[rule.id] = terms_of(rule.when.node, self.atoms)
            except Undecided:
                self.terms[rule.id] = None
        return self.terms[rule.id]

    def bounds(self, term: Term) -> dict[str, Bound]:
        key = id(term)
        hit = self._bounds.get(key)
        if hit is None:
            hit = self._bounds[key] = (term, bounds_of(term))
        return hit[1]

    def witness(self, space: Space, point: dict[str, Any]) -> dict[str, Any]:
        return {k: point[k] for k in sorted(point, key=lambda f: list(space.types).index(f))}

    # -- every rule and row ----------------------------------------------------------------
    def condition(self, rule: Rule) -> None:
        space = self.space(rule.stage)
        terms = self.terms_for(rule)
        what = "row" if "/" in rule.id else "rule"
        if terms is None:
            self.report(
                "warning",
                "undecided",
                rule,
                rule.id,
                "cannot decide whether it can fire (too many alternatives)",
                rule.stage,
            )
            return
        decided = True
        sat = None
        for t in terms:
            r = find(space, t, [])
            decided = decided and r.decided
            if r.point is not None:
                sat = r.point
                break
        if sat is None and decided:
            lax = Space(self.rs, rule.stage, lax=True)
            for t in terms:
                r = find(lax, t, [])
                if r.point is not None:
                    self.report(
                        "warning",
                        "never",
                        rule,
                        rule.id,
                        f"this {what} fires only when a field the model card requires is "
                        "missing, which never happens in production (file tests may)",
                        rule.stage,
                        self.witness(lax, r.point),
                        rows=(rule.id,),
                    )
                    return
        if sat is None:
            if decided:
                self.dead.add(rule.id)
                self.report(
                    "error",
                    "never",
                    rule,
                    rule.id,
                    f"this {what} can never fire: `{rule.when.text}` is unsatisfiable",
                    rule.stage,
                    rows=(rule.id,),
                )
            else:
                self.report(
                    "warning",
                    "undecided",
                    rule,
                    rule.id,
                    f"cannot decide whether `{rule.when.text}` can be true (arithmetic over "
                    "several fields); no witness found",
                    rule.stage,
                )
            return
        if rule.when.text == "-":
            return  # a row of `-` cells is a deliberate catch-all
        r = find(space, [], terms)
        if r.point is None and r.decided:
            example = self.witness(space, sat)
            self.report(
                "warning",
                "always",
                rule,
                rule.id,
                f"condition is always true: `{rule.when.text}` holds for every input "
                "(witness: one of them)",
                rule.stage,
                example,
                rows=(rule.id,),
            )

    # -- tables ------------------------------------------------------------------------------
    def table(self, table) -> None:
        space = self.space(table.stage)
        rows = [r for r in table.rows]
        terms = [self.terms_for(r) for r in rows]
        if any(t is None for t in terms):
            self.report(
                "warning",
                "undecided",
                table.line,
                table.id,
                "cannot check this table (a row has too many alternatives)",
                table.stage,
            )
            return
        if table.hit == "unique":
            for j in range(len(rows)):
                for i in range(j):
                    self.overlap(space, table, rows[i], rows[j], terms[i], terms[j])
        if table.hit in {"first", "priority"}:
            for k, row in enumerate(rows):
                if row.id in self.dead:
                    continue
                if table.hit == "first":
                    better = list(range(k))
                    how = "an earlier row always matches first (hit policy first)"
                else:
                    better = [
                        j
                        for j in range(len(rows))
                        if j != k and (table.rank[j], -j) > (table.rank[k], -k)
                    ]
                    how = (
                        "a row with a more severe outcome always matches too (hit policy priority)"
                    )
                self.preempted(space, table, k, better, terms, how)
        if table.complete:
            every = [t for ts in terms for t in ts]  # type: ignore[union-attr]
            r = find(space, [], every)
            if r.point is not None:
                self.report(
                    "error",
                    "gap",
                    table.line,
                    table.id,
                    "the table says `complete: true` but no row matches this input",
                    table.stage,
                    self.witness(space, r.point),
                )
            elif not r.decided:
                self.report(
                    "warning",
                    "undecided",
                    table.line,
                    table.id,
                    "cannot decide whether the table is complete (arithmetic over several "
                    "fields); no gap found",
                    table.stage,
                )

    def overlap(self, space, table, a: Rule, b: Rule, ta: list[Term], tb: list[Term]) -> None:
        undecided = False
        for x in ta:
            for y in tb:
                if not may_meet(self.bounds(x), self.bounds(y)):
                    continue
                r = find(space, [*x, *y], [])
                if r.point is not None:
                    self.report(
                        "error",
                        "overlap",
                        b,
                        b.id,
                        f"overlaps {a.id} in unique table {table.id}: both rows match this "
                        f"input (at run time it would be referred, code TBL-CONFLICT)",
                        table.stage,
                        self.witness(space, r.point),
                        rows=(a.id, b.id),
                    )
                    return
                undecided = undecided or not r.decided
        if undecided:
            self.report(
                "warning",
                "undecided",
                b,
                b.id,
                f"cannot decide whether it overlaps {a.id} (arithmetic over several fields)",
                table.stage,
                rows=(a.id, b.id),
            )

    def preempted(self, space, table, k: int, better: list[int], terms, how: str) -> None:
        row = table.rows[k]
        undecided = False
        for t in terms[k]:
            mine = self.bounds(t)
            avoid = [u for j in better for u in terms[j] if may_meet(mine, self.bounds(u))]
            r = find(space, t, avoid)
            if r.point is not None:
                return  # the row wins on this input
            undecided = undecided or not r.decided
        if undecided:
            self.report(
                "warning",
                "undecided",
                row,
                row.id,
                "cannot decide whether this row can ever win (arithmetic over several fields)",
                table.stage,
            )
            return
        # show an input where the row matches and which row takes it
        example = None
        for t in terms[k]:
            r = find(space, t, [])
            if r.point is not None:
                example = r.point
                break
        winner = None
        if example is not None:
            fs = {k2: v for k2, v in example.items() if v is not MISSING}
            for j in better:
                if any(all(ex.truth(a.node, fs) is True for a in t) for t in terms[j]):
                    winner = table.rows[j].id
                    break
        self.report(
            "error",
            "preempted",
            row,
            row.id,
            f"this row can never fire: {how}" + (f"; here {winner} takes it" if winner else ""),
            table.stage,
            None if example is None else self.witness(space, example),
            rows=(row.id, *([winner] if winner else [])),
        )


def verify(ruleset: Ruleset) -> list[Finding]:
    """Every static finding for `ruleset`, errors and warnings, in file order."""
    c = _Checker(ruleset)
    for item, check in [
        *((r, c.condition) for r in ruleset.rules),
        *((t, c.table) for t in ruleset.tables),
    ]:
        try:
            check(item)
        except Exception as e:  # a checker bug must never block a valid policy
            c.report(
                "warning", "undecided", item.line, item.id,
                f"cannot decide: the static checker failed ({e!r})", item.stage,
            )  # fmt: skip
    c.out.sort(key=lambda f: (f.line, f.column, f.id))
    return c.out


def static_errors(ruleset: Ruleset) -> list[Finding]:
    """The findings that refuse a reload and fail `rules check`."""
    return [f for f in verify(ruleset) if f.severity == "error"]
