"""Rule files: YAML → a validated, type-checked Ruleset. Errors carry file, rule id, line, col."""

from __future__ import annotations

import datetime as dt
import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from decision_service.rules import expressions as ex
from decision_service.rules.schema import BOOLEAN, NUMBER, FactSchema, FieldType

OUTCOMES = ("approve", "refer", "decline")
_Loader_cls = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # same nodes and marks, faster
MAX_PRIORITY = 65534  # durable_rules' pri is an unsigned short; 65535 is our catch-all


class RuleFileError(Exception):
    """An error in a rule file, at a position an analyst can go to.

    `errors` holds every error found in the file (this one first).
    """

    def __init__(
        self, file: str, rule_id: str | None, line: int, column: int, message: str
    ) -> None:
        self.file = file
        self.rule_id = rule_id
        self.line = line
        self.column = column
        self.message = message
        self.errors: list[RuleFileError] = [self]
        super().__init__(str(self))

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}:{self.column}"
        rule = f" {self.rule_id}:" if self.rule_id else ""
        return f"{where}:{rule} {self.message}"


@dataclass(frozen=True, slots=True)
class Expr:
    text: str
    node: ex.Node


@dataclass(frozen=True, slots=True)
class Rule:
    id: str
    description: str
    priority: int
    stage: int
    when: Expr
    outcome: str | None
    reason: str | None
    code: str
    set: dict[str, Any]
    compute: dict[str, Expr]
    max_amount: Expr | None
    then: dict[str, Any]  # as written
    index: int  # position in the file
    line: int
    reads: tuple[str, ...]  # fields the condition reads


@dataclass(frozen=True, slots=True)
class TestCase:
    name: str
    given: dict[str, Any]
    expect: dict[str, Any]
    line: int
    __test__ = False  # not a pytest class


@dataclass(frozen=True)
class Ruleset:
    name: str
    version: str
    description: str
    owner: str
    effective_from: str | None
    effective_to: str | None
    default_outcome: str
    rules: tuple[Rule, ...]  # in firing order: stage asc, priority desc, file order
    tests: tuple[TestCase, ...]
    derived: dict[str, FieldType]  # fields set/computed by rules
    derived_stage: dict[str, int]
    schema: FactSchema
    source: str
    sha256: str
    file: str
    stages: tuple[int, ...] = field(default=())
    tables: tuple[Any, ...] = field(default=())  # tables.Table, in file order
    table_index: Any = None  # tables.TableIndex when the file has tables

    def rules_in_stage(self, stage: int) -> tuple[Rule, ...]:
        return tuple(r for r in self.rules if r.stage == stage)


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def load_ruleset(path: Path | str, schema: FactSchema) -> Ruleset:
    path = Path(path)
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise RuleFileError(str(path), None, 1, 1, f"not UTF-8 text: {e}") from None
    return load_ruleset_from_text(text, str(path), schema)


def load_ruleset_from_text(text: str, name_for_errors: str, schema: FactSchema) -> Ruleset:
    """Parse and type-check a rule file's text. Raises RuleFileError (with `.errors`)."""
    return _Loader(text, name_for_errors, schema).load()


# ---------------------------------------------------------------------------------------------

_TOP_KEYS = {
    "ruleset",
    "version",
    "description",
    "owner",
    "effective_from",
    "effective_to",
    "default",
    "rules",
    "tests",
    "tables",
}
_RULE_KEYS = {"id", "description", "priority", "stage", "when", "then"}
_THEN_KEYS = {"outcome", "reason", "code", "set", "compute", "max_amount"}
_TEST_KEYS = {"name", "given", "expect"}
_EXPECT_KEYS = {"outcome", "fired", "derived", "max_amount", "not_fired"}


class _Abort(Exception):
    pass


