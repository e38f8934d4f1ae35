"""Decision tables: parsed from a rule file's `tables:` list and lowered to rules.

A table's row becomes an ordinary `Rule` (id `TABLE/ROW`) whose condition is the conjunction of
its cells over the input columns, built from the same expression tree as `when:`. Every engine
(compiled, durable_rules, and any vectorised evaluator) therefore only *matches* rows; the hit
policy is one pure step applied afterwards to the matched rows, here (`select`,
`apply_hit_policies`), so its semantics live in one place:

- `unique`: at most one row may match. Two or more is a policy bug: the static check reports any
  overlap with a witness; at run time the service never picks one silently — the matched rows
  appear in the trace with no effect, the table's own entry refers the application with reason
  code TBL-CONFLICT, the event is counted (`conflict_count`) and logged.
- `first`: the first matching row in row order fires; later matches are ignored.
- `priority`: the matching row with the most severe outcome fires (decline > refer > approve >
  none); ties go to the earlier row.
- `collect`: every matching row fires, like independent rules.
- `collect min|max|sum|count`: every matching row is in the trace; the one output column is
  aggregated over them and the table's own entry sets the result (min/max: missing when no row
  matched or no value is known; sum over known values, 0 when none; count: number of rows).
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import yaml

from decision_service.rules import expressions as ex
from decision_service.rules.language import OUTCOMES, Expr, Rule
from decision_service.rules.schema import BOOLEAN, NUMBER, FieldType

if TYPE_CHECKING:
    from decision_service.rules.language import _Loader

HIT_POLICIES = ("unique", "first", "priority", "collect")
AGGREGATES = ("min", "max", "sum", "count")
CONFLICT_CODE = "TBL-CONFLICT"
_SEVERITY = {None: 0, "approve": 1, "refer": 2, "decline": 3}
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
_OUTPUT_KINDS = ("outcome", "reason", "code", "max_amount", "set", "compute")
_ID_OK = re.compile(r"[A-Za-z0-9_.-]+")


@dataclass(frozen=True, slots=True)
class Column:
    text: str
    node: ex.Node
    type: FieldType


@dataclass(frozen=True, slots=True)
class Output:
    kind: str  # outcome | reason | code | max_amount | set | compute
    field: str | None = None  # set / compute target

    @property
    def label(self) -> str:
        return self.kind if self.field is None else f"{self.kind} {self.field}"


@dataclass(frozen=True)
class Table:
    id: str
    description: str
    stage: int
    priority: int
    hit: str  # unique | first | priority | collect
    aggregate: str | None  # min | max | sum | count (collect only)
    complete: bool
    inputs: tuple[Column, ...]
    outputs: tuple[Output, ...]
    rows: tuple[Rule, ...]  # lowered rows, in row order
    cells: tuple[tuple[ex.Node | None, ...], ...]  # per row, per input: the cell test (None: -)
    line: int
    column: int
    conflict: Rule  # the table's own trace entry for a unique conflict
    rank: tuple[int, ...]  # per row: outcome severity (priority policy)

    @property
    def target(self) -> Output | None:
        """The aggregated output column (collect with an aggregate)."""
        return self.outputs[0] if self.aggregate else None

    def select(self, matched: list[int]) -> tuple[list[int], bool]:
        """Which of the matched row positions (ascending) fire, and whether it is a conflict.

        Pure over row positions so that every evaluator (row at a time or columnar) shares it.
        """
        if len(matched) <= 1 or self.hit == "collect":
            return matched, False
        if self.hit == "unique":
            return matched, True
        if self.hit == "first":
            return matched[:1], False
        rank = self.rank  # priority: most severe outcome, earliest row on ties
        best = max(matched, key=lambda p: (rank[p], -p))
        return [best], False


@dataclass(frozen=True)
class TableIndex:
    """What the evaluation loop needs: row id → (table, position); aggregate tables by stage."""

    rows: dict[str, tuple[Table, int]]
    aggregates: dict[int, tuple[Table, ...]]  # stage → tables with an aggregate


def index(tables: list[Table]) -> TableIndex:
    rows = {r.id: (t, i) for t in tables for i, r in enumerate(t.rows)}
    aggregates: dict[int, list[Table]] = {}
    for t in tables:
        if t.aggregate:
            aggregates.setdefault(t.stage, []).append(t)
    return TableIndex(rows, {s: tuple(ts) for s, ts in aggregates.items()})


# ---------------------------------------------------------------------------------------------
# The hit-policy step (shared by every engine through evaluation.run_stages)

_conflicts: dict[str, int] = {}
_conflicts_lock = threading.Lock()


def conflict_count(table_id: str | None = None) -> int:
    """Run-time conflicts of unique tables seen by this process (for metrics and tests)."""
    with _conflicts_lock:
        if table_id is not None:
            return _conflicts.get(table_id, 0)
        return sum(_conflicts.values())


def _record_conflict(table: Table, rows: list[Rule]) -> None:
    with _conflicts_lock:
        _conflicts[table.id] = _conflicts.get(table.id, 0) + 1
    import structlog  # only on this rare path

    structlog.get_logger("decision_service.rules").error(
        "unique decision table matched several rows; application referred",
        table=table.id,
        rows=[r.id for r in rows],
        code=CONFLICT_CODE,
    )


class Selection:
    """The outcome of the hit-policy step for one stage."""

    __slots__ = ("aggregated", "hits", "passive")

    def __init__(self) -> None:
        self.hits: list[Rule] = []  # rules and rows that fire, in firing order
        self.passive: dict[str, str] = {}  # row id → why it is traced without effect
        self.aggregated: dict[str, list[Rule]] = {}  # aggregate table id → its matched rows


_NOTHING: dict = {}


def _unchanged(hits: list[Rule]) -> Selection:
    sel = Selection.__new__(Selection)
    sel.hits, sel.passive, sel.aggregated = hits, _NOTHING, _NOTHING
    return sel


def apply_hit_policies(idx: TableIndex, stage: int, hits: list[Rule]) -> Selection:
    """Apply each table's hit policy to the rows an engine matched (hits in firing order)."""
    rows = idx.rows
    if stage not in idx.aggregates:
        # fast path (every decision of the shipped policy): no table matched twice
        seen: set[str] = set()
        for r in hits:
            tp = rows.get(r.id)
            if tp is not None:
                if tp[0].id in seen:
                    break
                seen.add(tp[0].id)
        else:
            return _unchanged(hits)
    sel = Selection()
    groups: dict[str, list[int]] = {}
    tables: dict[str, Table] = {}
    for r in hits:
        tp = rows.get(r.id)
        if tp is not None:
            groups.setdefault(tp[0].id, []).append(tp[1])
            tables[tp[0].id] = tp[0]
    if not groups and stage not in idx.aggregates:
        sel.hits = hits
        return sel
    keep: set[str] = set()
    conflicts: dict[str, Table] = {}
    for tid, positions in groups.items():
        t = tables[tid]
        positions.sort()
        chosen, conflict = t.select(positions)
        for p in chosen:
            keep.add(t.rows[p].id)
        if conflict:
            conflicts[tid] = t
            for p in chosen:
                sel.passive[t.rows[p].id] = "conflict"
            _record_conflict(t, [t.rows[p] for p in chosen])
        elif t.aggregate:
            sel.aggregated[tid] = [t.rows[p] for p in chosen]
            for p in chosen:
                sel.passive[t.rows[p].id] = "aggregated"
    emitted: set[str] = set()
    for r in hits:
        tp = rows.get(r.id)
        if tp is None:
            sel.hits.append(r)
            continue
        if r.id not in keep:
            continue
        tid = tp[0].id
        if tid in conflicts and tid not in emitted:
            emitted.add(tid)
            sel.hits.append(conflicts[tid].conflict)
        sel.hits.append(r)
    for t in idx.aggregates.get(stage, ()):
        sel.aggregated.setdefault(t.id, [])
    return sel


