"""Pass 1 over the `tables:` of a rule file (called by language.py where that key is read):
ids, hit policies, input and output columns and rows, and the fields the tables derive (so
later stages may read them). Pass 2, the rows as rules, is table_rows.py.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import yaml

from decision_service.rules import expressions as ex
from decision_service.rules.ruleset import MAX_PRIORITY
from decision_service.rules.schema import BOOLEAN, NUMBER, FieldType
from decision_service.rules.tables import AGGREGATES, HIT_POLICIES, Output
from decision_service.rules.yaml_reader import NodeReader, _Abort

__all__ = ["read_headers"]

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
    ld: NodeReader,
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


def _header(ld: NodeReader, i: int, tnode: yaml.Node, seen_ids, max_priority: int) -> _Head | None:
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