class _Loader:
    def __init__(self, text: str, file: str, schema: FactSchema) -> None:
        self.text = text
        self.file = file
        self.schema = schema
        self.errors: list[RuleFileError] = []
        self._constructor = yaml.SafeLoader("")

    # -- error helpers ----------------------------------------------------------------------
    def error(
        self, node: yaml.Node | None, rule_id: str | None, message: str, pos: int | None = None
    ):
        line, col = 1, 1
        if node is not None:
            line = node.start_mark.line + 1
            col = node.start_mark.column + 1
            if isinstance(node, yaml.ScalarNode) and pos is not None:
                style = node.style
                if style in {"|", ">"}:
                    # block scalar: the text starts on the next line
                    before = str(node.value)[:pos]
                    line += 1 + before.count("\n")
                    col = len(before) - (before.rfind("\n") + 1) + 1
                else:
                    col += pos + (1 if style in {"'", '"'} else 0)
        self.errors.append(RuleFileError(self.file, rule_id, line, col, message))

    def value(self, node: yaml.Node) -> Any:
        return self._constructor.construct_object(node, deep=True)

    def mapping(self, node: yaml.Node, rule_id: str | None, what: str) -> dict[str, yaml.Node]:
        if not isinstance(node, yaml.MappingNode):
            self.error(node, rule_id, f"{what} must be a mapping")
            raise _Abort
        out: dict[str, yaml.Node] = {}
        for k, v in node.value:
            key = self.value(k)
            if not isinstance(key, str):
                self.error(k, rule_id, f"{what}: keys must be text")
                continue
            if key in out:
                self.error(k, rule_id, f"{what}: duplicate key {key!r}")
            out[key] = v
        return out

    def unknown_keys(
        self, node: yaml.Node, m: dict[str, yaml.Node], allowed: set, rule_id, what
    ) -> None:
        for k, _v in node.value:
            key = self.value(k)
            if key not in allowed:
                self.error(
                    k,
                    rule_id,
                    f"unknown key {key!r} in {what} (allowed: {', '.join(sorted(allowed))})",
                )

    def text_of(self, node: yaml.Node | None, rule_id, what, required=False) -> str | None:
        if node is None:
            return None
        v = self.value(node)
        if isinstance(v, dt.date):
            return v.isoformat()
        if isinstance(v, int | float) and not isinstance(v, bool) and what == "version":
            return str(v)
        if not isinstance(v, str):
            self.error(node, rule_id, f"{what} must be text")
            return None
        return v

    # -- main ------------------------------------------------------------------------------
    def load(self) -> Ruleset:
        try:
            loader = _Loader_cls(self.text)
            try:
                root = loader.get_single_node()
            finally:
                loader.dispose()
        except yaml.MarkedYAMLError as e:
            mark = e.problem_mark or e.context_mark
            line = mark.line + 1 if mark else 1
            col = mark.column + 1 if mark else 1
            raise RuleFileError(self.file, None, line, col, f"invalid YAML: {e.problem}") from None
        except yaml.YAMLError as e:
            raise RuleFileError(self.file, None, 1, 1, f"invalid YAML: {e}") from None
        if root is None:
            raise RuleFileError(self.file, None, 1, 1, "empty rule file")
        try:
            result = self._load(root)
        except _Abort:
            result = None
        if self.errors:
            first = self.errors[0]
            first.errors = list(self.errors)
            raise first
        assert result is not None
        return result

    def _load(self, root: yaml.Node) -> Ruleset:
        top = self.mapping(root, None, "rule file")
        self.unknown_keys(root, top, _TOP_KEYS, None, "the rule file")
        for key in ("ruleset", "version", "rules"):
            if key not in top and not (key == "rules" and "tables" in top):
                self.error(root, None, f"missing required key {key!r}")
        name = self.text_of(top.get("ruleset"), None, "ruleset") or ""
        version = self.text_of(top.get("version"), None, "version") or ""
        description = self.text_of(top.get("description"), None, "description") or ""
        owner = self.text_of(top.get("owner"), None, "owner") or ""
        eff_from = self.text_of(top.get("effective_from"), None, "effective_from")
        eff_to = self.text_of(top.get("effective_to"), None, "effective_to")
        default_outcome = "refer"
        if "default" in top:
            dnode = top["default"]
            dmap = self.mapping(dnode, None, "default")
            self.unknown_keys(dnode, dmap, {"outcome"}, None, "default")
            if "outcome" in dmap:
                v = self.value(dmap["outcome"])
                if v not in OUTCOMES:
                    self.error(dmap["outcome"], None, f"default outcome must be one of {OUTCOMES}")
                else:
                    default_outcome = v

        rules_node = top.get("rules")
        raw_rules: list[tuple[int, yaml.Node]] = []
        if rules_node is not None:
            if not isinstance(rules_node, yaml.SequenceNode):
                self.error(rules_node, None, "rules must be a list")
            else:
                raw_rules = list(enumerate(rules_node.value))
            if (
                isinstance(rules_node, yaml.SequenceNode)
                and not rules_node.value
                and "tables" not in top
            ):
                self.error(rules_node, None, "a ruleset needs at least one rule")

        # pass 1: ids, stages, priorities, derived fields (so later stages can use them)
        headers = []
        seen_ids: dict[str, yaml.Node] = {}
        derived: dict[str, FieldType] = {}
        derived_stage: dict[str, int] = {}
        derived_set_values: dict[str, list[Any]] = {}
        for index, rnode in raw_rules:
            try:
                h = self._rule_header(index, rnode, seen_ids)
            except _Abort:
                continue
            headers.append(h)
            rid, m, then, stage = h["id"], h["m"], h["then"], h["stage"]
            if then is None:
                continue
            for kind in ("set", "compute"):
                if kind not in then:
                    continue
                tnode = then[kind]
                try:
                    tm = self.mapping(tnode, rid, f"then.{kind}")
                except _Abort:
                    continue
                for fname, vnode in tm.items():
                    knode = self._key_node(tnode, fname)
                    if fname in self.schema.fields:
                        self.error(
                            knode, rid, f"derived field {fname!r} would shadow an input field"
                        )
                        continue
                    if not fname.isidentifier() or fname in ex.KEYWORDS or fname.startswith("_"):
                        self.error(knode, rid, f"invalid derived field name {fname!r}")
                        continue
                    prev = derived_stage.get(fname)
                    if prev is not None and prev != stage:
                        self.error(
                            knode,
                            rid,
                            f"{fname!r} is already derived in stage {prev}; a derived field "
                            f"belongs to one stage",
                        )
                        continue
                    derived_stage[fname] = stage
                    if kind == "compute":
                        if fname in derived and derived[fname].kind != "number":
                            self.error(knode, rid, f"{fname!r} is both set and computed")
                        derived[fname] = NUMBER
                        continue
                    lit = self.value(vnode)
                    if isinstance(lit, bool):
                        t = BOOLEAN
                    elif isinstance(lit, int | float):
                        t = NUMBER
                    elif isinstance(lit, str):
                        t = FieldType("category", (lit,))
                    else:
                        self.error(vnode, rid, f"set {fname}: value must be text, number or bool")
                        continue
                    old = derived.get(fname)
                    if old is not None and old.kind != t.kind:
                        self.error(vnode, rid, f"set {fname}: {t.kind} here, {old.kind} elsewhere")
                        continue
                    derived_set_values.setdefault(fname, []).append(lit)
                    if t.kind == "category":
                        vals = tuple(dict.fromkeys(derived_set_values[fname]))
                        t = FieldType("category", vals)
                    derived[fname] = t
            del m

        # decision tables (rules/table_loader.py): pass 1 registers the fields they derive
        from decision_service.rules import table_loader as tb

        table_heads = tb.read_headers(
            self, top.get("tables"), seen_ids, derived, derived_stage, derived_set_values
        )

        # pass 2: expressions, against schema + fields derived by earlier stages
        rules: list[Rule] = []
        for h in headers:
            try:
                rule = self._rule_body(h, derived, derived_stage)
            except _Abort:
                continue
            if rule is not None:
                rules.append(rule)

        row_rules, tables = tb.lower(self, table_heads, derived, derived_stage, len(raw_rules))
        rules += row_rules  # a table's rows are rules: every engine matches them
        rules.sort(key=lambda r: (r.stage, -r.priority, r.index))
        rule_ids = {r.id for r in rules} | {t.id for t in tables}
        tests = self._tests(top.get("tests"), rule_ids, derived)
        return Ruleset(
            name=name,
            version=version,
            description=description,
            owner=owner,
            effective_from=eff_from,
            effective_to=eff_to,
            default_outcome=default_outcome,
            rules=tuple(rules),
            tests=tuple(tests),
            derived=derived,
            derived_stage=derived_stage,
            schema=self.schema,
            source=self.text,
            sha256=sha256_text(self.text),
            file=self.file,
            stages=tuple(sorted({r.stage for r in rules})),
            tables=tuple(tables),
            table_index=tb.index(tables) if tables else None,
        )

    def _key_node(self, mapping_node: yaml.Node, key: str) -> yaml.Node:
        for k, _v in mapping_node.value:
            if self.value(k) == key:
                return k
        return mapping_node

    def _int(self, node: yaml.Node, rid, what, lo, hi) -> int | None:
        v = self.value(node)
        if isinstance(v, bool) or not isinstance(v, int):
            self.error(node, rid, f"{what} must be a whole number ({lo}..{hi}), got {v!r}")
            return None
        if not lo <= v <= hi:
            self.error(node, rid, f"{what} must be between {lo} and {hi}, got {v}")
            return None
        return v

    def _rule_header(self, index: int, rnode: yaml.Node, seen_ids: dict) -> dict:
        m = self.mapping(rnode, f"rules[{index}]", "a rule")
        rid = None
        if "id" not in m:
            self.error(rnode, f"rules[{index}]", "rule has no id")
            raise _Abort
        rid = self.value(m["id"])
        if not isinstance(rid, str) or not rid or not all(c.isalnum() or c in "-_." for c in rid):
            self.error(
                m["id"], f"rules[{index}]", f"invalid rule id {rid!r} (letters, digits, -_.)"
            )
            raise _Abort
        if rid in seen_ids:
            prev = seen_ids[rid].start_mark.line + 1
            self.error(m["id"], rid, f"duplicate rule id {rid!r} (first defined on line {prev})")
            raise _Abort
        seen_ids[rid] = m["id"]
        self.unknown_keys(rnode, m, _RULE_KEYS, rid, "a rule")
        priority = 0
        if "priority" in m:
            p = self._int(m["priority"], rid, "priority", 0, MAX_PRIORITY)
            priority = p if p is not None else 0
        stage = 1
        if "stage" in m:
            s = self._int(m["stage"], rid, "stage", 1, 99)
            stage = s if s is not None else 1
        then = None
        if "then" not in m:
            self.error(rnode, rid, "rule has no `then`")
        else:
            try:
                then = self.mapping(m["then"], rid, "then")
                self.unknown_keys(m["then"], then, _THEN_KEYS, rid, "then")
            except _Abort:
                then = None
        if "when" not in m:
            self.error(rnode, rid, "rule has no `when` condition")
        return {
            "id": rid,
            "index": index,
            "node": rnode,
            "m": m,
            "then": then,
            "priority": priority,
            "stage": stage,
        }

    def _expr(self, node: yaml.Node, rid: str, kind: str, env) -> Expr | None:
        v = self.value(node)
        if isinstance(v, bool) or (isinstance(v, int | float) and kind == "condition"):
            self.error(node, rid, f"expected an expression, got {v!r}")
            return None
        if isinstance(v, int | float):
            v = repr(v)
        if not isinstance(v, str):
            self.error(node, rid, "expected an expression (text)")
            return None
        try:
            parsed = ex.parse(v)
            if kind == "condition":
                parsed = ex.check_condition(parsed, env)
            else:
                parsed = ex.check_number(parsed, env)
        except ex.ExpressionError as e:
            self.error(node, rid, e.message, e.pos)
            return None
        return Expr(v.strip(), parsed)

    def _rule_body(self, h: dict, derived, derived_stage) -> Rule | None:
        rid, m, then, stage = h["id"], h["m"], h["then"], h["stage"]
        env: dict[str, FieldType] = dict(self.schema.fields)
        same_stage = set()
        for fname, t in derived.items():
            if derived_stage[fname] < stage:
                env[fname] = t
            elif derived_stage[fname] == stage:
                same_stage.add(fname)
        ok = True

        def check(node: yaml.Node, kind: str) -> Expr | None:
            # give a precise message for same-stage / later-stage use of derived fields
            text = self.value(node)
            if isinstance(text, str):
                try:
                    for tok in ex.tokenize(text):
                        if tok.kind == "name" and tok.text in derived and tok.text not in env:
                            s = derived_stage[tok.text]
                            where = "the same stage" if s == stage else f"a later stage ({s})"
                            self.error(
                                node,
                                rid,
                                f"{tok.text!r} is derived in {where}; only fields derived by "
                                f"earlier stages can be used (put this rule in stage {s + 1})",
                                tok.pos,
                            )
                            return None
                except ex.ExpressionError:
                    pass
            return self._expr(node, rid, kind, env)

        when = check(m["when"], "condition") if "when" in m else None
        if when is None:
            ok = False
        outcome = reason = None
        code = f"RUL-{rid}"
        set_: dict[str, Any] = {}
        compute: dict[str, Expr] = {}
        cap = None
        then_written: dict[str, Any] = {}
        if then is None:
            return None
        then_written = self.value(h["m"]["then"])
        if "outcome" in then:
            outcome = self.value(then["outcome"])
            if outcome not in OUTCOMES:
                self.error(then["outcome"], rid, f"outcome must be one of {', '.join(OUTCOMES)}")
                ok = False
        if "reason" in then:
            reason = self.text_of(then["reason"], rid, "reason")
        if "code" in then:
            code = self.text_of(then["code"], rid, "code") or code
        if outcome is not None and not reason:
            self.error(m["then"], rid, "a rule with an outcome needs a `reason`")
            ok = False
        if "set" in then and isinstance(then["set"], yaml.MappingNode):
            set_ = {self.value(k): self.value(v) for k, v in then["set"].value}
        if "compute" in then and isinstance(then["compute"], yaml.MappingNode):
            for k, vnode in then["compute"].value:
                e = check(vnode, "number")
                if e is None:
                    ok = False
                else:
                    compute[self.value(k)] = e
        if "max_amount" in then:
            cap = check(then["max_amount"], "number")
            if cap is None:
                ok = False
        if not (outcome or set_ or compute or cap):
            self.error(m["then"], rid, "`then` does nothing: give an outcome, set, compute or cap")
            ok = False
        if not ok or when is None:
            return None
        desc = self.text_of(m.get("description"), rid, "description") or ""
        return Rule(
            id=rid,
            description=desc,
            priority=h["priority"],
            stage=stage,
            when=when,
            outcome=outcome,
            reason=reason,
            code=code,
            set=set_,
            compute=compute,
            max_amount=cap,
            then=then_written,
            index=h["index"],
            line=h["node"].start_mark.line + 1,
            reads=tuple(ex.fields_of(when.node)),
        )

    def _tests(self, node: yaml.Node | None, rule_ids: set[str], derived) -> list[TestCase]:
        if node is None:
            return []
        if not isinstance(node, yaml.SequenceNode):
            self.error(node, None, "tests must be a list")
            return []
        out = []
        for i, tnode in enumerate(node.value):
            label = f"tests[{i}]"
            try:
                m = self.mapping(tnode, label, "a test")
            except _Abort:
                continue
            name = self.value(m["name"]) if "name" in m else label
            label = f"test {name!r}"
            self.unknown_keys(tnode, m, _TEST_KEYS, label, "a test")
            given = self.value(m["given"]) if "given" in m else {}
            if not isinstance(given, dict):
                self.error(m.get("given", tnode), label, "given must be a mapping of facts")
                continue
            for fname in given:
                if fname not in self.schema.fields:
                    self.error(self._key_node(m["given"], fname), label, f"unknown fact {fname!r}")
            try:
                given = self.schema.normalise(given)
            except ValueError as e:
                self.error(m["given"], label, str(e))
                continue
            expect = self.value(m["expect"]) if "expect" in m else {}
            if not isinstance(expect, dict):
                self.error(m.get("expect", tnode), label, "expect must be a mapping")
                continue
            for k in expect:
                if k not in _EXPECT_KEYS:
                    self.error(
                        self._key_node(m["expect"], k),
                        label,
                        f"unknown expectation {k!r} (allowed: {', '.join(sorted(_EXPECT_KEYS))})",
                    )
            for k in ("fired", "not_fired"):
                for rid in expect.get(k) or []:
                    if rid not in rule_ids:
                        self.error(m["expect"], label, f"{k}: no rule with id {rid!r}")
            if "outcome" in expect and expect["outcome"] not in OUTCOMES:
                self.error(m["expect"], label, f"expected outcome must be one of {OUTCOMES}")
            for k in expect.get("derived") or {}:
                if k not in derived:
                    self.error(m["expect"], label, f"derived: no rule derives {k!r}")
            out.append(TestCase(str(name), given, expect, tnode.start_mark.line + 1))
        return out