NumberEval = Callable[[Rule, str, dict[str, Any]], Any]


def row_value(table: Table, row: Rule, env: dict[str, Any], number: NumberEval) -> Any:
    """The value of an aggregate table's output column in one row (None: unknown)."""
    out = table.outputs[0]
    if out.kind == "set":
        return row.set.get(out.field or "")
    if out.kind == "compute":
        return number(row, out.field or "", env) if out.field in row.compute else None
    return number(row, "max_amount", env) if row.max_amount is not None else None


def aggregate(table: Table, values: list[Any]) -> Any:
    """collect min|max|sum|count over the matched rows' values (unknown values are skipped)."""
    if table.aggregate == "count":
        return len(values)
    known = [v for v in values if v is not None]
    if table.aggregate == "sum":
        return sum(known)
    if not known:
        return None
    return min(known) if table.aggregate == "min" else max(known)


# ---------------------------------------------------------------------------------------------
# Cells

_INTERVAL = re.compile(
    r"^\s*(?P<lo_b>[\[\(\]])\s*(?P<lo>-?\s*[0-9.eE+-]+)\s*\.\.\s*(?P<hi>-?\s*[0-9.eE+-]+)\s*"
    r"(?P<hi_b>[\]\)\[])\s*$"
)
_OPS = ("<=", ">=", "==", "!=", "<", ">")
_NUMBER = re.compile(r"^-?(\d+(\.\d*)?([eE][+-]?\d+)?|\.\d+([eE][+-]?\d+)?)$")
_PLACEHOLDER = "_"


