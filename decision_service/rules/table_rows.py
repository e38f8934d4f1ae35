"""Pass 2 over the `tables:` of a rule file: every cell type-checked against the fields its
stage sees (cells are parsed in table_cells.py), and each row built as a `Rule` with id
`TABLE/ROW`, so every engine matches rows as it matches rules. Pass 1 is table_headers.py.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from decision_service.decision import OUTCOMES
from decision_service.rules import expressions as ex
from decision_service.rules.expression_types import _value_type
from decision_service.rules.ruleset import Expr, Rule
from decision_service.rules.schema import FieldType
from decision_service.rules.table_cells import cell_text, parse_cell
from decision_service.rules.tables import CONFLICT_CODE, SEVERITY, Column, Table
from decision_service.rules.yaml_reader import NodeReader

if TYPE_CHECKING:
    from decision_service.rules.table_headers import _Head

__all__ = ["lower"]


def lower(
    ld: NodeReader,
    heads: list[_Head],
    derived: dict[str, FieldType],
    derived_stage: dict[str, int],
    first_index: int,
) -> tuple[list[Rule], list[Table]]:
    """Pass 2: type-check every cell against the stage's fields; build rows as rules."""
    rules: list[Rule] = []
    tables: list[Table] = []
    index_ = first_index
    for h in heads:
        env: dict[str, FieldType] = dict(ld.schema.fields)
        for fname, t in derived.items():
            if derived_stage[fname] < h.stage:
                env[fname] = t
        columns: list[Column] = []
        ok = True
        for cnode in h.inputs:
            col = _column(ld, h, cnode, env, derived, derived_stage)
            if col is None:
                ok = False
            else:
                columns.append(col)
        if not ok:
            continue
        reads = tuple(dict.fromkeys(f for c in columns for f in ex.fields_of(c.node)))
        rows: list[Rule] = []
        cells_all: list[tuple[ex.Node | None, ...]] = []
        for rid, rnode, cells, desc in h.rows:
            index_ += 1
            row = _row(ld, h, columns, rid, rnode, cells, desc, env, reads, index_)
            if row is not None:
                rows.append(row[0])
                cells_all.append(row[1])
        if len(rows) != len(h.rows):
            continue
        rules += rows
        conflict = Rule(
            id=h.id,
            description=f"unique table {h.id} matched several rows",
            priority=h.priority,
            stage=h.stage,
            when=Expr("more than one row matched", ex.Lit(True, 0)),
            outcome="refer",
            reason=f"Decision table {h.id} matched more than one row: manual review",
            code=CONFLICT_CODE,
            set={},
            compute={},
            max_amount=None,
            then={"outcome": "refer", "code": CONFLICT_CODE},
            index=index_,
            line=h.node.start_mark.line + 1,
            reads=(),
        )
        rank = tuple(SEVERITY[r.outcome] for r in rows)
        tables.append(
            Table(
                id=h.id,
                description=ld.text_of(h.m.get("description"), h.id, "description") or "",
                stage=h.stage,
                priority=h.priority,
                hit=h.hit,
                aggregate=h.aggregate,
                complete=h.complete,
                inputs=tuple(columns),
                outputs=tuple(o for o, _ in h.outputs),
                rows=tuple(rows),
                cells=tuple(cells_all),
                line=h.node.start_mark.line + 1,
                column=h.node.start_mark.column + 1,
                conflict=conflict,
                rank=rank,
            )
        )
    return rules, tables


def _column(ld, h: _Head, cnode, env, derived, derived_stage) -> Column | None:
    text = cell_text(ld.value(cnode))
    if text is None:
        ld.error(cnode, h.id, "an input column is a field or an expression (text)")
        return None
    try:
        node = ex.parse(text)
        for name in ex.fields_of(node):
            if name in derived and name not in env:
                s = derived_stage[name]
                where = "the same stage" if s == h.stage else f"a later stage ({s})"
                raise ex.ExpressionError(
                    f"{name!r} is derived in {where}; only fields derived by earlier stages "
                    f"can be used (put this table in stage {s + 1})",
                    text.find(name),
                )
        ftype = _value_type(node, env)
    except ex.ExpressionError as e:
        ld.error(cnode, h.id, e.message, e.pos)
        return None
    return Column(text.strip(), node, ftype)


