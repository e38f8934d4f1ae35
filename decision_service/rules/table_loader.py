"""Loading the `tables:` of a rule file: called by language._Loader where that key is read.

Pass 1 (`read_headers`) reads ids, hit policies, columns and rows and registers the fields the
tables derive (so later stages may read them); pass 2 (`lower`) type-checks every cell against
the fields its stage sees and builds each row as a `Rule` with id `TABLE/ROW`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import yaml

from decision_service.rules import expressions as ex
from decision_service.rules.language import OUTCOMES, Expr, Rule
from decision_service.rules.schema import BOOLEAN, NUMBER, FieldType
from decision_service.rules.table_cells import cell_text, parse_cell
from decision_service.rules.tables import (
    AGGREGATES,
    CONFLICT_CODE,
    HIT_POLICIES,
    SEVERITY,
    Column,
    Output,
    Table,
    index,
)

__all__ = ["index", "lower", "read_headers"]

if TYPE_CHECKING:
    from decision_service.rules.language import _Loader

_TABLE_KEYS = {
    "id",
    "description",
    "stage",
    "priority",
    "hit",
    "complete",
    "inputs",
    "outputs",
    "rows",
}
_ROW_KEYS = {"id", "description", "cells"}
_ID_OK = re.compile(r"[A-Za-z0-9_.-]+")


@dataclass
class _Head:
    id: str
    node: yaml.Node
    m: dict[str, yaml.Node]
    index: int
    stage: int
    priority: int
    hit: str
    aggregate: str | None
    complete: bool
    outputs: list[tuple[Output, yaml.Node]]
    inputs: list[yaml.Node]
    rows: list[tuple[str, yaml.Node, list[yaml.Node], str]]  # id, node, cells, description


def read_headers(
    ld: _Loader,
    node: yaml.Node | None,
    seen_ids: dict[str, yaml.Node],
    derived: dict[str, FieldType],
    derived_stage: dict[str, int],
    derived_set_values: dict[str, list[Any]],
) -> list[_Head]:
    """Pass 1: ids, hit policies, columns, rows; register the fields the tables derive."""
    if node is None:
        return []
    if not isinstance(node, yaml.SequenceNode):
        ld.error(node, None, "tables must be a list")
        return []
    heads = []
    from decision_service.rules.language import MAX_PRIORITY, _Abort

    for i, tnode in enumerate(node.value):
        try:
            h = _header(ld, i, tnode, seen_ids, MAX_PRIORITY)
        except _Abort:
            continue
        if h is None:
            continue
        heads.append(h)
        for out, onode in h.outputs:
            if out.kind not in {"set", "compute"}:
                continue
            col = [o for o, _ in h.outputs].index(out)
            values = []
            for _rid, _rnode, cells, _d in h.rows:
                ncell = cells[len(h.inputs) + col] if len(cells) > len(h.inputs) + col else None
                v = ld.value(ncell) if ncell is not None else "-"
                if v != "-":
                    values.append((v, ncell))
            _derive(ld, h, out, onode, values, derived, derived_stage, derived_set_values)
    return heads


def _header(ld: _Loader, i: int, tnode: yaml.Node, seen_ids, max_priority: int) -> _Head | None:
    label = f"tables[{i}]"
    m = ld.mapping(tnode, label, "a table")
    if "id" not in m:
        ld.error(tnode, label, "table has no id")
        return None
    tid = ld.value(m["id"])
    if not isinstance(tid, str) or not _ID_OK.fullmatch(tid):
        ld.error(m["id"], label, f"invalid table id {tid!r} (letters, digits, -_.)")
        return None
    if tid in seen_ids:
        prev = seen_ids[tid].start_mark.line + 1
        ld.error(m["id"], tid, f"duplicate id {tid!r} (first defined on line {prev})")
        return None
    seen_ids[tid] = m["id"]
    ld.unknown_keys(tnode, m, _TABLE_KEYS, tid, "a table")
    stage = 1
    if "stage" in m:
        stage = ld._int(m["stage"], tid, "stage", 1, 99) or 1
    priority = 0
    if "priority" in m:
        priority = ld._int(m["priority"], tid, "priority", 0, max_priority) or 0
    hit, agg = "unique", None
    if "hit" in m:
        words = str(ld.value(m["hit"])).split()
        if not words or words[0] not in HIT_POLICIES or len(words) > 2:
            ld.error(
                m["hit"],
                tid,
                f"hit must be one of {', '.join(HIT_POLICIES)} "
                f"(or `collect min|max|sum|count`), got {ld.value(m['hit'])!r}",
            )
            return None
        hit = words[0]
        if len(words) == 2:
            if hit != "collect" or words[1] not in AGGREGATES:
                ld.error(m["hit"], tid, "only `collect` takes an aggregate: min, max, sum or count")
                return None
            agg = words[1]
    complete = False
    if "complete" in m:
        v = ld.value(m["complete"])
        if not isinstance(v, bool):
            ld.error(m["complete"], tid, "complete must be true or false")
        complete = v is True
    for key in ("inputs", "outputs", "rows"):
        if key not in m:
            ld.error(tnode, tid, f"table has no `{key}`")
    if any(k not in m for k in ("inputs", "outputs", "rows")):
        return None
    inputs = m["inputs"]
    if not isinstance(inputs, yaml.SequenceNode) or not inputs.value:
        ld.error(inputs, tid, "inputs must be a non-empty list of fields or expressions")
        return None
    onode = m["outputs"]
    if not isinstance(onode, yaml.SequenceNode) or not onode.value:
        ld.error(onode, tid, "outputs must be a non-empty list of output columns")
        return None
    outputs: list[tuple[Output, yaml.Node]] = []
    for o in onode.value:
        text = ld.value(o)
        words = text.split() if isinstance(text, str) else []
        if words and words[0] in {"set", "compute"} and len(words) == 2:
            out = Output(words[0], words[1])
        elif len(words) == 1 and words[0] in {"outcome", "reason", "code", "max_amount"}:
            out = Output(words[0])
        else:
            ld.error(
                o,
                tid,
                "an output column is outcome, reason, code, max_amount, "
                f"`set FIELD` or `compute FIELD`; got {text!r}",
            )
            return None
        if any(x.label == out.label for x, _ in outputs):
            ld.error(o, tid, f"output column {out.label!r} appears twice")
            return None
        outputs.append((out, o))
    kinds = [o.kind for o, _ in outputs]
    if agg:
        if len(outputs) != 1 or kinds[0] not in {"set", "compute", "max_amount"}:
            ld.error(
                onode,
                tid,
                f"`collect {agg}` aggregates one output column: "
                "`set FIELD`, `compute FIELD` or max_amount",
            )
            return None
        if agg == "count" and kinds[0] == "max_amount":
            ld.error(onode, tid, "`collect count` counts rows into a field: use `set FIELD`")
            return None
    if hit == "priority" and "outcome" not in kinds:
        ld.error(
            onode,
            tid,
            "hit policy `priority` ranks rows by their outcome: add an "
            "outcome column (decline > refer > approve)",
        )
        return None
    if "outcome" in kinds and "reason" not in kinds:
        ld.error(onode, tid, "a table with an outcome column needs a reason column")
        return None
    rnode = m["rows"]
    if not isinstance(rnode, yaml.SequenceNode) or not rnode.value:
        ld.error(rnode, tid, "rows must be a non-empty list")
        return None
    width = len(inputs.value) + len(outputs)
    rows = []
    seen_rows: dict[str, int] = {}
    for n, row in enumerate(rnode.value, start=1):
        rid, desc = f"row-{n}", ""
        cells_node = row
        if isinstance(row, yaml.MappingNode):
            rm = ld.mapping(row, f"{tid}/row-{n}", "a row")
            ld.unknown_keys(row, rm, _ROW_KEYS, f"{tid}/row-{n}", "a row")
            if "id" in rm:
                rid = ld.value(rm["id"])
                if not isinstance(rid, str | int) or not _ID_OK.fullmatch(str(rid)):
                    ld.error(rm["id"], f"{tid}/row-{n}", f"invalid row id {rid!r}")
                    continue
                rid = str(rid)
            desc = ld.text_of(rm.get("description"), f"{tid}/{rid}", "description") or ""
            if "cells" not in rm:
                ld.error(row, f"{tid}/{rid}", "a row written as a mapping needs `cells: [...]`")
                continue
            cells_node = rm["cells"]
        if not isinstance(cells_node, yaml.SequenceNode):
            ld.error(cells_node, f"{tid}/{rid}", "a row is a list of cells (inputs, then outputs)")
            continue
        if rid in seen_rows:
            ld.error(row, f"{tid}/{rid}", f"duplicate row id {rid!r} (row {seen_rows[rid]})")
            continue
        seen_rows[rid] = n
        if len(cells_node.value) != width:
            ld.error(
                cells_node,
                f"{tid}/{rid}",
                f"row has {len(cells_node.value)} cells; the table has {len(inputs.value)} "
                f"input and {len(outputs)} output columns",
            )
            continue
        rows.append((rid, row, list(cells_node.value), desc))
    return _Head(
        id=tid,
        node=tnode,
        m=m,
        index=i,
        stage=stage,
        priority=priority,
        hit=hit,
        aggregate=agg,
        complete=complete,
        outputs=outputs,
        inputs=list(inputs.value),
        rows=rows,
    )


def _derive(ld, h: _Head, out: Output, onode, values, derived, derived_stage, set_values) -> None:
    fname = out.field or ""
    if fname in ld.schema.fields:
        ld.error(onode, h.id, f"derived field {fname!r} would shadow an input field")
        return
    if not fname.isidentifier() or fname in ex.KEYWORDS or fname.startswith("_"):
        ld.error(onode, h.id, f"invalid derived field name {fname!r}")
        return
    prev = derived_stage.get(fname)
    if prev is not None and prev != h.stage:
        ld.error(
            onode,
            h.id,
            f"{fname!r} is already derived in stage {prev}; a derived field belongs to one stage",
        )
        return
    derived_stage[fname] = h.stage
    if h.aggregate and out.kind == "set":
        for lit, vnode in values:
            if isinstance(lit, bool) or not isinstance(lit, int | float):
                ld.error(vnode, h.id, f"`collect {h.aggregate}` adds up numbers: got {lit!r}")
                return
    if out.kind == "compute" or h.aggregate:
        if fname in derived and derived[fname].kind != "number":
            ld.error(onode, h.id, f"{fname!r} is a {derived[fname].kind} elsewhere, a number here")
        derived[fname] = NUMBER
        return
    t: FieldType | None = None
    for lit, vnode in values:
        if isinstance(lit, bool):
            k = BOOLEAN
        elif isinstance(lit, int | float):
            k = NUMBER
        elif isinstance(lit, str):
            k = FieldType("category", (lit,))
        else:
            ld.error(vnode, h.id, f"set {fname}: value must be text, number or bool")
            return
        old = derived.get(fname) or t
        if old is not None and old.kind != k.kind:
            ld.error(vnode, h.id, f"set {fname}: {k.kind} here, {old.kind} elsewhere")
            return
        t = k
        set_values.setdefault(fname, []).append(lit)
    if t is None:
        t = derived.get(fname, NUMBER)
    if t.kind == "category":
        t = FieldType("category", tuple(dict.fromkeys(set_values[fname])))
    derived[fname] = t


def lower(
    ld: _Loader,
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
        ftype = ex._value_type(node, env)
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