def cell_text(v: Any) -> str | None:
    """A YAML cell value as cell text (YAML turns `true`, `36` and `0.5` into values)."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return repr(v)
    if isinstance(v, str):
        return v
    return None


def _substitute(node: ex.Node, col: ex.Node) -> ex.Node:
    """Replace the placeholder field by the column's expression."""
    if isinstance(node, ex.Field):
        return col if node.name == _PLACEHOLDER else node
    if isinstance(node, ex.Cmp):
        return ex.Cmp(node.op, _substitute(node.left, col), _substitute(node.right, col), node.pos)
    if isinstance(node, ex.In):
        return ex.In(_substitute(node.operand, col), node.values, node.negated, node.pos)
    if isinstance(node, ex.Missing):
        return ex.Missing(_substitute(node.operand, col), node.negated, node.pos)
    if isinstance(node, ex.Not):
        return ex.Not(_substitute(node.operand, col), node.pos)
    if isinstance(node, ex.And | ex.Or):
        return type(node)(tuple(_substitute(i, col) for i in node.items), node.pos)
    if isinstance(node, ex.Arith):
        return ex.Arith(
            node.op, _substitute(node.left, col), _substitute(node.right, col), node.pos
        )
    if isinstance(node, ex.Neg):
        return ex.Neg(_substitute(node.operand, col), node.pos)
    if isinstance(node, ex.Call):
        return ex.Call(node.fn, tuple(_substitute(a, col) for a in node.args), node.pos)
    return node


def _split_items(text: str) -> list[tuple[str, int]]:
    """Comma-separated items with their offsets (commas inside quotes do not split)."""
    items, start, quote = [], 0, None
    for i, c in enumerate(text):
        if quote:
            if c == quote:
                quote = None
        elif c in "\"'":
            quote = c
        elif c == ",":
            items.append((text[start:i], start))
            start = i + 1
    items.append((text[start:], start))
    out = []
    for raw, off in items:
        stripped = raw.strip()
        out.append((stripped, off + (len(raw) - len(raw.lstrip()))))
    return out


def _literal(item: str, pos: int, col: Column) -> ex.Lit:
    if not item:
        raise ex.ExpressionError("empty value in a list of values", pos)
    if item[0] in "\"'":
        if len(item) < 2 or item[-1] != item[0]:
            raise ex.ExpressionError("unterminated text", pos)
        return ex.Lit(item[1:-1], pos)
    if _NUMBER.match(item):
        return ex.Lit(ex._number(item.lstrip("-")) * (-1 if item.startswith("-") else 1), pos)
    if item in {"true", "false"}:
        return ex.Lit(item == "true", pos)
    if col.type.kind == "category" and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_.-]*", item):
        return ex.Lit(item, pos)  # a bare category code
    raise ex.ExpressionError(f"cannot read {item!r} as a value", pos)