def _row(ld, h: _Head, columns, rid, rnode, cells, desc, env, reads, index_):
    full = f"{h.id}/{rid}"
    ok = True
    tests: list[ex.Node | None] = []
    shown: list[str] = []
    for col, cnode in zip(columns, cells[: len(columns)], strict=True):
        text = cell_text(ld.value(cnode))
        if text is None:
            ld.error(cnode, full, "a cell is text: a test like `< 0.08`, or - for any")
            ok = False
            continue
        if text.strip() == "-":
            tests.append(None)
            continue
        try:
            node, words = parse_cell(text, col, env)
        except ex.ExpressionError as e:
            ld.error(cnode, full, e.message, e.pos)
            ok = False
            continue
        tests.append(node)
        shown.append(words)
    outcome = reason = None
    code = f"TBL-{h.id}-{rid}"
    set_: dict[str, Any] = {}
    compute: dict[str, Expr] = {}
    cap: Expr | None = None
    then: dict[str, Any] = {}
    for (out, _o), cnode in zip(h.outputs, cells[len(columns) :], strict=True):
        v = ld.value(cnode)
        if v == "-":
            continue
        if out.kind == "outcome":
            if v not in OUTCOMES:
                ld.error(cnode, full, f"outcome must be one of {', '.join(OUTCOMES)} or -")
                ok = False
            outcome = v
            then["outcome"] = v
        elif out.kind in {"reason", "code"}:
            t = ld.text_of(cnode, full, out.kind)
            if t is None:
                ok = False
                continue
            if out.kind == "reason":
                reason = t
            else:
                code = t
            then[out.kind] = t
        elif out.kind == "set":
            if h.aggregate == "count":
                continue
            set_[out.field or ""] = v
            then.setdefault("set", {})[out.field] = v
        else:
            e = _number(ld, cnode, full, env)
            if e is None:
                ok = False
                continue
            if out.kind == "compute":
                compute[out.field or ""] = e
                then.setdefault("compute", {})[out.field] = e.text
            else:
                cap = e
                then["max_amount"] = e.text
    if h.aggregate == "count":
        for cnode in cells[len(columns) :]:
            if ld.value(cnode) != "-":
                ld.error(cnode, full, "`collect count` counts matched rows: write - here")
                ok = False
    if outcome is not None and not reason:
        ld.error(rnode, full, "a row with an outcome needs a reason")
        ok = False
    if not ok:
        return None
    conds = [t for t in tests if t is not None]
    if not conds:
        anchor = ex.Field(reads[0] if reads else "pd", 0)
        node: ex.Node = ex.Or((ex.Missing(anchor, False, 0), ex.Missing(anchor, True, 0)), 0)
        when_text = "-"
    else:
        node = conds[0] if len(conds) == 1 else ex.And(tuple(conds), 0)
        when_text = " and ".join(shown)
    rule = Rule(
        id=full,
        description=desc or (ld.text_of(h.m.get("description"), h.id, "description") or ""),
        priority=h.priority,
        stage=h.stage,
        when=Expr(when_text, node),
        outcome=outcome,
        reason=reason,
        code=code,
        set=set_,
        compute=compute,
        max_amount=cap,
        then=then,
        index=index_,
        line=rnode.start_mark.line + 1,
        reads=reads,
    )
    return rule, tuple(tests)


def _number(ld, cnode, full, env) -> Expr | None:
    v = ld.value(cnode)
    text = cell_text(v)
    if text is None:
        ld.error(cnode, full, "expected a number expression")
        return None
    try:
        node = ex.check_number(ex.parse(text), env)
    except ex.ExpressionError as e:
        ld.error(cnode, full, e.message, e.pos)
        return None
    return Expr(text.strip(), node)