def parse_cell(text: str, col: Column, env: Mapping[str, FieldType]) -> tuple[ex.Node, str]:
    """A cell test as a condition on the column, and its text for the trace.

    Raises ExpressionError with a 0-based offset into `text`.
    """
    stripped = text.strip()
    lead = len(text) - len(text.lstrip())
    m = re.fullmatch(r"not\s*\((.*)\)\s*", stripped, re.S)
    if m:
        inner_off = lead + m.start(1)
        try:
            node, shown = parse_cell(m.group(1), col, env)
        except ex.ExpressionError as e:
            raise ex.ExpressionError(e.message, e.pos + inner_off) from None
        return ex.Not(node, lead), f"not ({shown})"
    if stripped in {"is missing", "is not missing"}:
        if not isinstance(col.node, ex.Field):
            raise ex.ExpressionError("`is missing` applies to a column that is a field", lead)
        node = ex.Missing(col.node, stripped == "is not missing", lead)
        return node, f"{col.text} {stripped}"
    for op in _OPS:
        if stripped.startswith(op):
            # parse "_ <op> <rest>" so that offsets map back to the cell by a fixed shift
            shift = len(_PLACEHOLDER) + 1 - lead
            try:
                parsed = ex.parse(f"{_PLACEHOLDER} {text.lstrip()}")
            except ex.ExpressionError as e:
                raise ex.ExpressionError(e.message, max(e.pos - shift, 0)) from None
            if not isinstance(parsed, ex.Cmp) or not (
                isinstance(parsed.left, ex.Field) and parsed.left.name == _PLACEHOLDER
            ):
                raise ex.ExpressionError("a cell compares the column with one value", lead)
            checked = _check(parsed, col, env, shift)
            return _substitute(checked, col.node), f"{col.text} {stripped}"
    m = _INTERVAL.match(text)
    if m:
        if col.type.kind != "number":
            raise ex.ExpressionError(f"an interval needs a number column, not {col.type.kind}", 0)
        try:
            lo = float(m.group("lo").replace(" ", ""))
            hi = float(m.group("hi").replace(" ", ""))
        except ValueError:
            raise ex.ExpressionError("interval bounds must be numbers", m.start("lo")) from None
        lo_v = int(lo) if lo.is_integer() and "." not in m.group("lo") else lo
        hi_v = int(hi) if hi.is_integer() and "." not in m.group("hi") else hi
        if lo > hi or (lo == hi and not (m.group("lo_b") == "[" and m.group("hi_b") == "]")):
            raise ex.ExpressionError(f"empty interval {stripped}", m.start("lo"))
        lo_op = ">=" if m.group("lo_b") == "[" else ">"
        hi_op = "<=" if m.group("hi_b") == "]" else "<"
        node = ex.And(
            (
                ex.Cmp(lo_op, col.node, ex.Lit(lo_v, m.start("lo")), m.start("lo")),
                ex.Cmp(hi_op, col.node, ex.Lit(hi_v, m.start("hi")), m.start("hi")),
            ),
            lead,
        )
        return node, f"{col.text} in {stripped}"
    if stripped.startswith(("[", "(", "]")):
        raise ex.ExpressionError(
            "write an interval as [lo..hi], [lo..hi), (lo..hi] or (lo..hi)", lead
        )
    items = _split_items(text)
    lits = tuple(_literal(item, off, col) for item, off in items)
    if len(lits) == 1:
        node: ex.Node = ex.Cmp("==", ex.Field(_PLACEHOLDER, 0), lits[0], lits[0].pos)
    else:
        node = ex.In(ex.Field(_PLACEHOLDER, 0), lits, False, lits[0].pos)
    checked = _check(node, col, env, 0)
    final = _substitute(checked, col.node)
    return final, ex.unparse(final)


def _check(node: ex.Node, col: Column, env: Mapping[str, FieldType], shift: int) -> ex.Node:
    local = {**env, _PLACEHOLDER: col.type}
    try:
        return ex.check_condition(node, local)
    except ex.ExpressionError as e:
        raise ex.ExpressionError(e.message, max(e.pos - shift, 0)) from None


# ---------------------------------------------------------------------------------------------
# Loading (called by language._Loader at the point where a file's `tables:` key is read)


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
        rank = tuple(_SEVERITY[r.outcome] for r in rows)
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
